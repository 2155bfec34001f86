"""May the caller do what it asks: request attributes, authorizers and the 403 Kubernetes gives.

Authorization is a chain of `Authorizer`s, as in Kubernetes' union
authorizer: the first to allow or deny decides, "no opinion" passes on, and
nobody allowing means 403. The server's chain lets `system:masters` do
anything and anyone read the public endpoints, then asks the Node
authorizer (`node_authz.py`) and RBAC (`rbac.py`; its bootstrap policy lets bootstrap
identities, the join token's `system:bootstrap:<id>`, ask for certificates).
Without RBAC (`default_authorizer()` alone) bootstrap identities may only
ask for certificates. A request is parsed into `RequestAttributes` as
k8s.io/apiserver's RequestInfoFactory does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import operator
from collections.abc import Iterable, Mapping
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from skiff.api import jointoken
from skiff.api.errors import Forbidden
from skiff.apiserver.auth import (
    ANONYMOUS,
    AUTHENTICATED_GROUP,
    MASTERS_GROUP,
    PUBLIC_PATHS,
    REQUEST_ATTRIBUTES,
    USER,
    RequestAttributes,
    UserInfo,
)
from skiff.apiserver.content import status_response

# -- authorization -----------------------------------------------------------------------------


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    NO_OPINION = "no-opinion"


class Authorizer(Protocol):
    """Decides one request; returns the decision and a reason (may be empty) shown on denial."""

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]: ...


class PrivilegedGroupAuthorizer:
    """Allows members of the given groups anything (Kubernetes' system:masters short-cut)."""

    def __init__(self, groups: Iterable[str] = (MASTERS_GROUP,)) -> None:
        self.groups = frozenset(groups)

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
        if self.groups.intersection(attributes.user.groups):
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""


class PublicInfoAuthorizer:
    """Allows anyone, anonymous included, to read the health and version endpoints."""

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
        if not attributes.resource_request and attributes.verb in ("get", "head") and attributes.path in PUBLIC_PATHS:
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""


class BasicUserAuthorizer:
    """What every authenticated user may do (Kubernetes' system:basic-user and system:discovery roles).

    Reviews of oneself (SelfSubjectReview, SelfSubjectAccessReview, SelfSubjectRulesReview), and
    reading discovery and OpenAPI: enough for `kubectl auth whoami` with any valid credentials,
    service account tokens included.
    """

    SELF_REVIEWS = frozenset(
        {
            ("authentication.k8s.io", "selfsubjectreviews"),
            ("authorization.k8s.io", "selfsubjectaccessreviews"),
            ("authorization.k8s.io", "selfsubjectrulesreviews"),
        }
    )
    DISCOVERY = ("/api", "/apis", "/openapi")

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
        if AUTHENTICATED_GROUP not in attributes.user.groups:
            return Decision.NO_OPINION, ""
        if attributes.resource_request:
            if attributes.verb == "create" and (attributes.api_group, attributes.resource) in self.SELF_REVIEWS:
                return Decision.ALLOW, ""
        elif attributes.verb in ("get", "head"):
            path = attributes.path.rstrip("/")
            if path in PUBLIC_PATHS or any(path == p or path.startswith(p + "/") for p in self.DISCOVERY):
                return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""


class UnionAuthorizer:
    """Asks each authorizer in turn; the first allow or deny decides, else no opinion."""

    def __init__(self, *authorizers: Authorizer) -> None:
        self.authorizers = authorizers

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
        reasons: list[str] = []
        for authorizer in self.authorizers:
            decision, reason = await authorizer.authorize(attributes)
            if decision is not Decision.NO_OPINION:
                return decision, reason
            if reason:
                reasons.append(reason)
        return Decision.NO_OPINION, "\n".join(reasons)


class BootstrapAuthorizer:
    """What a bootstrap identity may do: ask for its node certificate, nothing else.

    Members of `system:bootstrappers` may create, get, list and watch certificatesigningrequests
    (Kubernetes' system:node-bootstrapper role); anything else they ask is denied outright.
    """

    VERBS = frozenset({"create", "get", "list", "watch"})

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
        if jointoken.BOOTSTRAPPERS_GROUP not in attributes.user.groups:
            return Decision.NO_OPINION, ""
        if (
            attributes.resource_request
            and attributes.api_group == "certificates.k8s.io"
            and attributes.resource == "certificatesigningrequests"
            and not attributes.subresource
            and attributes.verb in self.VERBS
        ):
            return Decision.ALLOW, ""
        return Decision.DENY, "a bootstrap identity may only create, get, list and watch certificatesigningrequests"


def default_authorizer(rbac: Authorizer | None = None, *, node: Authorizer | None = None) -> Authorizer:
    """system:masters may do anything; anyone may read the public endpoints; then the Node authorizer
    (`node_authz.NodeAuthorizer`: what a kubelet may touch), then `rbac` (the bootstrap policy's roles give
    everyone discovery and self-reviews, bootstrap identities certificate requests, nodes what the
    service proxy reads) -- kube-apiserver's `--authorization-mode=Node,RBAC`. Without RBAC: bootstrap
    identities may only request certificates, any authenticated user may review itself and read
    discovery; nothing else.
    """
    nodes = (node,) if node is not None else ()
    if rbac is not None:
        return UnionAuthorizer(PrivilegedGroupAuthorizer((MASTERS_GROUP,)), PublicInfoAuthorizer(), *nodes, rbac)
    return UnionAuthorizer(
        PrivilegedGroupAuthorizer((MASTERS_GROUP,)),
        PublicInfoAuthorizer(),
        *nodes,
        BasicUserAuthorizer(),
        BootstrapAuthorizer(),  # last: what the others allow everyone, bootstrappers may do too
    )


def authorization_middleware(authorizer: Authorizer | None = None) -> Middleware:
    """Middleware that answers 403 unless `authorizer` allows the request. Runs after authentication."""
    chosen = authorizer if authorizer is not None else default_authorizer()

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        user = request.get(USER, ANONYMOUS)
        attributes = request_attributes(request.method, request.path, request.query, user)
        request[REQUEST_ATTRIBUTES] = attributes
        decision, reason = await chosen.authorize(attributes)
        if decision is not Decision.ALLOW:
            return status_response(forbidden(attributes, reason))
        return await handler(request)

    return authorize


def forbidden(attributes: RequestAttributes, reason: str = "") -> Forbidden:
    """The 403 Kubernetes answers, e.g. `pods is forbidden: User "x" cannot list resource "pods" ...`."""
    user = attributes.user.name
    if not attributes.resource_request:
        detail = f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    else:
        resource = attributes.resource
        if attributes.subresource:
            resource += "/" + attributes.subresource
        where = f'in the namespace "{attributes.namespace}"' if attributes.namespace else "at the cluster scope"
        detail = (
            f'User "{user}" cannot {attributes.verb} resource "{resource}" '
            f'in API group "{attributes.api_group}" {where}'
        )
    if reason:
        detail += ": " + reason
    qualified = attributes.resource
    if qualified and attributes.api_group:
        qualified += "." + attributes.api_group
    if not qualified:
        message = f"forbidden: {detail}"
    elif attributes.name:
        message = f'{qualified} "{attributes.name}" is forbidden: {detail}'
    else:
        message = f"{qualified} is forbidden: {detail}"
    return Forbidden(
        message,
        name=attributes.name or None,
        group=attributes.api_group or None,
        kind=attributes.resource or None,
    )


# -- request attributes ------------------------------------------------------------------------

_VERBS_BY_METHOD = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})


def request_attributes(method: str, path: str, query: Mapping[str, str], user: UserInfo) -> RequestAttributes:
    """Parse a request as Kubernetes' RequestInfoFactory does (best effort).

    Remembered for the requests that repeat (a controller's creates in one namespace, its list and watch
    paths): the attributes are immutable, and parsing them cost ~10 us of every request.
    """
    watch, selector = query.get("watch", ""), query.get("fieldSelector", "")
    key = (method, path, watch, selector, _user_fields(user))  # tuples of str: hashed and compared in C
    try:
        found = _remembered.get(key)
    except TypeError:  # a user whose groups are not a tuple: not hashable, parsed every time
        return _attributes(method, path, watch, selector, user)
    if found is None:
        if len(_remembered) >= REMEMBERED:
            _remembered.clear()
        found = _remembered[key] = _attributes(method, path, watch, selector, user)
    return found


REMEMBERED = 4096  # distinct requests (a binding's path names its pod: those come and go)
_user_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(UserInfo)))  # every field of the user
_remembered: dict[tuple[object, ...], RequestAttributes] = {}


def _attributes(method: str, path: str, watch: str, selector: str, user: UserInfo) -> RequestAttributes:
    """`request_attributes` of the two query parameters that matter (`watch`, `fieldSelector`).

    `/api/v1/...` and `/apis/<group>/<version>/...` paths are resource
    requests (`namespaces/<ns>/<resource>/<name>/<subresource>`); anything
    else is a non-resource request whose verb is the lower-cased method.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return _non_resource(method, path, user)
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return _non_resource(method, path, user)
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]

    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            return _non_resource(method, path, user)
        verb, rest = rest[0], rest[1:]
    else:
        verb = _VERBS_BY_METHOD.get(method.upper(), "")

    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]

    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 and verb != "proxy" else ""

    field_selector = ""
    if not name and verb in ("get", "watch"):
        if verb == "get":
            verb = "watch" if watch in _TRUE else "list"
        field_selector = selector
        selected = _name_from_field_selector(field_selector)
        if selected:
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
        field_selector = selector
    return RequestAttributes(
        user=user,
        verb=verb,
        path=path,
        resource_request=True,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        field_selector=field_selector,
    )


def _non_resource(method: str, path: str, user: UserInfo) -> RequestAttributes:
    return RequestAttributes(user=user, verb=method.lower(), path=path, resource_request=False)


def _name_from_field_selector(selector: str) -> str:
    """`metadata.name=x` (or `==`) as the only term of a field selector names one object."""
    terms = [t for t in selector.split(",") if t.strip()]
    if len(terms) != 1:
        return ""
    term = terms[0]
    with contextlib.suppress(ValueError):
        field, value = term.split("==", 1) if "==" in term else term.split("=", 1)
        value = value.strip()
        if field.strip() == "metadata.name" and value not in ("", ".", "..") and "/" not in value:
            return value
    return ""

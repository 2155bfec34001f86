"""Who is calling, and may they: the first two links of the handler chain.

Authentication follows kube-apiserver's order: a TLS client certificate
signed by the cluster CA (user = CN, groups = O; the TLS handshake already
verified it), then a bearer token from the static token file
(`--token-auth-file` format, reread when it changes). A request with no
credentials is answered 401, except the public health and version
endpoints, which anonymous callers may read (Kubernetes'
system:public-info-viewer). Every authenticated user also gets the
`system:authenticated` group.

Authorization is a chain of `Authorizer`s, as in Kubernetes' union
authorizer: the first to allow or deny decides, "no opinion" passes on, and
nobody allowing means 403. The server's chain lets `system:masters` and
nodes (`system:nodes`, for now) do anything and anyone read the public
endpoints, then asks RBAC (`rbac.py`; its bootstrap policy lets bootstrap
identities, the join token's `system:bootstrap:<id>`, ask for certificates).
Without RBAC (`default_authorizer()` alone) bootstrap identities may only
ask for certificates. `Impersonate-User`/`-Group`/`-Uid` headers switch the
user once the caller may `impersonate` them.
The user is stored on the request under `USER`, the parsed request under
`REQUEST_ATTRIBUTES`, for the handlers after these middlewares.

The server runs both as one middleware (`auth_middleware`, which can also
hand long-running requests to a tracker), one layer per request instead of
three. The user a client certificate names is worked out once per
connection: the certificate cannot change on a keep-alive connection (the
server refuses TLS renegotiation), so it is remembered per transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import enum
import logging
import os
import weakref
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from skiff.api import jointoken
from skiff.api.errors import Forbidden, StatusError, Unauthorized
from skiff.apiserver.content import status_response

log = logging.getLogger(__name__)

AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
MASTERS_GROUP = "system:masters"
NODES_GROUP = "system:nodes"

# what an anonymous caller may read (Kubernetes' system:public-info-viewer role)
# and /cacerts: the CA a joining agent checks against its join token before trusting the server (as k3s)
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/", "/cacerts"})


@dataclass(frozen=True, slots=True)
class UserInfo:
    """An authenticated (or anonymous) caller, as Kubernetes' user.Info."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""


ANONYMOUS = UserInfo("system:anonymous", (UNAUTHENTICATED_GROUP,))


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What a request asks to do, parsed from its method and path (Kubernetes' RequestInfo)."""

    user: UserInfo
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


USER = web.RequestKey("user", UserInfo)
REQUEST_ATTRIBUTES = web.RequestKey("request_attributes", RequestAttributes)


# -- authentication ----------------------------------------------------------------------------


class TokenAuthenticator(Protocol):
    """Maps a bearer token to a user; None when the token is unknown."""

    async def authenticate_token(self, token: str) -> UserInfo | None: ...


class TokenFile:
    """Kubernetes' static token file: `token,user,uid,"group1,group2"` per line.

    The file is re-read when its size, mtime or inode change; that check is
    one `stat` at most every `check_interval` seconds, done in a thread.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._tokens: dict[str, UserInfo] = {}
        self._signature: tuple[int, int, int] | None = None
        self._last_check: float | None = None

    async def authenticate_token(self, token: str) -> UserInfo | None:
        now = asyncio.get_running_loop().time()
        if self._last_check is None or now - self._last_check >= self.check_interval:
            self._last_check = now  # set first: concurrent callers use the current table meanwhile
            await asyncio.to_thread(self.reload_if_changed)
        return self._tokens.get(token)

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since the last read (blocking). True if it was re-read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is not None:
                log.warning("token file %s is gone; no token is valid now", self.path)
            self._tokens, self._signature = {}, None
            return False
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return False
        try:
            text = self.path.read_text()
        except OSError as e:
            log.error("cannot read token file %s: %s", self.path, e)
            return False
        self._tokens = parse_token_file(text, source=str(self.path))
        self._signature = signature
        return True


def parse_token_file(text: str, *, source: str = "token file") -> dict[str, UserInfo]:
    """Parse the `--token-auth-file` CSV format; malformed lines are logged and skipped."""
    tokens: dict[str, UserInfo] = {}
    for lineno, record in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), start=1):
        if not record or not "".join(record).strip() or record[0].lstrip().startswith("#"):
            continue
        if len(record) < 3 or not record[0].strip() or not record[1].strip():
            log.warning("%s line %d: want token,user,uid[,groups]; line skipped", source, lineno)
            continue
        token, name, uid = (field.strip() for field in record[:3])
        groups = tuple(g.strip() for g in record[3].split(",") if g.strip()) if len(record) > 3 else ()
        if token in tokens:
            log.warning("%s line %d: duplicate token; the later line wins", source, lineno)
        tokens[token] = UserInfo(name, groups, uid)
    return tokens


class JoinTokenAuthenticator:
    """The join token's `<id>:<secret>` as the bootstrap identity of TLS bootstrapping.

    `system:bootstrap:<id>` in `system:bootstrappers`: what a joining agent is until its node
    certificate is signed (see `skiff.api.jointoken`). The token file is re-read when it changes.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._token: jointoken.JoinToken | None = None
        self._signature: tuple[int, int, int] | None = None
        self._last_check: float | None = None

    async def authenticate_token(self, token: str) -> UserInfo | None:
        if jointoken.parse_bearer(token) is None:
            return None
        now = asyncio.get_running_loop().time()
        if self._last_check is None or now - self._last_check >= self.check_interval:
            self._last_check = now
            await asyncio.to_thread(self._reload_if_changed)
        expected = self._token
        if expected is None or not jointoken.secret_matches(token, expected):
            return None
        return UserInfo(expected.username, (jointoken.BOOTSTRAPPERS_GROUP,))

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature != self._signature:
                self._token, self._signature = jointoken.parse(self.path.read_text()), signature
        except (OSError, jointoken.TokenFormatError) as e:
            if self._token is not None:
                log.warning("join token %s unusable (%s); no agent can join now", self.path, e)
            self._token, self._signature = None, None


class Authenticator:
    """Finds the caller of a request: client certificate first, then bearer token."""

    def __init__(self, *, token_authenticators: Sequence[TokenAuthenticator] = ()) -> None:
        self.token_authenticators = tuple(token_authenticators)
        # transport -> the user its verified client certificate names (None: no certificate)
        self._cert_users: weakref.WeakKeyDictionary[Any, UserInfo | None] = weakref.WeakKeyDictionary()

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        """The caller, or None if the request carries no credentials.

        Raises `Unauthorized` when it carries credentials that are not valid.
        """
        user = self._cert_user(request)
        if user is not None:
            return user
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            return None
        for authenticator in self.token_authenticators:
            user = await authenticator.authenticate_token(token)
            if user is not None:
                return _with_authenticated_group(user)
        raise Unauthorized("Unauthorized")

    def _cert_user(self, request: web.Request) -> UserInfo | None:
        """The client certificate's user, parsed once per connection."""
        transport = request.transport
        if transport is None:
            return None
        try:
            return self._cert_users[transport]
        except KeyError:
            pass
        except TypeError:  # a transport that cannot be weakly referenced: no memo
            return _cert_user_of(transport)
        user = self._cert_users[transport] = _cert_user_of(transport)
        return user


def _cert_user_of(transport: Any) -> UserInfo | None:
    cert = transport.get_extra_info("peercert")
    user = user_from_peer_cert(cert if isinstance(cert, Mapping) else None)
    return _with_authenticated_group(user) if user is not None else None


def user_from_peer_cert(cert: Mapping[str, Any] | None) -> UserInfo | None:
    """User from a verified peer certificate (`ssl.SSLSocket.getpeercert()` form): CN and O values.

    Only a certificate the TLS handshake verified against the CA shows up
    here: unverified ones come back empty from `getpeercert()`.
    """
    if not cert:
        return None
    common_names: list[str] = []
    organizations: list[str] = []
    for rdn in cert.get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                common_names.append(value)
            elif attribute == "organizationName":
                organizations.append(value)
    if not common_names or not common_names[0]:
        return None
    return UserInfo(common_names[0], tuple(organizations))


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _with_authenticated_group(user: UserInfo) -> UserInfo:
    if AUTHENTICATED_GROUP in user.groups or user.name == ANONYMOUS.name:
        return user
    return UserInfo(user.name, (*user.groups, AUTHENTICATED_GROUP), user.uid)


def authentication_middleware(authenticator: Authenticator) -> Middleware:
    """Middleware that sets `request[USER]` or answers 401 (public endpoints excepted)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = await authenticator.authenticate(request)
        except StatusError as e:
            return status_response(e)
        if user is None:
            if request.path not in PUBLIC_PATHS:
                return status_response(Unauthorized("Unauthorized"))
            user = ANONYMOUS
        request[USER] = user
        return await handler(request)

    return authenticate


# -- both in one layer ---------------------------------------------------------------------------


class RequestTracker(Protocol):
    """Something that runs some requests itself, e.g. to end long-running ones at shutdown."""

    def wants(self, request: web.Request) -> bool: ...

    def run(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]: ...


def auth_middleware(
    authenticator: Authenticator, authorizer: Authorizer | None = None, *, tracker: RequestTracker | None = None
) -> Middleware:
    """`authentication_middleware` then `authorization_middleware` as one layer.

    Requests `tracker.wants` (checked after authorization, so it can read
    `REQUEST_ATTRIBUTES`) are handed to `tracker.run` instead of the handler.
    """
    chosen = authorizer if authorizer is not None else default_authorizer()

    @web.middleware
    async def authenticate_and_authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = await authenticator.authenticate(request)
        except StatusError as e:
            return status_response(e)
        path = request.path
        if user is None:
            if path not in PUBLIC_PATHS:
                return status_response(Unauthorized("Unauthorized"))
            user = ANONYMOUS
        if IMPERSONATE_USER in request.headers or IMPERSONATE_GROUP in request.headers:
            try:
                user = await impersonate(request, user, chosen)
            except StatusError as e:
                return status_response(e)
        request[USER] = user
        attributes = request_attributes(request.method, path, request.query, user)
        request[REQUEST_ATTRIBUTES] = attributes
        decision, reason = await chosen.authorize(attributes)
        if decision is not Decision.ALLOW:
            return status_response(forbidden(attributes, reason))
        if tracker is not None and tracker.wants(request):
            return await tracker.run(request, handler)
        return await handler(request)

    return authenticate_and_authorize


# -- impersonation -----------------------------------------------------------------------------

IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"


async def impersonate(request: web.Request, user: UserInfo, authorizer: Authorizer) -> UserInfo:
    """The user the `Impersonate-*` headers ask for, if `user` may impersonate each of them.

    As k8s.io/apiserver's WithImpersonation: the `impersonate` verb on `users`, `groups`,
    `serviceaccounts` (in the account's namespace, `kubectl --as=system:serviceaccount:ns:name`)
    and `uids`; the result is authenticated (`system:authenticated`), and a service account with no
    group asked for gets its `system:serviceaccounts` groups.
    """
    name = request.headers.get(IMPERSONATE_USER, "")
    groups = tuple(request.headers.getall(IMPERSONATE_GROUP, ()))
    uid = request.headers.get(IMPERSONATE_UID, "")
    if not name:
        raise Forbidden("requested impersonation without a user name (Impersonate-User)")
    checks: list[RequestAttributes] = []
    sa_namespace = ""
    if name.startswith("system:serviceaccount:") and name.count(":") == 3:
        _, _, sa_namespace, sa_name = name.split(":")
        checks.append(_impersonation(user, "serviceaccounts", sa_name, namespace=sa_namespace))
    else:
        checks.append(_impersonation(user, "users", name))
    checks.extend(_impersonation(user, "groups", g) for g in groups)
    if uid:
        checks.append(_impersonation(user, "uids", uid, group="authentication.k8s.io"))
    for attributes in checks:
        decision, reason = await authorizer.authorize(attributes)
        if decision is not Decision.ALLOW:
            raise forbidden(attributes, reason)
    if sa_namespace and not groups:
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}")
    impersonated = UserInfo(name, groups, uid)
    return impersonated if name == ANONYMOUS.name else _with_authenticated_group(impersonated)


def _impersonation(
    user: UserInfo, resource: str, name: str, *, namespace: str = "", group: str = ""
) -> RequestAttributes:
    return RequestAttributes(
        user=user, verb="impersonate", path="", resource_request=True, api_group=group, namespace=namespace,
        resource=resource, name=name,
    )  # fmt: skip


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


def default_authorizer(rbac: Authorizer | None = None) -> Authorizer:
    """system:masters and nodes (system:nodes, for now) may do anything; anyone may read the public
    endpoints; then `rbac` (the bootstrap policy's roles give everyone discovery and self-reviews, and
    bootstrap identities certificate requests). Without RBAC: bootstrap identities may only request
    certificates, any authenticated user may review itself and read discovery; nothing else.

    A Node authorizer (a node may touch only its own pods, secrets…) would take the place of the
    nodes' short-cut, ahead of RBAC, as kube-apiserver's `--authorization-mode=Node,RBAC`.
    """
    if rbac is not None:
        return UnionAuthorizer(PrivilegedGroupAuthorizer((MASTERS_GROUP, NODES_GROUP)), PublicInfoAuthorizer(), rbac)
    return UnionAuthorizer(
        PrivilegedGroupAuthorizer((MASTERS_GROUP, NODES_GROUP)),
        PublicInfoAuthorizer(),
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

    if not name and verb == "get":
        verb = "watch" if query.get("watch", "") in _TRUE else "list"
        selected = _name_from_field_selector(query.get("fieldSelector", ""))
        if selected:
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
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

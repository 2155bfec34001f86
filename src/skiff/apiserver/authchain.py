"""Authentication, impersonation and authorization as one layer of the handler chain.

One middleware per request instead of three: it finds the caller (`auth.py`),
switches to the user `Impersonate-User`/`-Group`/`-Uid` headers ask for once
the caller may `impersonate` them, and asks the authorizer (`authz.py`).
Long-running requests can be handed to a tracker (to end them at shutdown).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from skiff.api.errors import Forbidden, StatusError, Unauthorized
from skiff.apiserver.auth import (
    ANONYMOUS,
    PUBLIC_PATHS,
    REQUEST_ATTRIBUTES,
    USER,
    Authenticator,
    RequestAttributes,
    UserInfo,
    with_authenticated_group,
)
from skiff.apiserver.authz import Authorizer, Decision, default_authorizer, forbidden, request_attributes
from skiff.apiserver.content import status_response

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
    return impersonated if name == ANONYMOUS.name else with_authenticated_group(impersonated)


def _impersonation(
    user: UserInfo, resource: str, name: str, *, namespace: str = "", group: str = ""
) -> RequestAttributes:
    return RequestAttributes(
        user=user, verb="impersonate", path="", resource_request=True, api_group=group, namespace=namespace,
        resource=resource, name=name,
    )  # fmt: skip

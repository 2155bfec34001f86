"""Who is calling: identities and the authentication link of the handler chain.

Authentication follows kube-apiserver's order: a TLS client certificate
signed by the cluster CA (user = CN, groups = O; the TLS handshake already
verified it), then bearer tokens (the static token file in
`--token-auth-file` format, reread when it changes; the join token's
bootstrap identity; service account tokens). A request with no credentials
is answered 401, except the public health and version endpoints, which
anonymous callers may read (Kubernetes' system:public-info-viewer). Every
authenticated user also gets the `system:authenticated` group.

The user is stored on the request under `USER`, the parsed request under
`REQUEST_ATTRIBUTES`, for the handlers after the auth middleware. Whether
the user may do what it asks is `authz.py`; both run as one layer
(`authchain.py`). The user a client certificate names is worked out once
per connection: the certificate cannot change on a keep-alive connection
(the server refuses TLS renegotiation), so it is remembered per transport.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from skiff.api import jointoken
from skiff.api.errors import StatusError, Unauthorized
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
    field_selector: str = ""  # of a list, watch or deletecollection (the Node authorizer reads spec.nodeName)


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
                return with_authenticated_group(user)
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
    return with_authenticated_group(user) if user is not None else None


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


def with_authenticated_group(user: UserInfo) -> UserInfo:
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

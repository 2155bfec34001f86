"""Who may call a function: the caller's bearer token, checked by the API server (`skiff gateway --auth token`).

The gateway holds no identities of its own. A call's `Authorization: Bearer <token>` is presented to
the API server in a SelfSubjectAccessReview — as the caller, over a connection that carries no
client certificate of the gateway — asking whether it may `invoke` that function
(`resource: functions`, group `functions.skiff.dev`, the function's name and namespace). The API
server authenticates the token (a service account's, or one of its static tokens: 401 when it is
none) and its authorizers answer as they answer every request, so who may call what is RBAC:

    rules: [{apiGroups: [functions.skiff.dev], resources: [functions], verbs: [invoke]}]

A missing or unknown token is 401, a token the rules do not allow is 403 (a Status body, as the API
server's own). An allowed answer is kept for `CACHE_SECONDS` per (token, function), so a warm call
does not pay a review; a Function with `public: true` (a public HTTP endpoint) is called without a token.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from dataclasses import replace

import aiohttp
from aiohttp import web

from skiff.api import errors
from skiff.client.errors import ServerUnreachable
from skiff.client.rest import Client
from skiff.functions.crd import FUNCTIONS

CACHE_SECONDS = 10.0
CACHE_MAX = 10_000
VERB = "invoke"


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    headers = {"WWW-Authenticate": 'Bearer realm="skiff functions"'} if code == 401 else None
    return web.Response(status=code, text=json.dumps(body), content_type="application/json", headers=headers)


class Access:
    """The token check of a gateway (one per gateway; `close` at the end)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cache: dict[tuple[str, str], float] = {}  # (token digest, function) → allowed until
        self.session: aiohttp.ClientSession | None = None

    def _reviewer(self, token: str) -> Client:
        """A client of the gateway's API server that presents the caller's token and nothing of the gateway's:
        over the server's local socket when the gateway uses it (a child of `skiff server`), else TLS that
        trusts the cluster's CA but shows no client certificate."""
        cfg = self.client.config
        if self.session is None:
            connector: aiohttp.BaseConnector
            if cfg.unix_socket:
                connector = aiohttp.UnixConnector(cfg.unix_socket)
            else:
                ctx = ssl.create_default_context(cadata=cfg.ca_pem.decode()) if cfg.ca_pem else None
                if ctx is None and cfg.server.startswith("https"):
                    ctx = ssl.create_default_context()
                connector = aiohttp.TCPConnector(ssl=ctx or False)
            self.session = aiohttp.ClientSession(connector=connector)
        return Client(replace(cfg, token=token, ssl_context=None), session=self.session, user_agent="skiff-gateway")

    async def check(self, request: web.Request, namespace: str, name: str) -> web.Response | None:
        """None when the call may go on; else the 401/403 (or 503) answer."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _status(401, "Unauthorized", f'calling function "{name}" needs "Authorization: Bearer <token>"')
        key = (hashlib.sha256(token.encode()).hexdigest(), f"{namespace}/{name}")
        now = time.monotonic()
        if self.cache.get(key, 0.0) >= now:
            return None
        try:
            allowed = await self._review(token, namespace, name)
        except errors.Unauthorized:
            return _status(401, "Unauthorized", "the API server does not know this token")
        except (errors.StatusError, ServerUnreachable) as e:
            return _status(503, "ServiceUnavailable", f"the token could not be checked: {e}")
        if allowed:  # only a yes is kept: a role granted a moment ago works on the next call
            if len(self.cache) >= CACHE_MAX:
                self.cache = {k: v for k, v in self.cache.items() if v >= now}
            self.cache[key] = now + CACHE_SECONDS
        else:
            what = f'resource "functions" in API group "{FUNCTIONS.group}" in the namespace "{namespace}"'
            return _status(403, "Forbidden", f'this token may not {VERB} function "{name}": cannot {VERB} {what}')
        return None

    async def _review(self, token: str, namespace: str, name: str) -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"namespace": namespace, "verb": VERB, "group": FUNCTIONS.group,
                                                  "resource": FUNCTIONS.plural, "name": name}}}  # fmt: skip
        answer = await self._reviewer(token).request(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review
        )
        return bool((answer.get("status") or {}).get("allowed"))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

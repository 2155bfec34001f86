"""Service account tokens for pods' projected volumes, fetched through the TokenRequest API and refreshed.

As the kubelet's token manager (`pkg/kubelet/token`): a `serviceAccountToken`
projection asks the API server for a token of the pod's service account,
with the projection's audience and `expirationSeconds`, bound to the pod (it
dies with the pod). Tokens are cached per pod, account, audience and
lifetime, and fetched again once 80% of their life has passed (or they are
older than 24 h); a refresh that fails keeps the old token while it is still
valid. The pod's sync runs at least every `sync.RESYNC` seconds while its containers run, so the
volume's file is rewritten (atomically) soon after a refresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skiff.api import errors
from skiff.client import Client, resources
from skiff.client.errors import ServerUnreachable

Obj = dict[str, Any]
REFRESH_FRACTION = 0.8
MAX_AGE = 24 * 3600.0
DEFAULT_EXPIRATION = 3600


@dataclass(frozen=True)
class Token:
    value: str
    fetched: float
    expires: float

    def needs_refresh(self, now: float) -> bool:
        life = self.expires - self.fetched
        return now >= self.fetched + REFRESH_FRACTION * life or now - self.fetched > MAX_AGE


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class TokenManager:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._cache: dict[tuple[str, ...], Token] = {}

    async def token(self, pod: Obj, *, audience: str = "", expiration_seconds: int = DEFAULT_EXPIRATION) -> str:
        """A valid token for `pod`'s service account; raises the API's StatusError when none can be had."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        key = (meta["uid"], meta["namespace"], account, audience, str(expiration_seconds))
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None and not cached.needs_refresh(now):
            return cached.value
        request: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        try:
            answer = await self.client.create(resources.SERVICEACCOUNTS, request, namespace=meta["namespace"],
                                              name=account, subresource="token")  # fmt: skip
        except (errors.StatusError, ServerUnreachable):
            if cached is not None and now < cached.expires:
                return cached.value  # try again at the next sync; the old token still works
            raise
        status = answer.get("status") or {}
        expires = _timestamp(status["expirationTimestamp"]) if status.get("expirationTimestamp") else now + 600
        self._cache[key] = Token(str(status.get("token", "")), now, expires)
        return self._cache[key].value

    def forget(self, uid: str) -> None:
        for key in [k for k in self._cache if k[0] == uid]:
            del self._cache[key]

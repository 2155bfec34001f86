"""Failed requests turned into exceptions a caller can catch by meaning.

An API error reaches a client as a `meta/v1 Status` body; here it becomes the
matching `skiff.api.errors` class (the same hierarchy the server raises), so a
controller writes `except errors.NotFound` or `except errors.Conflict` and
never looks at HTTP codes. A server that cannot be reached at all is a
`ServerUnreachable` (a `ConnectionError`), kept apart from API answers because
the right reaction differs (retry the same request later, not re-read state).
"""

from __future__ import annotations

import json
from typing import Any

from skiff.api import errors

_BY_REASON: dict[str, type[errors.StatusError]] = {
    "BadRequest": errors.BadRequest,
    "Unauthorized": errors.Unauthorized,
    "Forbidden": errors.Forbidden,
    "NotFound": errors.NotFound,
    "MethodNotAllowed": errors.MethodNotAllowed,
    "NotAcceptable": errors.NotAcceptable,
    "AlreadyExists": errors.AlreadyExists,
    "Conflict": errors.Conflict,
    "Expired": errors.Gone,
    "Gone": errors.Gone,
    "RequestEntityTooLarge": errors.RequestEntityTooLarge,
    "UnsupportedMediaType": errors.UnsupportedMediaType,
    "Invalid": errors.Invalid,
    "TooManyRequests": errors.TooManyRequests,
    "InternalError": errors.InternalError,
    "ServiceUnavailable": errors.ServiceUnavailable,
    "Timeout": errors.Timeout,
    "ServerTimeout": errors.Timeout,
}
_BY_CODE: dict[int, type[errors.StatusError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    406: errors.NotAcceptable,
    409: errors.Conflict,
    410: errors.Gone,
    413: errors.RequestEntityTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.Invalid,
    429: errors.TooManyRequests,
    500: errors.InternalError,
    503: errors.ServiceUnavailable,
    504: errors.Timeout,
}


class ServerUnreachable(ConnectionError):
    """The API server could not be reached, or the connection broke mid-request."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(f"cannot reach the API server at {server}: {detail}")
        self.server = server
        self.detail = detail


def from_status(status: dict[str, Any], code: int | None = None) -> errors.StatusError:
    """The exception for a `Status` object (from an error response or a watch ERROR event)."""
    code = int(status.get("code") or code or 500)
    reason = str(status.get("reason") or "")
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code) or errors.StatusError
    details = status.get("details") or {}
    retry = details.get("retryAfterSeconds")
    err = cls(
        str(status.get("message") or reason or f"the server answered HTTP {code}"),
        name=details.get("name"),
        group=details.get("group"),
        kind=details.get("kind"),
        causes=list(details.get("causes") or []),
        retry_after=int(retry) if retry is not None else None,
    )
    if err.code != code or (reason and err.reason != reason):
        err.code, err.reason = code, reason or err.reason  # keep what the server said for unusual pairs
    return err


def from_response(code: int, body: bytes, *, method: str = "", url: str = "") -> errors.StatusError:
    """The exception for a non-2xx response; bodies that are not a Status are quoted in the message."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        return from_status(parsed, code)
    text = body.decode(errors="replace").strip()[:500]
    where = f"{method} {url}: " if method else ""
    return from_status({"code": code, "message": f"{where}the server answered HTTP {code}: {text}".rstrip(": ")})

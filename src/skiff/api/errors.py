"""One error hierarchy that mirrors the Kubernetes API's Status reasons.

Anything that reaches a client as an error is one of these, raised where the
problem is found and turned into a `Status` object at the HTTP boundary
(`StatusError.status()`), so that kubectl prints
`Error from server (<reason>): <message>`.
"""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    """An API error answered as a `meta/v1 Status` with `code` and `reason`."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes or []
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group is not None:
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body


class BadRequest(StatusError):
    code = 400
    reason = "BadRequest"


class Unauthorized(StatusError):
    code = 401
    reason = "Unauthorized"


class Forbidden(StatusError):
    code = 403
    reason = "Forbidden"


class NotFound(StatusError):
    code = 404
    reason = "NotFound"


class MethodNotAllowed(StatusError):
    code = 405
    reason = "MethodNotAllowed"


class NotAcceptable(StatusError):
    code = 406
    reason = "NotAcceptable"


class AlreadyExists(StatusError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StatusError):
    code = 409
    reason = "Conflict"


class Gone(StatusError):
    """A resourceVersion older than the store's history (compacted): 410 Expired.

    `continue_token`: for an expired continue, the token that lists the rest at the latest revision
    (an inconsistent list), which Kubernetes puts in the Status's metadata.continue."""

    code = 410
    reason = "Expired"

    def __init__(self, message: str, *, continue_token: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.continue_token = continue_token

    def status(self) -> dict[str, Any]:
        body = super().status()
        if self.continue_token:
            body["metadata"] = {"continue": self.continue_token}
        return body


class RequestEntityTooLarge(StatusError):
    code = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaType(StatusError):
    code = 415
    reason = "UnsupportedMediaType"


class Invalid(StatusError):
    code = 422
    reason = "Invalid"


class TooManyRequests(StatusError):
    code = 429
    reason = "TooManyRequests"


class InternalError(StatusError):
    code = 500
    reason = "InternalError"


class ServiceUnavailable(StatusError):
    code = 503
    reason = "ServiceUnavailable"


class Timeout(StatusError):
    code = 504
    reason = "Timeout"


def field_error(kind: str, name: str, errors: list[tuple[str, str, str]], *, group: str = "") -> Invalid:
    """An `Invalid` error as Kubernetes words it.

    `errors` holds (cause type, field path, message) triples, e.g.
    ("FieldValueRequired", "spec.containers", "Required value").
    Message: `Deployment.apps "web" is invalid: spec.selector: Required value`.
    """
    qualified = f"{kind}.{group}" if group else kind
    parts = [f"{path}: {msg}" for _t, path, msg in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return Invalid(
        f'{qualified} "{name}" is invalid: {joined}',
        name=name,
        group=group or None,
        kind=kind,
        causes=[{"reason": t, "message": msg, "field": path} for t, path, msg in errors],
    )

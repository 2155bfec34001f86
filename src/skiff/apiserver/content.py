"""Content negotiation: reading request bodies and shaping responses.

Bodies may be JSON, YAML or (for the kinds kubectl's typed commands send)
Kubernetes protobuf, at most 3 MiB. Responses are JSON, as a Table when
kubectl asks for one (`Accept: ...;as=Table;g=meta.k8s.io;v=v1`) or as
PartialObjectMetadata; a client that accepts only protobuf gets 406.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from aiohttp import web

from skiff.api import errors

MAX_BODY = 3 * 1024 * 1024
JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
TABLE_CT = "application/json;as=Table;v=v1;g=meta.k8s.io"


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _too_large()
    stream = request.content
    if stream.is_eof():  # the whole body has arrived with its headers (small bodies): take it as it is
        data = stream.read_nowait()
        if len(data) > MAX_BODY:
            raise _too_large()
        return data
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> errors.RequestEntityTooLarge:
    return errors.RequestEntityTooLarge(
        f"the request body is too large: the limit is {MAX_BODY} bytes (3 MiB); "
        "split the object or keep large data out of the API"
    )


def media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", JSON).split(";")[0].strip().lower() or JSON


def decode_body(data: bytes, content_type: str, *, allow_yaml_types: bool = True) -> Any:
    """Parse a request body per its Content-Type (the media type without parameters)."""
    if not data.strip():
        raise errors.BadRequest("the request body is empty: send a JSON or YAML object")
    if content_type in (
        JSON,
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "*/*",
        "text/plain",
    ):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise errors.BadRequest(f"the request body is not valid JSON: {exc}") from None
    if content_type in (YAML, "application/x-yaml", "text/yaml", "application/apply-patch+yaml"):
        try:
            docs = [d for d in yaml.safe_load_all(data) if d is not None]
        except yaml.YAMLError as exc:
            raise errors.BadRequest(f"the request body is not valid YAML: {exc}") from None
        if len(docs) != 1:
            raise errors.BadRequest(
                f"the request body must hold exactly one YAML document, found {len(docs)}"
            )
        return _plain(docs[0])
    if content_type == PROTOBUF:
        from skiff.api.protobuf import decode_k8s_protobuf

        return decode_k8s_protobuf(data)
    raise errors.UnsupportedMediaType(
        f'the body of the request was in an unknown format "{content_type}" - accepted media types include: '
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )


def _plain(value: Any) -> Any:
    """YAML timestamps and other non-JSON scalars as JSON would carry them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "isoformat"):
        text: str = value.isoformat()
        return text.replace("+00:00", "Z")
    return str(value)


def accept(request: web.Request) -> str:
    """'table', 'partial', or 'json'; raises 406 for a client that can take none of them."""
    header = request.headers.get("Accept", "")
    if not header:
        return "json"
    shape = _accepted.get(header)
    if shape is None:
        shape = _accept(header)
        if len(_accepted) >= 256:  # clients send a handful of distinct headers; never grow without bound
            _accepted.clear()
        _accepted[header] = shape
    return shape


_accepted: dict[str, str] = {}  # Accept header -> shape (headers that fail are not remembered)


def _accept(header: str) -> str:
    kinds = []
    for part in header.split(","):
        params = [p.strip() for p in part.split(";")]
        mt = params[0].lower()
        opts = dict(p.split("=", 1) for p in params[1:] if "=" in p)
        if mt in (JSON, "*/*", "application/*", "application/yaml", YAML) or mt.endswith("+json"):
            if opts.get("as") == "Table":
                kinds.append("table")
            elif opts.get("as") in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                kinds.append("partial")
            elif "as" not in opts:
                kinds.append("json")
        elif mt == PROTOBUF and "as" not in opts:
            kinds.append("protobuf")
    for k in kinds:
        if k != "protobuf":
            return k
    if kinds:
        raise errors.NotAcceptable(
            "only the following media types are accepted: application/json, application/yaml; "
            "protobuf responses are not served, ask for application/json"
        )
    raise errors.NotAcceptable(
        f"the requested media types {header!r} are not served: ask for application/json"
    )


def json_response(
    obj: Any, *, status: int = 200, content_type: str = JSON, warnings: list[str] | None = None
) -> web.Response:
    resp = web.Response(body=orjson.dumps(obj), status=status)
    resp.headers["Content-Type"] = content_type
    for w in warnings or ():
        resp.headers.add("Warning", '299 - "' + w.replace('"', '\\"') + '"')
    return resp


def status_response(err: errors.StatusError) -> web.Response:
    resp = json_response(err.status(), status=err.code)
    if err.retry_after is not None:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp

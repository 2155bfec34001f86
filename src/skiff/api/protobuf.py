"""Decode the protobuf request bodies that kubectl's typed commands send.

`kubectl create deployment|namespace|configmap|secret|service|...`,
`kubectl auth can-i` and `kubectl auth whoami` go through client-go's typed
clients, which POST `Content-Type: application/vnd.kubernetes.protobuf`, and
kubectl does not retry in JSON when the server answers 415. So skiff, which
works on JSON objects, has to read those bodies: `decode_k8s_protobuf` turns
one into the JSON-shaped dict the same command would have sent as JSON, and
the rest of the server never sees protobuf.

The body is the 4-byte magic `k8s\\x00` followed by a `runtime.Unknown`
message: {1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding,
4 contentType}, where `raw` is the typed object's own message. The wire format
is read by `skiff.api.protobuf_wire`; the field tables, and how each field maps
onto Go's JSON encoding, are in `skiff.api.protobuf_schema`.

Fields the tables do not know (from a kubectl newer than 1.37) are skipped, as
any protobuf reader does with fields newer than its schema, with a warning.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

from skiff.api.errors import BadRequest, UnsupportedMediaType
from skiff.api.protobuf_schema import MESSAGES, SCALARS, TOP_LEVEL, Field
from skiff.api.protobuf_wire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    as_double,
    as_float,
    as_int32,
    as_int64,
    iter_fields,
    iter_packed_varints,
)

__all__ = ["MAGIC", "PROTOBUF_MEDIA_TYPE", "decode_k8s_protobuf", "decode_message", "supported_kinds"]

log = logging.getLogger(__name__)

MAGIC: Final = b"k8s\x00"
PROTOBUF_MEDIA_TYPE: Final = "application/vnd.kubernetes.protobuf"

_ZERO: Final[dict[str, Any]] = {"string": "", "bytes": "", "bool": False, "int32": 0, "int64": 0, "double": 0.0}
_SCALAR_WIRE_TYPE: Final = {
    "string": LENGTH_DELIMITED, "bytes": LENGTH_DELIMITED, "bool": VARINT, "int32": VARINT, "int64": VARINT,
    "double": FIXED64
}  # fmt: skip
_GO_ZERO_TIME: Final = -62135596800  # time.Time{}.Unix(): 0001-01-01T00:00:00Z, which JSON renders as null
_WIRE_NAMES: Final = {VARINT: "varint", FIXED64: "64-bit", LENGTH_DELIMITED: "length-delimited", FIXED32: "32-bit"}


def supported_kinds() -> list[tuple[str, str]]:
    """The (apiVersion, kind) pairs `decode_k8s_protobuf` accepts."""
    return sorted(TOP_LEVEL)


def decode_k8s_protobuf(body: bytes) -> dict[str, Any]:
    """Decode a `application/vnd.kubernetes.protobuf` request body into its JSON form.

    Returns the object as the same kubectl command would have sent it in JSON:
    `apiVersion` and `kind` from the envelope's type meta, zero-valued
    `omitempty` fields left out, `bytes` fields (Secret `data`, ConfigMap
    `binaryData`) as base64 strings.

    Raises `UnsupportedMediaType` (415) for a kind this module has no table
    for, and `BadRequest` (400) for bytes that are not a well-formed envelope
    or message.
    """
    if not body.startswith(MAGIC):
        raise BadRequest("protobuf request body does not start with the Kubernetes magic prefix 'k8s\\x00'")
    try:
        api_version, kind, raw, encoding, content_type = _read_unknown(body[len(MAGIC) :])
    except WireError as exc:
        raise BadRequest(f"malformed protobuf request body: {exc}") from exc
    if not kind or not api_version:
        raise BadRequest("protobuf request body has no apiVersion/kind in its type meta")
    if encoding:
        raise UnsupportedMediaType(f"protobuf request body with content encoding {encoding!r} is not supported")
    if content_type == "application/json":
        return _decode_embedded_json(raw, api_version, kind)
    if content_type not in ("", PROTOBUF_MEDIA_TYPE):
        raise UnsupportedMediaType(f"protobuf envelope holding {content_type!r} is not supported")
    message = TOP_LEVEL.get((api_version, kind))
    if message is None:
        raise UnsupportedMediaType(
            f"{kind} ({api_version}) is not supported in protobuf by this server; "
            "send it as JSON (Content-Type: application/json), which works"
        )
    obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    try:
        obj.update(decode_message(message, raw))
    except WireError as exc:
        raise BadRequest(f"malformed protobuf {kind}: {exc}") from exc
    return obj


def decode_message(message: str, buf: bytes) -> dict[str, Any]:
    """Decode one message of the schema into a JSON-shaped dict.

    Raises `WireError` on malformed bytes (`decode_k8s_protobuf` turns it into 400).
    """
    fields = MESSAGES[message]
    out: dict[str, Any] = {}
    for number, wire_type, value in iter_fields(buf):
        field = fields.get(number)
        if field is None:
            log.warning("protobuf %s: dropping field %d, which this server does not know", message, number)
            continue
        where = f"{message}.{field.name}"
        if field.map:
            key, item = _map_entry(field, _expect_bytes(where, wire_type, value), where)
            entries = out.setdefault(field.name, {})
            entries[key] = item
        elif field.repeated:
            out.setdefault(field.name, []).extend(_repeated(field, wire_type, value, where))
        elif field.inline:
            out.update(decode_message(field.type, _expect_bytes(where, wire_type, value)))
        else:
            converted = _single(field.type, wire_type, value, where)
            if not field.keep_zero and _is_zero(field.type, converted):
                out.pop(field.name, None)
            else:
                out[field.name] = converted
    for field in fields.values():
        if field.always and field.name not in out:
            out[field.name] = _absent(field)
    return out


def _read_unknown(buf: bytes) -> tuple[str, str, bytes, str, str]:
    """Split a `runtime.Unknown` into (apiVersion, kind, raw, contentEncoding, contentType)."""
    api_version = kind = encoding = content_type = ""
    raw = b""
    for number, wire_type, value in iter_fields(buf):
        if number == 1:
            for sub, sub_type, sub_value in iter_fields(_expect_bytes("Unknown.typeMeta", wire_type, value)):
                if sub == 1:
                    api_version = _text(_expect_bytes("TypeMeta.apiVersion", sub_type, sub_value))
                elif sub == 2:
                    kind = _text(_expect_bytes("TypeMeta.kind", sub_type, sub_value))
        elif number == 2:
            raw = _expect_bytes("Unknown.raw", wire_type, value)
        elif number == 3:
            encoding = _text(_expect_bytes("Unknown.contentEncoding", wire_type, value))
        elif number == 4:
            content_type = _text(_expect_bytes("Unknown.contentType", wire_type, value))
    return api_version, kind, raw, encoding, content_type


def _decode_embedded_json(raw: bytes, api_version: str, kind: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"protobuf envelope holds invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadRequest("protobuf envelope holds JSON that is not an object")
    obj.setdefault("kind", kind)
    obj.setdefault("apiVersion", api_version)
    return obj


def _single(typ: str, wire_type: int, value: int | bytes, where: str) -> Any:
    """Convert one non-repeated wire value of type `typ`."""
    if typ in SCALARS:
        return _scalar(typ, wire_type, value, where)
    buf = _expect_bytes(where, wire_type, value)
    if typ == "Time":
        return _time(buf, micro=False)
    if typ == "MicroTime":
        return _time(buf, micro=True)
    if typ == "Quantity":
        return _string_field(buf, 1) or "0"
    if typ == "IntOrString":
        return _int_or_string(buf)
    if typ == "FieldsV1":
        return _fields_v1(buf, where)
    if typ == "StringList":
        return [_text(_expect_bytes(where, t, v)) for n, t, v in iter_fields(buf) if n == 1]
    return decode_message(typ, buf)


def _scalar(typ: str, wire_type: int, value: int | bytes, where: str) -> Any:
    expected = _SCALAR_WIRE_TYPE[typ]
    if wire_type != expected and not (typ == "double" and wire_type == FIXED32):
        raise WireError(
            f"{where}: {_WIRE_NAMES.get(wire_type, wire_type)} record where a {typ} ({_WIRE_NAMES[expected]}) belongs"
        )
    if typ == "string":
        assert isinstance(value, bytes)
        return _text(value)
    if typ == "bytes":
        assert isinstance(value, bytes)
        return base64.b64encode(value).decode("ascii")
    if typ == "double":
        assert isinstance(value, bytes)
        return as_double(value) if wire_type == FIXED64 else as_float(value)
    assert isinstance(value, int)
    if typ == "bool":
        return value != 0
    if typ == "int32":
        return as_int32(value)
    return as_int64(value)


def _repeated(field: Field, wire_type: int, value: int | bytes, where: str) -> list[Any]:
    """The element(s) of one record of a repeated field (several if it is a packed scalar)."""
    if field.type in ("bool", "int32", "int64") and wire_type == LENGTH_DELIMITED:
        assert isinstance(value, bytes)
        return [_scalar(field.type, VARINT, item, where) for item in iter_packed_varints(value)]
    if field.type == "double" and wire_type == LENGTH_DELIMITED:
        assert isinstance(value, bytes)
        if len(value) % 8:
            raise WireError(f"{where}: packed doubles of {len(value)} bytes")
        return [as_double(value[i : i + 8]) for i in range(0, len(value), 8)]
    return [_single(field.type, wire_type, value, where)]


def _map_entry(field: Field, buf: bytes, where: str) -> tuple[str, Any]:
    """One `{1 key, 2 value}` entry of a map field; a missing value is the type's zero value."""
    key = ""
    item: Any = None
    for number, wire_type, value in iter_fields(buf):
        if number == 1:
            key = _text(_expect_bytes(f"{where} key", wire_type, value))
        elif number == 2:
            item = _single(field.type, wire_type, value, f"{where}[{key}]")
    if item is None:
        item = _single(field.type, LENGTH_DELIMITED, b"", where) if field.type not in SCALARS else _ZERO[field.type]
    return key, item


def _is_zero(typ: str, value: Any) -> bool:
    """Whether `omitempty`/`omitzero` drops this value: zero scalars, and zero times (null)."""
    if typ in SCALARS:
        return bool(value == _ZERO[typ])
    return value is None


def _absent(field: Field) -> Any:
    """What Go's JSON encoder writes for a field without `omitempty` that is not on the wire."""
    if field.repeated or field.map or field.nullable:
        return None
    if field.type in SCALARS:
        return _ZERO[field.type]
    if field.type == "Quantity":
        return "0"
    if field.type == "IntOrString":
        return 0
    if field.type in MESSAGES:
        return decode_message(field.type, b"")  # a non-pointer struct: Go renders its zero value
    return None


def _time(buf: bytes, *, micro: bool) -> str | None:
    """metav1.Time / MicroTime: an empty message is the zero time, which JSON renders as null."""
    if not buf:
        return None
    seconds = nanos = 0
    for number, wire_type, value in iter_fields(buf):
        if number == 1 and isinstance(value, int):
            seconds = as_int64(value)
        elif number == 2 and isinstance(value, int):
            nanos = as_int32(value)
        elif wire_type != VARINT:
            raise WireError("time: non-varint field")
    if seconds == _GO_ZERO_TIME and nanos == 0:
        return None
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise WireError(f"time: {seconds} seconds is out of range") from exc
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{max(nanos, 0) // 1000:06d}Z"
    # Kubernetes drops the nanoseconds of a Time (its JSON has second precision).
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(buf: bytes) -> int | str:
    kind = int_val = 0
    str_val = ""
    for number, wire_type, value in iter_fields(buf):
        if number == 1 and isinstance(value, int):
            kind = as_int64(value)
        elif number == 2 and isinstance(value, int):
            int_val = as_int32(value)
        elif number == 3:
            str_val = _text(_expect_bytes("IntOrString.strVal", wire_type, value))
    return str_val if kind == 1 else int_val


def _fields_v1(buf: bytes, where: str) -> Any:
    raw = b""
    for number, wire_type, value in iter_fields(buf):
        if number == 1:
            raw = _expect_bytes(where, wire_type, value)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise WireError(f"{where}: not JSON") from exc


def _string_field(buf: bytes, wanted: int) -> str:
    result = ""
    for number, wire_type, value in iter_fields(buf):
        if number == wanted:
            result = _text(_expect_bytes("string", wire_type, value))
    return result


def _expect_bytes(where: str, wire_type: int, value: int | bytes) -> bytes:
    if wire_type != LENGTH_DELIMITED or not isinstance(value, bytes):
        raise WireError(f"{where}: {_WIRE_NAMES.get(wire_type, wire_type)} record where a length-delimited one belongs")
    return value


def _text(raw: bytes) -> str:
    # Go strings may hold invalid UTF-8; Go's JSON encoder replaces it with U+FFFD, and so do we.
    return raw.decode("utf-8", errors="replace")

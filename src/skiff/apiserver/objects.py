"""Encoding objects to and from storage, and the small metadata helpers the store needs.

Objects are stored as compact JSON without `metadata.resourceVersion`: the
resourceVersion is the store's revision of the key and is filled in on the
way out, so it can never disagree with the store.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from skiff.api.errors import BadRequest
from skiff.apiserver.registry import ResourceType
from skiff.apiserver.storedjson import Item, head_first
from skiff.storage.interface import KeyValue

Obj = dict[str, Any]


_stamp: tuple[int, str] = (-1, "")  # (second, its RFC 3339 form): one strftime per second, not per call


def now_rfc3339() -> str:
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp[1]


def new_uid() -> str:
    """A random (version 4) UUID, as `str(uuid.uuid4())` but without building a UUID object."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode(rt: ResourceType, obj: Obj) -> bytes:
    """The bytes stored for `obj` (converted to the storage version)."""
    if rt.to_storage is not None:
        obj = rt.to_storage(obj)
    obj = head_first(obj)  # lists splice the stored bytes when metadata leads (`storedjson`)
    meta = obj.get("metadata") or {}
    if "resourceVersion" in meta:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in meta.items() if k != "resourceVersion"}
    return orjson.dumps(obj)


def decode(rt: ResourceType, kv: KeyValue, *, revision: int | None = None) -> Obj:
    """The object stored in `kv`, as `rt`'s version, with its resourceVersion."""
    obj: Obj = orjson.loads(kv.value)
    if rt.from_storage is not None and obj.get("apiVersion") != rt.api_version:
        obj = rt.from_storage(obj)
    obj.setdefault("metadata", {})["resourceVersion"] = str(
        revision if revision is not None else kv.mod_revision
    )
    return obj


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes) -> Any:
    return orjson.loads(data)


def parse_resource_version(value: str | None, *, what: str = "resourceVersion") -> int:
    """'' -> 0; a non-negative integer string -> int; anything else -> 400."""
    if not value:
        return 0
    try:
        rv = int(value)
    except ValueError:
        raise BadRequest(f"invalid {what} {value!r}: must be a non-negative integer") from None
    if rv < 0:
        raise BadRequest(f"invalid {what} {value!r}: must be a non-negative integer")
    return rv


def encode_continue(revision: int, next_key: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": next_key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str, prefix: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        rv, start = int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("continue key is not valid: could not decode the continue token") from None
    if not start.startswith(prefix):
        raise BadRequest(
            "continue key is not valid: the continue token is for a different resource or namespace"
        )
    return rv, start


def list_object(
    rt: ResourceType, items: Sequence[Item], revision: int, cont: str = "", remaining: int | None = None
) -> Obj:
    meta: Obj = {"resourceVersion": str(revision)}
    if cont:
        meta["continue"] = cont
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items}


def partial_metadata(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }

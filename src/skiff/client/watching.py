"""Reading a watch stream: newline-delimited JSON events into `WatchEvent`s.

A Kubernetes watch answers with one long chunked response, one JSON event
per line: `{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR",
"object": {...}}`. Lines can be far larger than a network chunk (a 1 MiB
ConfigMap), so they are reassembled here without a line-length limit; an
ERROR event (its object is a `Status`, e.g. 410 Expired) becomes the matching
`skiff.api.errors` exception.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, NamedTuple

import orjson

from skiff.client.errors import from_status
from skiff.client.resources import Resource

Obj = dict[str, Any]


class WatchEvent(NamedTuple):
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, and the object."""

    type: str
    object: Obj


async def iter_lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    """Lines (without the newline) reassembled from arbitrary chunks; a last unterminated line too."""
    pending: list[bytes] = []
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:end])
            line = b"".join(pending)
            pending.clear()
            yield line
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending)


def decode_event(resource: Resource, line: bytes) -> WatchEvent:
    """One event line; objects get their apiVersion/kind; an ERROR event is raised as its StatusError."""
    ev = orjson.loads(line)
    type_, obj = ev.get("type", ""), ev.get("object") or {}
    if type_ == "ERROR":
        raise from_status(obj)
    return WatchEvent(type_, obj if type_ == "BOOKMARK" else resource.stamp(obj))


async def decode_stream(chunks: AsyncIterable[bytes], resource: Resource) -> AsyncGenerator[WatchEvent, None]:
    async for line in iter_lines(chunks):
        if line.strip():
            yield decode_event(resource, line)

"""The watch endpoint: a chunked stream of newline-separated JSON events.

Semantics follow Kubernetes: from a resourceVersion (events after it), or
with no resourceVersion / "0" synthetic ADDED events for what exists first;
`sendInitialEvents=true` (WatchList) ends the initial events with a BOOKMARK
annotated `k8s.io/initial-events-end`; bookmarks on request; objects moving
out of a selector arrive as DELETED; `timeoutSeconds` ends the stream; a
compacted resourceVersion is a 410 (before the stream starts) or an ERROR
event (after).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
from aiohttp import web

from skiff.api import errors, tables
from skiff.apiserver import content, objects
from skiff.apiserver.options import ListOptions
from skiff.apiserver.paths import Target
from skiff.apiserver.registry import ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import CachedEvent, Subscription, WatchCache
from skiff.storage.interface import CompactedError, FutureRevisionError, KeyValue

BOOKMARK_EVERY = 15.0
Obj = dict[str, Any]


def _gone(rv: int) -> errors.Gone:
    return errors.Gone(f"too old resource version: {rv}")


async def serve_watch(request: web.Request, store: Store, cache: WatchCache, t: Target) -> web.StreamResponse:
    rt = t.rt
    q = request.query
    shape = content.accept(request)
    predicate = store.matcher(rt, q.get("labelSelector", ""), q.get("fieldSelector", ""))
    rv_param = q.get("resourceVersion", "")
    rv = objects.parse_resource_version(rv_param)
    send_initial = q.get("sendInitialEvents")
    bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
    if send_initial is not None and q.get("resourceVersionMatch") != "NotOlderThan":
        raise errors.Invalid(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        )
    if send_initial == "true" and not bookmarks:
        raise errors.Invalid(
            "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true"
        )
    try:
        timeout = float(q.get("timeoutSeconds") or random.uniform(1800, 3600))
    except ValueError:
        raise errors.BadRequest("timeoutSeconds must be a number") from None
    initial = send_initial == "true" or (send_initial is None and rv_param in ("", "0"))
    if send_initial == "false" and rv_param in ("", "0"):
        rv = cache.revision
    prefix = rt.prefix(t.namespace)
    if t.name:
        prefix = rt.key(t.namespace, t.name)

    initial_items: list[Obj] = []
    if initial:
        listed = await store.list(
            rt,
            t.namespace,
            ListOptions(label_selector=q.get("labelSelector", ""), field_selector=q.get("fieldSelector", "")),
        )
        initial_items = listed["items"]
        start = int(listed["metadata"]["resourceVersion"])
    else:
        start = rv
    try:
        sub = await cache.subscribe(prefix, start)
    except CompactedError:
        raise _gone(rv) from None
    except FutureRevisionError as exc:
        raise errors.Timeout(
            f"Too large resource version: {exc.requested}, current: {exc.current}", retry_after=1
        ) from None

    resp = web.StreamResponse()
    resp.content_type = "application/json"
    if shape == "table":
        resp.headers["Content-Type"] = content.TABLE_CT
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    writer = _Writer(resp, rt, shape, request.query.get("includeObject", "Metadata") or "Metadata", t.name)
    try:
        for obj in initial_items:
            await writer.send("ADDED", obj)
        if send_initial == "true":
            await writer.bookmark(start, initial_end=True)
        await _pump(sub, writer, predicate, timeout, bookmarks, cache)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
    return resp


class _Writer:
    def __init__(
        self, resp: web.StreamResponse, rt: ResourceType, shape: str, include: str, name: str | None
    ):
        self.resp, self.rt, self.shape, self.include, self.name = resp, rt, shape, include, name
        self.first = True

    def _wrap(self, obj: Obj) -> Obj:
        if self.shape == "table":
            first, self.first = self.first, False
            return tables.to_table(
                self.rt.group,
                self.rt.kind,
                [obj],
                no_headers=not first,
                include_object=self.include,
                printer_columns=self.rt.extra.get("printer_columns"),
            )
        if self.shape == "partial":
            return objects.partial_metadata(obj)
        return obj

    async def send(self, type_: str, obj: Obj) -> None:
        await self.resp.write(orjson.dumps({"type": type_, "object": self._wrap(obj)}) + b"\n")

    async def send_raw(self, line: bytes) -> None:
        await self.resp.write(line)

    async def bookmark(self, rv: int, *, initial_end: bool = False) -> None:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj: Obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta}
        if self.shape == "table":
            obj = {
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "columnDefinitions": None,
                "rows": None,
            }
        await self.resp.write(orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n")

    async def error(self, err: errors.StatusError) -> None:
        await self.resp.write(orjson.dumps({"type": "ERROR", "object": err.status()}) + b"\n")


def _decode(rt: ResourceType, ev: CachedEvent, value: bytes | None, rv: int) -> Obj | None:
    """The event's object as `rt` (memoised per event and version: watchers share it read-only)."""
    if value is None:
        return None
    key = (rt.api_version, value is ev.prev_value, rv)
    got = ev.memo.get(key)
    if got is None:
        got = objects.decode(rt, KeyValue(ev.key, value, 0, rv))
        ev.memo[key] = got
    return dict(got)


async def _pump(
    sub: Subscription, writer: _Writer, predicate: Any, duration: float, bookmarks: bool, cache: WatchCache
) -> None:
    rt = writer.rt
    deadline = time.monotonic() + duration
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            if sub.queue.empty():
                # asyncio.timeout, not wait_for: wait_for wraps the get in a new Task per event and watcher
                async with asyncio.timeout(min(remaining, BOOKMARK_EVERY)):
                    ev = await sub.queue.get()
            else:
                ev = sub.queue.get_nowait()
        except TimeoutError:
            if bookmarks and time.monotonic() < deadline:
                await writer.bookmark(max(sub.after, cache.revision))
            continue
        if ev is None:
            if isinstance(sub.error, CompactedError):
                await writer.error(_gone(sub.error.requested))
            return
        if writer.name is not None and ev.key != rt.key(_ns_of(rt, ev.key), writer.name):
            continue
        await _deliver(ev, writer, predicate)


def _ns_of(rt: ResourceType, key: str) -> str | None:
    if not rt.namespaced:
        return None
    return key[len(rt.storage_prefix) :].split("/", 1)[0]


async def _deliver(ev: CachedEvent, writer: _Writer, predicate: Any) -> None:
    rt = writer.rt
    if ev.type == "DELETE":
        obj = _decode(rt, ev, ev.value, ev.revision)
        if obj is not None and (predicate is None or predicate(obj)):
            await _send_shared(ev, writer, "DELETED", obj, predicate)
        return
    new = _decode(rt, ev, ev.value, ev.revision)
    assert new is not None
    if predicate is None:
        await _send_shared(ev, writer, "ADDED" if ev.type == "CREATE" else "MODIFIED", new, predicate)
        return
    new_ok = predicate(new)
    old_ok = False
    if ev.type == "UPDATE" and ev.prev_value is not None:
        old = _decode(rt, ev, ev.prev_value, ev.revision)
        old_ok = bool(old is not None and predicate(old))
    if new_ok and old_ok:
        await writer.send("MODIFIED", new)
    elif new_ok:
        await writer.send("ADDED", new)
    elif old_ok:
        await writer.send("DELETED", new)


async def _send_shared(ev: CachedEvent, writer: _Writer, type_: str, obj: Obj, predicate: Any) -> None:
    """Unfiltered JSON watchers of one version share one encoded line per event."""
    if writer.shape != "json":
        await writer.send(type_, obj)
        return
    key = ("line", writer.rt.api_version, type_)
    line = ev.memo.get(key)
    if line is None:
        line = orjson.dumps({"type": type_, "object": obj}) + b"\n"
        ev.memo[key] = line
    await writer.send_raw(line)

"""The watch endpoint: a chunked stream of newline-separated JSON events.

Semantics follow Kubernetes: from a resourceVersion (events after it), or
with no resourceVersion / "0" synthetic ADDED events for what exists first;
`sendInitialEvents=true` (WatchList) ends the initial events with a BOOKMARK
annotated `k8s.io/initial-events-end`; bookmarks on request; objects moving
out of a selector arrive as DELETED; `timeoutSeconds` ends the stream; a
compacted resourceVersion is a 410 (before the stream starts) or an ERROR
event (after).

Delivery: each event is encoded once per (version, shape, type) and shared
by every watcher (Table streams excepted: their first row carries the
column headers). A watcher that keeps up gets its events written straight
to its connection by the watch cache's dispatcher, as one HTTP chunk per
storage batch, without waking its task; a congested one falls back to its
queue, which its task writes out with back-pressure, several events per
write, before going direct again (see `watchfanout.Subscription`).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, cast

import orjson
from aiohttp import web

from skiff.api import errors, tables
from skiff.apiserver import content, objects, tlswrite
from skiff.apiserver.options import ListOptions
from skiff.apiserver.paths import Target
from skiff.apiserver.registry import ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchfanout import Subscription
from skiff.apiserver.watchwindow import CachedEvent
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
        raise errors.Invalid("allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true")
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
    include = request.query.get("includeObject", "Metadata") or "Metadata"
    writer = _Writer(resp, request, rt, shape, include, t.name, predicate, start)
    try:
        for obj in initial_items:
            await writer.send("ADDED", obj)
            if predicate is not None:  # listed with the same selectors: they match as of `start`
                meta = obj.get("metadata") or {}
                writer.matching.add(rt.key(meta.get("namespace"), meta.get("name", "")))
        if send_initial == "true":
            await writer.bookmark(start, initial_end=True)
        await _pump(sub, writer, timeout, bookmarks, cache)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sub.close()
    return resp


class _Writer:
    """One watcher's stream: what it wants (version, shape, name, selector) and how to write to it."""

    def __init__(
        self,
        resp: web.StreamResponse,
        request: web.Request,
        rt: ResourceType,
        shape: str,
        include: str,
        name: str | None,
        predicate: Any,
        since: int = 0,
    ) -> None:
        self.resp, self.rt, self.shape, self.include, self.name = resp, rt, shape, include, name
        self.predicate = predicate
        # With a selector: the keys whose latest version this stream saw matched it. The stream gets every event
        # under its prefix after `since`, in order, so for a key it has met (or one created after `since`) this
        # says whether the previous version matched without decoding it (an object leaving the selection is a
        # DELETED, entering it an ADDED). Bounded by the objects that match, as the client's own cache is.
        self.since = since
        self.matching: set[str] = set()
        self.first = True
        self.protocol = request.protocol
        self.transport = request.transport
        self.shared = shape != "table"  # Table rows differ per stream (headers in the first)
        # streams that take every event under their prefix as it is share one framed chunk per event
        self.plain_chunk = ("chunk", shape, rt.api_version) if self.shared and not name and predicate is None else None

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

    def encode(self, type_: str, obj: Obj) -> bytes:
        return orjson.dumps({"type": type_, "object": self._wrap(obj)}) + b"\n"

    async def send(self, type_: str, obj: Obj) -> None:
        await self.resp.write(self.encode(type_, obj))

    async def send_raw(self, data: bytes) -> None:
        await self.resp.write(data)
        if self.protocol is not None and self.protocol.writing_paused:
            await self.resp.drain()  # a congested client holds back its own stream only

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

    # ------------------------------------------------------------ per event
    def line(self, ev: CachedEvent) -> bytes | None:
        """What this stream gets for `ev` (None: nothing), encoded once per event for every stream alike."""
        rt = self.rt
        if self.name is not None and ev.key != rt.key(_ns_of(rt, ev.key), self.name):
            return None
        predicate = self.predicate
        if predicate is None:
            type_ = "DELETED" if ev.type == "DELETE" else "ADDED" if ev.type == "CREATE" else "MODIFIED"
        elif ev.type == "DELETE":
            self.matching.discard(ev.key)
            if not predicate(_decoded(rt, ev, ev.value)):
                return None
            type_ = "DELETED"
        else:
            new_ok = bool(predicate(_decoded(rt, ev, ev.value)))
            old_ok = self._matched_before(ev)
            if new_ok:
                self.matching.add(ev.key)
            else:
                self.matching.discard(ev.key)
            if new_ok:
                type_ = "MODIFIED" if old_ok else "ADDED"
            elif old_ok:
                type_ = "DELETED"  # moved out of the selector: its new state, as DELETED
            else:
                return None
        if not self.shared:
            return self.encode(type_, dict(_decoded(rt, ev, ev.value)))
        key = ("line", self.shape, rt.api_version, type_)
        line: bytes | None = ev.memo.get(key)
        if line is None:
            line = ev.memo[key] = self.encode(type_, _decoded(rt, ev, ev.value))
        return line

    def _matched_before(self, ev: CachedEvent) -> bool:
        """Whether the version before `ev` (a CREATE or UPDATE) matched this stream's selector."""
        if ev.type != "UPDATE" or ev.prev_value is None:
            return False
        if ev.key in self.matching:
            return True
        if ev.created > self.since:  # this stream saw every version of the key, and the last did not match
            return False
        return bool(self.predicate(_decoded(self.rt, ev, ev.prev_value)))

    def direct(self, events: list[CachedEvent]) -> bool:
        """The watch cache's sink: write `events` to the connection now, unless it is congested or gone."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.protocol is None or self.protocol.writing_paused:
            return False
        if len(events) == 1:  # the common case, kept short: it runs once per watcher and event
            ev = events[0]
            key: Any = self.plain_chunk
            chunk: bytes | None = ev.memo.get(key) if key is not None else None
            if chunk is None:
                line = self.line(ev)
                if line is None:
                    return True
                if key is None:
                    key = ("chunk", line)  # the same line is the same HTTP chunk for every stream
                    chunk = ev.memo.get(key)
                if chunk is None:
                    chunk = ev.memo[key] = _chunk(line)
            tlswrite.write(transport, chunk)
            return True
        lines = [line for ev in events if (line := self.line(ev)) is not None]
        if lines:
            tlswrite.write(transport, _chunk(b"".join(lines)))
        return True


def _chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked HTTP/1.1 body (what aiohttp's writer frames)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _decoded(rt: ResourceType, ev: CachedEvent, value: bytes) -> Obj:
    """The event's object as `rt`, memoised per event and version: shared, so read-only."""
    key = (rt.api_version, value is ev.prev_value)
    got = cast(Obj | None, ev.memo.get(key))
    if got is None:
        got = ev.memo[key] = objects.decode(rt, KeyValue(ev.key, value, 0, ev.revision))
    return got


async def _pump(sub: Subscription, writer: _Writer, duration: float, bookmarks: bool, cache: WatchCache) -> None:
    deadline = time.monotonic() + duration
    protocol = writer.protocol if writer.shared and writer.transport is not None else None
    queue = sub.queue
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if protocol is not None and sub.sink is None and queue.empty() and not protocol.writing_paused:
            sub.sink = writer.direct  # caught up: the watch cache writes to the connection from now on
        try:
            if queue.empty():
                # asyncio.timeout, not wait_for: wait_for wraps the get in a new Task per event and watcher; a stream
                # without bookmarks sleeps until its end (1,000 such watchers would wake every 15 s for nothing)
                async with asyncio.timeout(min(remaining, BOOKMARK_EVERY) if bookmarks else remaining):
                    ev = await queue.get()
            else:
                ev = queue.get_nowait()
        except TimeoutError:
            if bookmarks and time.monotonic() < deadline:
                await writer.bookmark(max(sub.after, cache.revision))
            continue
        lines: list[bytes] = []
        while ev is not None:  # everything queued goes out in one write
            line = writer.line(ev)
            if line is not None:
                lines.append(line)
            if queue.empty():
                break
            ev = queue.get_nowait()
        if lines:
            await writer.send_raw(b"".join(lines))
        if ev is None:
            if isinstance(sub.error, CompactedError):
                await writer.error(_gone(sub.error.requested))
            return


def _ns_of(rt: ResourceType, key: str) -> str | None:
    if not rt.namespaced:
        return None
    return key[len(rt.storage_prefix) :].split("/", 1)[0]

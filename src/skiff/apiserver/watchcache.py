"""One storage watch shared by every API watcher: recent events, current state, consistent reads.

Like Kubernetes' watch cache: the apiserver follows the whole store with a
single storage watch, keeps the last events in memory, and fans each event
out to the watchers whose key prefix it matches. A watch from a
resourceVersion inside the window replays from memory; an older one falls
back to a watch on storage itself, which answers 410 if that history is
compacted. The window and its replay are `watchwindow`; handing each
batch to the subscribers (direct sinks, queues) is `watchfanout`.

The cache also keeps the current state -- every key under `/registry/` with
its latest value and revisions, per resource prefix, in key order, as plain
dicts of bytes and ints that the cyclic GC does not track -- seeded
by a list when it starts and then fed by the same watch. The state at an
older revision inside the window is the current one with the later events
undone (`cachelist`): the pages of a paginated list. Reads are served
from it the way Kubernetes does since 1.31 ("consistent reads from cache"):
`wait_fresh()` asks storage for its current revision (in-process for SQLite,
one round trip for etcd, shared by concurrent callers) and waits until the
cache has applied every event up to it, so a client always reads its own
writes and never anything older than what was acknowledged before its read
began. The storage watch covers every key, not only `/registry/`, so that
the cache's revision always reaches storage's. If the cache cannot catch up
in time (storage watch broken), `wait_fresh()` says so and callers read
storage directly.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from skiff.apiserver.cachelist import Page, list_page, state_before
from skiff.apiserver.watchfanout import ROOT, Subscription, aclose, bucket_of, fan_out
from skiff.apiserver.watchwindow import WINDOW, CachedEvent, EventWindow
from skiff.storage.interface import Backend, CompactedError, Event, FutureRevisionError, KeyValue
from skiff.storage.keys import prefix_end

log = logging.getLogger(__name__)
T = TypeVar("T")

WATCH_ROOT = ""  # the storage watch: every key, so the cache's revision keeps up with storage's
SEED_PAGE = 5000  # keys per storage list while seeding the state
FRESH_TIMEOUT = 3.0  # how long a read waits for the cache to catch up before reading storage instead


class _Bucket:
    """The live keys of one resource prefix, in storage order, with their values and revisions.

    Plain dicts of bytes and ints rather than a `KeyValue` per key: those were one long-lived GC-tracked
    object per write, walked by every young collection; a `KeyValue` is made when a key is read."""

    __slots__ = ("created", "keys", "modified", "values")

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.created: dict[str, int] = {}
        self.modified: dict[str, int] = {}
        self.keys: list[str] = []  # sorted: str order is code-point order, which is storage's byte order

    def put(self, kv: KeyValue) -> None:
        key = kv.key
        if key not in self.values:
            bisect.insort(self.keys, key)
        self.values[key] = kv.value
        self.created[key] = kv.create_revision
        self.modified[key] = kv.mod_revision

    def append(self, kv: KeyValue) -> None:
        """A key after every key held (seeding from a list in key order)."""
        self.keys.append(kv.key)
        self.values[kv.key] = kv.value
        self.created[kv.key] = kv.create_revision
        self.modified[kv.key] = kv.mod_revision

    def remove(self, key: str) -> None:
        if self.values.pop(key, None) is not None:
            del self.created[key], self.modified[key]
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]

    def get(self, key: str) -> KeyValue | None:
        value = self.values.get(key)
        return None if value is None else KeyValue(key, value, self.created[key], self.modified[key])

    def under(self, prefix: str) -> list[KeyValue]:
        keys = self.keys
        lo = bisect.bisect_left(keys, prefix)
        end = prefix_end(prefix)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end, lo)
        values, created, modified = self.values, self.created, self.modified
        return [KeyValue(k, values[k], created[k], modified[k]) for k in keys[lo:hi]]


_NO_KEYS = _Bucket()


class WatchCache:
    def __init__(self, backend: Backend, *, window: int = WINDOW) -> None:
        self.backend = backend
        self.window = EventWindow(window)  # every event with revision > window.floor
        self.revision = 0  # the newest revision seen (the state below is as of it)
        self.subscribers: set[Subscription] = set()
        self.buckets: dict[str, _Bucket] = {}  # resource prefix -> live keys
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        # reads waiting for the cache to reach a revision: (revision, tie-breaker, future)
        self._waiters: list[tuple[int, int, asyncio.Future[bool]]] = []
        # the same futures by deadline (arrival order), expired by one timer rather than a timer each
        self._deadlines: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._waiter_ids = itertools.count()
        # storage revision fetches shared by concurrent readers (when current_revision is a round trip)
        self._local_revision = bool(getattr(backend, "local_revision", False))
        self._next_fetch: asyncio.Future[int] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._warned = 0.0

    async def start(self) -> None:
        revision, items = await self._list_state()
        self._set_state(revision, items)
        self.window.reset(revision)
        self._task = asyncio.create_task(self._follow(), name="watch-cache")
        self.ready.set()

    async def close(self) -> None:
        self.ready.clear()
        for task in (self._task, self._fetcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sub in list(self.subscribers):
            sub.end(None)
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(False)  # closed: read storage
        self._waiters.clear()
        self._deadlines.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def _list_state(self) -> tuple[int, list[KeyValue]]:
        """Every key under ROOT at one revision (paged), retried if that revision is compacted meanwhile."""
        while True:
            try:
                res = await self.backend.list(ROOT, limit=SEED_PAGE)
                revision, items = res.revision, list(res.items)
                while res.more and res.items:
                    start = res.items[-1].key + "\x00"
                    res = await self.backend.list(ROOT, revision=revision, limit=SEED_PAGE, start_key=start)
                    items.extend(res.items)
                return revision, items
            except CompactedError:
                continue

    def _set_state(self, revision: int, items: list[KeyValue]) -> None:
        buckets: dict[str, _Bucket] = {}
        for kv in items:  # in key order: every append keeps the bucket sorted
            name = bucket_of(kv.key)
            if name is None:
                continue
            bucket = buckets.get(name)
            if bucket is None:
                bucket = buckets[name] = _Bucket()
            bucket.append(kv)
        self.buckets = buckets
        self.revision = revision

    async def _follow(self) -> None:
        while True:
            stream: AsyncIterator[list[Event]] | None = None
            try:
                stream = self.backend.watch(WATCH_ROOT, self.revision + 1)
                async for batch in stream:
                    self._apply(batch)
                await asyncio.sleep(0.5)  # storage ended the watch (closing): do not spin
            except asyncio.CancelledError:
                raise
            except CompactedError:
                log.warning("watch cache fell behind compaction; reloading the state from storage")
                await aclose(stream)
                stream = None
                await self._resync()
            except Exception:
                log.exception("storage watch failed; retrying")
                await asyncio.sleep(0.5)
            finally:
                await aclose(stream)

    async def _resync(self) -> None:
        """Events were lost: reload the state, forget the window, end every watcher (they re-watch)."""
        while True:
            try:
                revision, items = await self._list_state()
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cannot reload the watch cache from storage; retrying")
                await asyncio.sleep(0.5)
        self._set_state(revision, items)
        self.window.reset(revision)
        for sub in list(self.subscribers):
            sub.end(CompactedError(sub.after, revision))
        self.subscribers.clear()
        self._wake_waiters()

    def _apply(self, batch: list[Event]) -> None:
        """One storage batch: update the state and the window, fan out, wake the reads it satisfies."""
        fresh: list[CachedEvent] = []
        append = self.window.append
        for storage_event in batch:
            kv = storage_event.kv
            if kv.mod_revision <= self.revision:
                continue
            self._update_state(storage_event)
            prev = storage_event.prev
            prev_value = prev.value if prev is not None else None
            if prev is not None:
                prev_revision = prev.mod_revision
            else:
                prev_revision = 0 if storage_event.type == "CREATE" else -1
            append(kv.mod_revision, storage_event.type, kv.key, kv.value, prev_value, kv.create_revision, prev_revision)
            self.revision = kv.mod_revision
            fresh.append(
                CachedEvent(kv.mod_revision, storage_event.type, kv.key, kv.value, prev_value, kv.create_revision)
            )
        if fresh and self.subscribers:
            fan_out(self.subscribers, fresh)
        self._wake_waiters()

    def _update_state(self, ev: Event) -> None:
        name = bucket_of(ev.kv.key)
        if name is None:
            return
        bucket = self.buckets.get(name)
        if ev.type == "DELETE":
            if bucket is not None:
                bucket.remove(ev.kv.key)
            return
        if bucket is None:
            bucket = self.buckets[name] = _Bucket()
        bucket.put(ev.kv)

    # ------------------------------------------------------------ consistent reads
    async def wait_fresh(self) -> bool:
        """Wait until the cache holds everything storage had committed when this was called.

        False when the cache cannot answer (not started, or it did not catch
        up within FRESH_TIMEOUT): read storage instead. Storage errors while
        asking for the current revision propagate.
        """
        if not self.ready.is_set():
            return False
        revision = await self._storage_revision()
        if self.revision >= revision:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        heapq.heappush(self._waiters, (revision, next(self._waiter_ids), waiter))
        self._deadlines.append((loop.time() + FRESH_TIMEOUT, waiter))
        if self._expiry is None:
            self._expiry = loop.call_later(FRESH_TIMEOUT, self._expire)
        if await waiter:
            return True
        now = time.monotonic()
        if self.ready.is_set() and now - self._warned > 60:
            self._warned = now
            log.warning(
                "watch cache at revision %d did not reach storage's %d in %.0fs; reading storage",
                self.revision,
                revision,
                FRESH_TIMEOUT,
            )
        return False

    def _expire(self) -> None:
        """Reads that waited FRESH_TIMEOUT for the cache give up on it (they read storage)."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
            waiter = deadlines.popleft()[1]
            if not waiter.done():
                waiter.set_result(False)
        if len(self._waiters) > 1000:  # a stuck cache: drop the answered entries
            self._waiters = [entry for entry in self._waiters if not entry[2].done()]
            heapq.heapify(self._waiters)
        if deadlines:
            self._expiry = loop.call_at(deadlines[0][0], self._expire)

    def _wake_waiters(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.revision:
            waiter = heapq.heappop(waiters)[2]
            if not waiter.done():
                waiter.set_result(True)

    async def _storage_revision(self) -> int:
        """Storage's current revision, read after this call began.

        When that is a round trip (etcd), concurrent callers share one: a
        caller joins the next fetch that has not been sent yet, never one
        already in flight (it may predate writes the caller has seen).
        """
        if self._local_revision:
            return await self.backend.current_revision()
        if self._next_fetch is None:
            self._next_fetch = asyncio.get_running_loop().create_future()
            if self._fetcher is None or self._fetcher.done():
                self._fetcher = asyncio.create_task(self._fetch_revisions(), name="watch-cache revision")
        return await asyncio.shield(self._next_fetch)

    async def _fetch_revisions(self) -> None:
        while self._next_fetch is not None:
            future, self._next_fetch = self._next_fetch, None
            try:
                revision = await self.backend.current_revision()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # mark it retrieved, in case every caller was cancelled meanwhile
            else:
                future.set_result(revision)

    def get_current(self, key: str) -> KeyValue | None:
        """The live value of `key` as of `revision` (call after `wait_fresh()`)."""
        name = bucket_of(key)
        bucket = self.buckets.get(name) if name is not None else None
        return bucket.get(key) if bucket is not None else None

    def list_current(self, prefix: str) -> list[KeyValue] | None:
        """The live keys under `prefix` in key order, as of `revision`; None if the cache does not keep them."""
        name = bucket_of(prefix)
        if name is None:
            return None
        bucket = self.buckets.get(name)
        return bucket.under(prefix) if bucket is not None else []

    def list_page(
        self, prefix: str, revision: int, start: str | None, limit: int, select: Callable[[KeyValue], T | None]
    ) -> Page[T] | None:
        """Up to `limit` selected items under `prefix` from `start` on, as of `revision` (see `cachelist`).

        None when the cache cannot answer: it does not keep that prefix, `revision` is ahead of it, or
        the window no longer reaches back to `revision` (the caller reads storage)."""
        name = bucket_of(prefix)
        if name is None or revision > self.revision:
            return None
        if revision < self.revision and revision <= self.window.floor:
            return None  # storage compacted it, or the window dropped the events after it
        lo = max(prefix, start) if start else prefix
        hi = prefix_end(prefix)
        before = {} if revision == self.revision else state_before(self.window, revision, lo, hi)
        if before is None:
            return None
        bucket = self.buckets.get(name) or _NO_KEYS
        return list_page(bucket.keys, bucket.values, bucket.created, bucket.modified, before, lo, hi, limit, select)

    @property
    def floor(self) -> int:
        """Every event with a revision above this can be replayed from memory."""
        return self.window.floor

    async def subscribe(self, prefix: str, after: int) -> Subscription:
        """Events under `prefix` with revision > `after`; raises CompactedError if they are gone."""
        sub = Subscription(prefix, after)
        if after >= self.window.floor:
            if after > self.revision:
                current = await self.backend.current_revision()
                if after > current:
                    raise FutureRevisionError(after, current)
            replay = self.window.since(after, prefix)
            if replay:
                sub.put_many(replay)
            sub._unsubscribe = self.unsubscribe
            self.subscribers.add(sub)
            return sub
        # older than the window: read storage's own history (410 if compacted)
        compacted = await self.backend.compacted_revision()
        if after + 1 <= compacted:
            raise CompactedError(after, compacted)
        sub.follow(self.backend.watch(prefix, after + 1))
        return sub

    def mark_compacted(self, revision: int) -> None:
        """Storage history before `revision` is gone: watches from before it answer 410, as storage would."""
        window = self.window
        window.floor = max(window.floor, min(revision, self.revision))

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

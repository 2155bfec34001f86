"""One storage watch shared by every API watcher: recent events, current state, consistent reads.

Like Kubernetes' watch cache: the apiserver follows the whole store with a
single storage watch, keeps the last events in memory, and fans each event
out to the watchers whose key prefix it matches. A watch from a
resourceVersion inside the window replays from memory; an older one falls
back to a watch on storage itself, which answers 410 if that history is
compacted. Decoded objects and encoded lines are memoised per event so a
thousand watchers of one kind cost one decode and one encode per event.
Each storage batch is filtered once per distinct watch prefix and handed to
every watcher whole; a watcher that keeps up takes it through a `sink` that
writes straight to its connection (no task wake-up per watcher and event),
one that does not gets it queued (see `Subscription`).

The cache also keeps the current state -- every key under `/registry/` with
its latest value and revisions, per resource prefix, in key order -- seeded
by a list when it starts and then fed by the same watch. Reads are served
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
from dataclasses import dataclass, field
from typing import Any

from skiff.storage.interface import Backend, CompactedError, Event, FutureRevisionError, KeyValue
from skiff.storage.keys import prefix_end

log = logging.getLogger(__name__)

ROOT = "/registry/"  # the state kept: every key under this
WATCH_ROOT = ""  # the storage watch: every key, so the cache's revision keeps up with storage's
WINDOW = 20_000  # events kept in memory
MAX_BACKLOG = 100_000  # a watcher this far behind is closed; the client re-watches
SEED_PAGE = 5000  # keys per storage list while seeding the state
FRESH_TIMEOUT = 3.0  # how long a read waits for the cache to catch up before reading storage instead


@dataclass(eq=False, slots=True)
class CachedEvent:
    """One event of the window. `memo` (decoded objects, encoded lines, framed chunks) is shared by the watchers
    an event is fanned out to and emptied afterwards: kept for the window's 20,000 events, the decoded objects were
    tens of thousands of live dicts that every young collection of the cyclic GC walked (~40 ms pauses every few
    thousand writes). A watcher that reads an event later (a replay, a congested queue) encodes it again."""

    revision: int
    type: str  # CREATE | UPDATE | DELETE
    key: str
    value: bytes
    prev_value: bytes | None
    memo: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, ev: Event) -> CachedEvent:
        return cls(
            revision=ev.kv.mod_revision,
            type=ev.type,
            key=ev.kv.key,
            value=ev.kv.value,
            prev_value=ev.prev.value if ev.prev is not None else None,
        )


def bucket_of(key: str) -> str | None:
    """The resource prefix `/registry/<group>/<resource>/` a key (or a list prefix) falls in; None outside."""
    if not key.startswith(ROOT):
        return None
    group_end = key.find("/", len(ROOT))
    if group_end < 0:
        return None
    resource_end = key.find("/", group_end + 1)
    if resource_end < 0:
        return None
    return key[: resource_end + 1]


class _Bucket:
    """The live keys of one resource prefix: key -> latest KeyValue, and the keys in storage order."""

    __slots__ = ("items", "keys")

    def __init__(self) -> None:
        self.items: dict[str, KeyValue] = {}
        self.keys: list[str] = []  # sorted: str order is code-point order, which is storage's byte order

    def put(self, kv: KeyValue) -> None:
        if kv.key not in self.items:
            bisect.insort(self.keys, kv.key)
        self.items[kv.key] = kv

    def remove(self, key: str) -> None:
        if self.items.pop(key, None) is not None:
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]

    def under(self, prefix: str) -> list[KeyValue]:
        keys = self.keys
        lo = bisect.bisect_left(keys, prefix)
        end = prefix_end(prefix)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end, lo)
        items = self.items
        return [items[k] for k in keys[lo:hi]]


# Delivers events straight to a watcher's connection, synchronously; False (nothing written): queue them instead.
Sink = Callable[[list[CachedEvent]], bool]


class Subscription:
    """A watcher's events: a queue (`None` in it means the watch ended), or a sink while it keeps up.

    The watcher's task drains the queue. Once it is empty and the
    connection is not congested, the task may install a `sink`: from then on
    the cache hands each batch of events to the sink as it arrives, without
    waking the task. The first batch the sink refuses (connection congested
    or gone) removes it and goes to the queue, and so does everything after,
    until the task has written the queue out and installs the sink again --
    so events leave in order whichever way they go.
    """

    def __init__(self, prefix: str, after: int) -> None:
        self.prefix = prefix
        self.bucket = bucket_of(prefix)  # the resource its events come from (None: a wider prefix)
        self.after = after
        self.queue: asyncio.Queue[CachedEvent | None] = asyncio.Queue()
        self.error: Exception | None = None
        self.sink: Sink | None = None
        self._task: asyncio.Task[None] | None = None
        self._cache: WatchCache | None = None

    def put(self, ev: CachedEvent) -> None:
        if ev.revision > self.after:
            self._deliver([ev])

    def put_many(self, events: list[CachedEvent]) -> None:
        """Events in revision order (those at or below `after` are dropped)."""
        if events[0].revision <= self.after:
            events = [ev for ev in events if ev.revision > self.after]
            if not events:
                return
        self._deliver(events)

    def _deliver(self, events: list[CachedEvent]) -> None:
        self.after = events[-1].revision
        sink = self.sink
        if sink is not None:
            try:
                if sink(events):
                    return
            except Exception:  # the task finds out what is wrong when it writes the queue
                log.debug("watch sink failed; queueing", exc_info=True)
            self.sink = None
        if self.queue.qsize() + len(events) > MAX_BACKLOG:
            self.end(None)
            return
        for ev in events:
            self.queue.put_nowait(ev)

    def end(self, error: Exception | None) -> None:
        self.error = error
        self.sink = None
        self.queue.put_nowait(None)

    def close(self) -> None:
        self.sink = None
        if self._cache is not None:
            self._cache.unsubscribe(self)
        if self._task is not None:
            self._task.cancel()


class WatchCache:
    def __init__(self, backend: Backend, *, window: int = WINDOW) -> None:
        self.backend = backend
        self.events: deque[CachedEvent] = deque(maxlen=window)
        self.floor = 0  # every event with revision > floor is in `events`
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
        self.floor = revision
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
            bucket.items[kv.key] = kv
            bucket.keys.append(kv.key)
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
                await _aclose(stream)
                stream = None
                await self._resync()
            except Exception:
                log.exception("storage watch failed; retrying")
                await asyncio.sleep(0.5)
            finally:
                await _aclose(stream)

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
        self.events.clear()
        self._set_state(revision, items)
        self.floor = revision
        for sub in list(self.subscribers):
            sub.end(CompactedError(sub.after, revision))
        self.subscribers.clear()
        self._wake_waiters()

    def _apply(self, batch: list[Event]) -> None:
        """One storage batch: update the state and the window, fan out, wake the reads it satisfies."""
        fresh: list[CachedEvent] = []
        for storage_event in batch:
            if storage_event.kv.mod_revision <= self.revision:
                continue
            self._update_state(storage_event)
            ev = CachedEvent.of(storage_event)
            self._append(ev)
            fresh.append(ev)
        if fresh:
            self._fan_out(fresh)
            for ev in fresh:  # the memo served this fan-out (see CachedEvent)
                if ev.memo:
                    ev.memo = {}
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

    def _append(self, ev: CachedEvent) -> None:
        if len(self.events) == self.events.maxlen:
            self.floor = self.events[0].revision
        self.events.append(ev)
        self.revision = ev.revision

    def _fan_out(self, events: list[CachedEvent]) -> None:
        """Hand a batch's events to every subscriber, filtered once per distinct prefix.

        Events are grouped by resource first, so a subscriber of another resource costs a dict lookup and one
        of a whole resource takes its group as it is."""
        by_bucket: dict[str | None, list[CachedEvent]] = {}
        for ev in events:
            bucket = bucket_of(ev.key)
            group = by_bucket.get(bucket)
            if group is None:
                by_bucket[bucket] = [ev]
            else:
                group.append(ev)
        by_prefix: dict[str, list[CachedEvent]] = {}
        for sub in tuple(self.subscribers):
            prefix = sub.prefix
            matched = by_prefix.get(prefix)
            if matched is None:
                bucket = sub.bucket
                pool = events if bucket is None else by_bucket.get(bucket)
                if pool is None:
                    matched = []
                elif prefix == bucket:
                    matched = pool
                else:
                    matched = [ev for ev in pool if ev.key.startswith(prefix)]
                by_prefix[prefix] = matched
            if matched:
                sub.put_many(matched)

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
        return bucket.items.get(key) if bucket is not None else None

    def list_current(self, prefix: str) -> list[KeyValue] | None:
        """The live keys under `prefix` in key order, as of `revision`; None if the cache does not keep them."""
        name = bucket_of(prefix)
        if name is None:
            return None
        bucket = self.buckets.get(name)
        return bucket.under(prefix) if bucket is not None else []

    async def subscribe(self, prefix: str, after: int) -> Subscription:
        """Events under `prefix` with revision > `after`; raises CompactedError if they are gone."""
        sub = Subscription(prefix, after)
        if after >= self.floor:
            if after > self.revision:
                current = await self.backend.current_revision()
                if after > current:
                    raise FutureRevisionError(after, current)
            for ev in self._since(after):
                if ev.key.startswith(prefix):
                    sub.put(ev)
            sub._cache = self
            self.subscribers.add(sub)
            return sub
        # older than the window: read storage's own history (410 if compacted)
        compacted = await self.backend.compacted_revision()
        if after + 1 <= compacted:
            raise CompactedError(after, compacted)
        stream = self.backend.watch(prefix, after + 1)
        sub._task = asyncio.create_task(_pump(stream, sub), name=f"watch {prefix}@{after}")
        return sub

    def _since(self, after: int) -> list[CachedEvent]:
        if not self.events or self.events[-1].revision <= after:
            return []
        lo, hi = 0, len(self.events)
        while lo < hi:  # first event with revision > after
            mid = (lo + hi) // 2
            if self.events[mid].revision <= after:
                lo = mid + 1
            else:
                hi = mid
        return [self.events[i] for i in range(lo, len(self.events))]

    def mark_compacted(self, revision: int) -> None:
        """Storage history before `revision` is gone: watches from before it answer 410, as storage would."""
        self.floor = max(self.floor, min(revision, self.revision))

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)


async def _aclose(stream: AsyncIterator[list[Event]] | None) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def _pump(stream: AsyncIterator[list[Event]], sub: Subscription) -> None:
    try:
        async for batch in stream:
            for ev in batch:
                sub.put(CachedEvent.of(ev))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        sub.end(exc)
    finally:
        await _aclose(stream)

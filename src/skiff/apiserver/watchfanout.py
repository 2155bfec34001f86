"""Handing the watch cache's events to its subscribers: per-watcher queues, direct sinks, one batch at a time.

Why this exists: with a thousand watchers, what runs once per watcher and
event is the server's hottest code. Each storage batch is grouped by
resource once, filtered once per distinct watch prefix, and handed to every
subscriber whole. A subscriber that keeps up takes it through a `sink` that
writes straight to its connection (no task wake-up per watcher and event);
one that does not gets it queued, and its task writes the queue out (see
`Subscription`). A subscriber too far behind (MAX_BACKLOG) is ended; its
client re-watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from skiff.apiserver.watchwindow import CachedEvent
from skiff.storage.interface import Event

log = logging.getLogger(__name__)

ROOT = "/registry/"  # resource keys: /registry/<group>/<resource>/...
MAX_BACKLOG = 100_000  # a watcher this far behind is closed; the client re-watches

# Delivers events straight to a watcher's connection, synchronously; False (nothing written): queue them instead.
Sink = Callable[[list[CachedEvent]], bool]


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

    __slots__ = ("_task", "_unsubscribe", "after", "bucket", "error", "prefix", "queue", "sink")

    def __init__(self, prefix: str, after: int) -> None:
        self.prefix = prefix
        self.bucket = bucket_of(prefix)  # the resource its events come from (None: a wider prefix)
        self.after = after
        self.queue: asyncio.Queue[CachedEvent | None] = asyncio.Queue()
        self.error: Exception | None = None
        self.sink: Sink | None = None
        self._task: asyncio.Task[None] | None = None  # a watch older than the window: storage's, pumped in
        self._unsubscribe: Callable[[Subscription], None] | None = None

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
        if self._unsubscribe is not None:
            self._unsubscribe(self)
        if self._task is not None:
            self._task.cancel()

    def follow(self, stream: AsyncIterator[list[Event]]) -> None:
        """Feed this subscription from a storage watch (a start older than the cache's window)."""
        self._task = asyncio.create_task(_pump(stream, self), name=f"watch {self.prefix}@{self.after}")


def fan_out(subscribers: Iterable[Subscription], events: list[CachedEvent]) -> None:
    """Hand a batch's events (revision order) to every subscriber whose prefix they fall under.

    Events are grouped by resource first, so a subscriber of another resource costs a dict lookup and one
    of a whole resource takes its group as it is; a narrower prefix is filtered once for all who share it."""
    by_bucket: dict[str | None, list[CachedEvent]] = {}
    for ev in events:
        bucket = bucket_of(ev.key)
        group = by_bucket.get(bucket)
        if group is None:
            by_bucket[bucket] = [ev]
        else:
            group.append(ev)
    by_prefix: dict[str, list[CachedEvent]] = {}
    for sub in tuple(subscribers):
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


async def aclose(stream: AsyncIterator[list[Event]] | None) -> None:
    """Close a storage watch stream, quietly (it may be broken already)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


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
        await aclose(stream)

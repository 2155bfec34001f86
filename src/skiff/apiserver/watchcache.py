"""One storage watch shared by every API watcher, with a window of recent events.

Like Kubernetes' watch cache: the apiserver follows the whole registry with a
single storage watch, keeps the last events in memory, and fans each event
out to the watchers whose key prefix it matches. A watch from a
resourceVersion inside the window replays from memory; an older one falls
back to a watch on storage itself, which answers 410 if that history is
compacted. Decoded objects and encoded lines are memoised per event so a
thousand watchers of one kind cost one decode and one encode per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from skiff.storage.interface import Backend, CompactedError, Event

log = logging.getLogger(__name__)

ROOT = "/registry/"
WINDOW = 20_000  # events kept in memory
MAX_BACKLOG = 100_000  # a watcher this far behind is closed; the client re-watches


@dataclass(eq=False)
class CachedEvent:
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


class Subscription:
    """A watcher's queue of events; `None` in the queue means the watch ended (error or shutdown)."""

    def __init__(self, prefix: str, after: int) -> None:
        self.prefix = prefix
        self.after = after
        self.queue: asyncio.Queue[CachedEvent | None] = asyncio.Queue()
        self.error: Exception | None = None
        self._task: asyncio.Task[None] | None = None
        self._cache: WatchCache | None = None

    def put(self, ev: CachedEvent) -> None:
        if ev.revision <= self.after:
            return
        self.after = ev.revision
        if self.queue.qsize() > MAX_BACKLOG:
            self.end(None)
            return
        self.queue.put_nowait(ev)

    def end(self, error: Exception | None) -> None:
        self.error = error
        self.queue.put_nowait(None)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.unsubscribe(self)
        if self._task is not None:
            self._task.cancel()


class WatchCache:
    def __init__(self, backend: Backend, *, window: int = WINDOW) -> None:
        self.backend = backend
        self.events: deque[CachedEvent] = deque(maxlen=window)
        self.floor = 0  # every event with revision > floor is in `events`
        self.revision = 0  # the newest revision seen
        self.subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.revision = self.floor = await self.backend.current_revision()
        self._task = asyncio.create_task(self._follow(), name="watch-cache")
        self.ready.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in list(self.subscribers):
            sub.end(None)

    async def _follow(self) -> None:
        while True:
            try:
                stream = self.backend.watch(ROOT, self.revision + 1)
                async for batch in stream:
                    for ev in batch:
                        self._append(CachedEvent.of(ev))
            except asyncio.CancelledError:
                raise
            except CompactedError:
                log.warning("watch cache fell behind compaction; restarting from the current revision")
                self._reset(await self.backend.current_revision())
            except Exception:
                log.exception("storage watch failed; retrying")
                await asyncio.sleep(0.5)

    def _reset(self, revision: int) -> None:
        self.events.clear()
        self.revision = self.floor = revision
        for sub in list(self.subscribers):
            sub.end(CompactedError(sub.after, revision))
        self.subscribers.clear()

    def _append(self, ev: CachedEvent) -> None:
        if ev.revision <= self.revision:
            return
        if len(self.events) == self.events.maxlen:
            self.floor = self.events[0].revision
        self.events.append(ev)
        self.revision = ev.revision
        for sub in self.subscribers:
            if ev.key.startswith(sub.prefix):
                sub.put(ev)

    async def subscribe(self, prefix: str, after: int) -> Subscription:
        """Events under `prefix` with revision > `after`; raises CompactedError if they are gone."""
        sub = Subscription(prefix, after)
        if after >= self.floor:
            if after > self.revision:
                current = await self.backend.current_revision()
                if after > current:
                    from skiff.storage.interface import FutureRevisionError

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
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()

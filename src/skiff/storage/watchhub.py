"""In-memory fan-out of committed events to many watchers, with history replay.

A backend that owns its log (SQLite) calls `publish()` on the event loop
after every commit, in revision order. Watchers are grouped by prefix so one
commit costs one filter pass per *distinct* prefix plus one list append per
watcher -- a thousand watchers on "/registry/pods/" share one filtered list.

A watch starting in the past first registers itself (so every later commit
is buffered for it), then replays the log through the backend's `replay`
callback page by page, then drains the buffer. Events at or below the last
revision already delivered are dropped, which makes the hand-over from replay
to live delivery gap-free and duplicate-free. A watcher whose consumer falls
too far behind has its buffer dropped and catches up from the log again the
same way, so a stuck consumer costs bounded memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from skiff.storage.interface import Event

# (prefix, from_revision) -> (events with revision >= from_revision in order, reached_end_of_log)
ReplayFn = Callable[[str, int], Awaitable[tuple[list[Event], bool]]]

DEFAULT_MAX_PENDING = 50_000


class _Watcher:
    __slots__ = ("closed", "overflowed", "pending", "pending_count", "prefix", "wakeup")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pending: deque[list[Event]] = deque()
        self.pending_count = 0
        self.overflowed = False
        self.closed = False
        self.wakeup = asyncio.Event()

    def push(self, events: list[Event], max_pending: int) -> None:
        self.pending_count += len(events)
        if self.pending_count > max_pending:
            # Drop the buffer; the watch loop re-reads the gap from the log.
            self.pending.clear()
            self.pending_count = 0
            self.overflowed = True
        else:
            self.pending.append(events)
        self.wakeup.set()

    def take(self, from_revision: int) -> list[Event]:
        batch = [e for events in self.pending for e in events if e.kv.mod_revision >= from_revision]
        self.pending.clear()
        self.pending_count = 0
        return batch


class WatchHub:
    """Fan-out point; all methods must be called on the event loop thread."""

    def __init__(self, last_revision: int = 0, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._groups: dict[str, set[_Watcher]] = {}
        self._max_pending = max_pending
        self._closed = False
        self.last_published = last_revision

    @property
    def watcher_count(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def publish(self, events: list[Event]) -> None:
        """Deliver one commit's events (revision-ordered) to every matching watcher."""
        if not events:
            return
        self.last_published = events[-1].kv.mod_revision
        for prefix, watchers in self._groups.items():
            matched = events if not prefix else [e for e in events if e.kv.key.startswith(prefix)]
            if matched:
                for watcher in watchers:
                    watcher.push(matched, self._max_pending)

    def close(self) -> None:
        """End every watch (their iterators finish after what is already buffered)."""
        self._closed = True
        for watchers in self._groups.values():
            for watcher in watchers:
                watcher.closed = True
                watcher.wakeup.set()

    def _register(self, prefix: str) -> _Watcher:
        watcher = _Watcher(prefix)
        watcher.closed = self._closed
        self._groups.setdefault(prefix, set()).add(watcher)
        return watcher

    def _unregister(self, watcher: _Watcher) -> None:
        group = self._groups.get(watcher.prefix)
        if group is not None:
            group.discard(watcher)
            if not group:
                del self._groups[watcher.prefix]

    async def watch(self, prefix: str, start_revision: int, replay: ReplayFn) -> AsyncIterator[list[Event]]:
        """Events under `prefix` from `start_revision` on (<= 0: only what commits from now on)."""
        watcher = self._register(prefix)
        try:
            if start_revision <= 0:
                next_rev = self.last_published + 1
                need_replay = False
            else:
                next_rev = start_revision
                # replay also validates start_revision against the compacted revision
                need_replay = True
            while True:
                if need_replay or watcher.overflowed:
                    need_replay = watcher.overflowed = False
                    done = False
                    while not done:
                        events, done = await replay(prefix, next_rev)
                        if events:
                            next_rev = events[-1].kv.mod_revision + 1
                            yield events
                    continue
                if watcher.pending:
                    batch = watcher.take(next_rev)
                    if batch:
                        next_rev = batch[-1].kv.mod_revision + 1
                        yield batch
                    continue
                if watcher.closed:
                    return
                watcher.wakeup.clear()
                await watcher.wakeup.wait()
        finally:
            self._unregister(watcher)

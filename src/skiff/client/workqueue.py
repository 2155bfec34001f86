"""The queue of keys between informer handlers and reconcile workers.

Semantics of client-go's `workqueue` (rate-limiting, delaying, basic):

- `add(key)` while the key waits in the queue does nothing (deduplication:
  ten changes to one object before a worker gets to it are one reconcile);
- a key is handed to one worker at a time: re-added while being processed,
  it is queued again only when that worker calls `done(key)`;
- `add_after(key, delay)` adds later (an earlier request for the same key wins);
- `add_rate_limited(key)` adds after the rate limiter's delay (per-key
  exponential backoff plus an overall token bucket), `forget(key)` clears the
  key's failure history, `num_requeues(key)` reads it;
- `shutdown()` wakes every waiting `get()` with `ShutDown`; queued keys are
  dropped (a level-triggered controller re-reads everything when it restarts).

Time is the event loop's (`loop.time()`, `loop.call_at`), so a test can
control it by replacing the loop's clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

from skiff.client.ratelimit import RateLimiter, default_controller_rate_limiter

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down: workers should return."""


class WorkQueue(Generic[T]):
    """An asyncio work queue of hashable keys (usually `namespace/name` strings)."""

    def __init__(self, *, name: str = "", rate_limiter: RateLimiter | None = None) -> None:
        self.name = name
        self.rate_limiter = rate_limiter or default_controller_rate_limiter()
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()  # wants processing (queued, or re-added while processing)
        self._processing: set[T] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timers: dict[T, asyncio.TimerHandle] = {}
        self._ready_at: dict[T, float] = {}
        self._shutting_down = False

    def __len__(self) -> int:
        """Keys waiting to be handed out (not counting those in processing or waiting for a delay)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def processing(self) -> set[T]:
        return set(self._processing)

    def waiting(self) -> set[T]:
        """Keys scheduled by `add_after` / `add_rate_limited` that are not due yet."""
        return set(self._ready_at)

    # --- basic queue --------------------------------------------------------------------------
    def add(self, key: T) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._wake_one()

    async def get(self) -> T:
        """The next key, waiting for one; raises `ShutDown` once the queue is shut down."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken for a key we will not take: pass the turn on
                else:
                    self._remove_waiter(waiter)
                raise
        if self._shutting_down:
            raise ShutDown(self.name)
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: T) -> None:
        """The worker finished `key`; if it was re-added meanwhile, it is queued again now."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._wake_one()

    def shutdown(self) -> None:
        """Stop: ignore further adds, drop waiting keys, and make every `get()` raise `ShutDown`."""
        self._shutting_down = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._ready_at.clear()
        self._queue.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[T]:
        """Keys until shutdown (remember to call `done` for each)."""
        while True:
            try:
                yield await self.get()
            except ShutDown:
                return

    # --- delaying -----------------------------------------------------------------------------
    def add_after(self, key: T, delay: float) -> None:
        """Add `key` once `delay` seconds have passed; a pending earlier add of the same key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready = loop.time() + delay
        pending = self._ready_at.get(key)
        if pending is not None and pending <= ready:
            return
        if key in self._timers:
            self._timers.pop(key).cancel()
        self._ready_at[key] = ready
        self._timers[key] = loop.call_at(ready, self._fire, key)

    def _fire(self, key: T) -> None:
        self._timers.pop(key, None)
        self._ready_at.pop(key, None)
        self.add(key)

    # --- rate limiting ------------------------------------------------------------------------
    def add_rate_limited(self, key: T) -> None:
        """Add `key` after the rate limiter's delay for it (one more failure on its record)."""
        if self._shutting_down:
            return
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: T) -> None:
        """Clear `key`'s failure history (call after a successful reconcile)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: T) -> int:
        return self.rate_limiter.num_requeues(key)

    # --- internals ----------------------------------------------------------------------------
    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _remove_waiter(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

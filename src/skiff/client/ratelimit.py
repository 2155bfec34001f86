"""How long to wait before trying again: per-item backoff, a token bucket, and reconnect backoff.

The work queue asks a `RateLimiter` when a failed key may be retried. The
default, as client-go's `DefaultControllerRateLimiter`, is the larger of a
per-item exponential backoff (5 ms, 10 ms, 20 ms... capped at 1000 s, reset
by `forget`) and an overall token bucket (10 per second, bursts of 100) so
that many failing keys together cannot hammer the server.

`Backoff` is the simpler jittered exponential delay that informers and the
leader elector use between reconnects.

Time comes from a clock function (default: the running event loop's clock),
so tests can drive it by hand.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Hashable
from typing import Protocol

Clock = Callable[[], float]


def loop_clock() -> float:
    """The running event loop's time (what `call_at` and `asyncio.sleep` use); monotonic time outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds to wait before `item` may be retried (records one more failure of it)."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking `item`: it succeeded."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many failures of `item` are on record."""
        ...


class ItemExponentialFailureRateLimiter:
    """base * 2**failures per item, capped at `max_delay`."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        if exp > 64:  # 2**64 * base is beyond any cap; avoid float overflow
            return self.max_delay
        return min(self.base_delay * 2.0**exp, self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """A token bucket shared by all items: `qps` tokens a second, at most `burst` saved up."""

    def __init__(self, qps: float = 10.0, burst: int = 100, *, clock: Clock = loop_clock) -> None:
        self.qps = qps
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, item: Hashable) -> float:
        now = self.clock()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0  # reserve a token, possibly in the future
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest wait any of several limiters asks for."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(*, clock: Clock = loop_clock) -> RateLimiter:
    """client-go's default: max(per-item 5 ms → 1000 s, bucket of 10 qps / burst 100)."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock=clock))


class Backoff:
    """Jittered exponential delays for reconnect loops: initial, x factor each time, capped; `reset` on success."""

    def __init__(
        self, initial: float = 0.8, maximum: float = 30.0, *, factor: float = 2.0, jitter: float = 0.2
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return delay * (1 + random.uniform(0, self.jitter))

    def reset(self) -> None:
        self._next = self.initial

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())

"""Autoscaler arithmetic, pure: how many instances a function wants and which instance takes a call.

Concurrency-based, as Knative's KPA. Each instance takes `concurrency` calls at once; the load is
the calls in flight plus the calls waiting, averaged over time (`ConcurrencyWindow`) on two
windows: the stable window (`stableWindow`, 60 s by default) and the panic window
(`panicWindowPercentage` of it, 10 % by default: 6 s).

- Normally the function wants the stable window's average concurrency divided by `concurrency`,
  rounded up: a dip does not stop instances a moment before the next wave needs them.
- When the panic window's average reaches `panicThresholdPercentage` (200 %) of the capacity of
  the instances serving, the function panics: it wants the panic window's count, never fewer than
  it has (no scale-down while panicking), until a whole stable window has passed without the
  threshold being reached again.
- Calls held with no free instance always get instances at once (the activator's part: a cold or
  burst call is never made to wait for an average to catch up), up to `maxScale`.
- To zero only after `idleTimeout` seconds without calls, and not while panicking; never below
  `minScale`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    in_flight: int
    waiting: int


@dataclass(frozen=True)
class Policy:
    """A function's scaling settings (from its spec)."""

    concurrency: int = 10
    min_scale: int = 0
    max_scale: int = 5
    idle_timeout: float = 30.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0

    @property
    def panic_window(self) -> float:
        return self.stable_window * self.panic_window_percentage / 100.0

    def clamp(self, n: int) -> int:
        return max(self.min_scale, min(self.max_scale, n))


@dataclass(frozen=True)
class Observation:
    """What the autoscaler sees of a function at one moment."""

    now: float
    ready: int  # instances serving
    demand: int  # calls in flight + waiting, now
    stable: float  # average concurrency over the stable window
    panic: float  # average concurrency over the panic window
    idle_for: float  # seconds since the last call ended (or began)


@dataclass(frozen=True)
class Decision:
    desired: int
    panic_until: float  # while now < panic_until the function panics; 0.0: not panicking

    def panicking(self, now: float) -> bool:
        return now < self.panic_until


def decide(obs: Observation, policy: Policy, panic_until: float = 0.0) -> Decision:
    """The instance count to move to, and the panic mode carried to the next decision."""
    per = max(1, policy.concurrency)
    if obs.panic / (max(1, obs.ready) * per) >= policy.panic_threshold_percentage / 100.0:
        panic_until = obs.now + policy.stable_window  # (re)enter panic: held for a stable window
    elif panic_until and obs.now >= panic_until:
        panic_until = 0.0
    panicking = obs.now < panic_until
    if panicking:
        want = max(obs.ready, math.ceil(obs.panic / per))
    else:
        want = math.ceil(obs.stable / per)
    want = max(want, math.ceil(obs.demand / per))  # held calls: instances at once
    if obs.demand == 0 and not panicking and obs.idle_for >= policy.idle_timeout:
        want = 0
    elif want == 0 and obs.ready > 0:
        want = 1  # calls within the idle timeout: keep one
    return Decision(policy.clamp(want), panic_until)


def desired_instances(load: Load, *, concurrency: int, min_scale: int, max_scale: int) -> int:
    """The instances the calls of this moment need (no windows): at least one while any call is here."""
    demand = load.in_flight + load.waiting
    wanted = math.ceil(demand / max(1, concurrency))
    if demand > 0:
        wanted = max(wanted, 1)
    return max(min_scale, min(max_scale, wanted))


class ConcurrencyWindow:
    """A function's concurrency over time (a step function: `record` at every change) and its
    time-weighted average over the last seconds. O(1) per change: the running integral is kept,
    with a checkpoint every `resolution` seconds for the window's start (interpolated between)."""

    def __init__(self, now: float, *, keep: float = 60.0, resolution: float = 0.05) -> None:
        self.keep = keep
        self.resolution = resolution
        self.value = 0
        self.last = now
        self.area = 0.0
        self.times: list[float] = [now]
        self.areas: list[float] = [0.0]

    def record(self, now: float, value: int) -> None:
        if now > self.last:
            self.area += self.value * (now - self.last)
            self.last = now
        self.value = value
        if now - self.times[-1] >= self.resolution:
            self.times.append(now)
            self.areas.append(self.area)
            if len(self.times) > 64 and self.times[32] < now - self.keep - 1.0:  # drop old checkpoints
                del self.times[:32], self.areas[:32]

    def _area_at(self, t: float) -> float:
        if t >= self.last:
            return self.area + self.value * (t - self.last)
        if t <= self.times[0]:
            return self.areas[0]
        i = bisect.bisect_right(self.times, t) - 1  # checkpoint i <= t < checkpoint i+1 (or last)
        t1, a1 = (self.times[i + 1], self.areas[i + 1]) if i + 1 < len(self.times) else (self.last, self.area)
        t0, a0 = self.times[i], self.areas[i]
        return a0 + (a1 - a0) * (t - t0) / (t1 - t0) if t1 > t0 else a0

    def average(self, now: float, window: float) -> float:
        """Mean concurrency over [now - window, now] (zero before the first record)."""
        if window <= 0:
            return float(self.value)
        return max(0.0, (self._area_at(now) - self._area_at(now - window)) / window)


def pick_least_loaded(in_flight: Sequence[int], concurrency: int) -> int | None:
    """Index of the instance with the fewest calls in flight that still has room, or None."""
    best: int | None = None
    for i, n in enumerate(in_flight):
        if n < concurrency and (best is None or n < in_flight[best]):
            best = i
    return best


def gb_seconds(memory_bytes: int, duration: float) -> float:
    """Billing: the memory limit (GiB) times the duration (seconds)."""
    return memory_bytes / 2**30 * duration

"""Autoscaler arithmetic, pure: how many instances a function wants and which instance takes a call.

Concurrency-based, as Knative's KPA: each instance takes `concurrency` calls at once; the demand is
the calls in flight plus the calls waiting. The desired count is the demand divided by the
per-instance capacity, rounded up, clamped to [minScale, maxScale], and never below one while any
call is in flight or waiting (scale from zero).

Two windows, as the KPA's: going up follows the demand of the moment at once (the panic side: a
burst is never made to wait for an average); going down follows the average concurrency over the
stable window (the function's idle timeout), so a dip does not stop instances a moment before the
next wave needs them; to zero only after the idle timeout with nothing in flight or waiting.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    in_flight: int
    waiting: int


def desired_instances(load: Load, *, concurrency: int, min_scale: int, max_scale: int) -> int:
    demand = load.in_flight + load.waiting
    wanted = math.ceil(demand / max(1, concurrency))
    if demand > 0:
        wanted = max(wanted, 1)
    return max(min_scale, min(max_scale, wanted))


class ConcurrencyWindow:
    """Samples of a function's concurrency (in flight + waiting) and their average over a window."""

    def __init__(self, keep: float = 600.0) -> None:
        self.keep = keep
        self.samples: deque[tuple[float, int]] = deque()

    def record(self, now: float, value: int) -> None:
        self.samples.append((now, value))
        while self.samples and self.samples[0][0] < now - self.keep:
            self.samples.popleft()

    def average(self, now: float, window: float) -> float | None:
        """The mean of the samples of the last `window` seconds; None before the window is covered."""
        if not self.samples or self.samples[0][0] > now - window:
            return None
        values = [v for t, v in self.samples if t >= now - window]
        return sum(values) / len(values) if values else None


def scale_to(
    load: Load,
    current: int,
    *,
    idle_for: float,
    idle_timeout: float,
    concurrency: int,
    min_scale: int,
    max_scale: int,
    stable_average: float | None = None,
) -> int:
    """The instance count to move to: up at once to the desired count; down to what the stable
    window's average concurrency needs; to the idle count (zero if minScale allows) only after
    `idle_timeout` seconds without calls."""
    limits = {"concurrency": concurrency, "min_scale": min_scale, "max_scale": max_scale}
    want = desired_instances(load, **limits)
    if want >= current:
        return want
    if idle_for >= idle_timeout and load.in_flight == 0 and load.waiting == 0:
        return want
    if stable_average is not None:
        stable = desired_instances(Load(math.ceil(stable_average), 0), **limits)
        return max(want, min(current, max(stable, 1)))
    return current


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

"""Autoscaler arithmetic, pure: how many instances a function wants and which instance takes a call.

Concurrency-based, as Knative's KPA: each instance takes `concurrency` calls at once; the demand is
the calls in flight plus the calls waiting. The desired count is the demand divided by the
per-instance capacity, rounded up, clamped to [minScale, maxScale], and never below one while any
call is in flight or waiting (scale from zero). Scale-down to zero happens only after the idle
timeout with nothing in flight.
"""

from __future__ import annotations

import math
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


def scale_to(
    load: Load, current: int, *, idle_for: float, idle_timeout: float, concurrency: int, min_scale: int, max_scale: int
) -> int:
    """The instance count to move to: up at once to the desired count, down only after `idle_timeout`
    seconds without calls (then straight to the desired count, zero if minScale allows)."""
    want = desired_instances(load, concurrency=concurrency, min_scale=min_scale, max_scale=max_scale)
    if want >= current:
        return want
    if idle_for >= idle_timeout and load.in_flight == 0 and load.waiting == 0:
        return want
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

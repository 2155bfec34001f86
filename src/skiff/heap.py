"""Garbage-collector settings for skiff's long-running processes, which hold large caches of decoded objects.

Why this exists: CPython starts a young-generation collection every 700
allocations and, as the heap grows, full collections that walk every live
object. A component holding thousands of decoded pods (an informer's cache,
the scheduler's) pays for that on every object it decodes: measured on a
~2 KB pod, one `orjson.loads` costs ~12 us with a small heap and ~90-130 us
while the cache grows by default rules, ~20 us with the thresholds below.
Decoded JSON holds no reference cycles, so reference counting frees it
anyway; the collector is only there for the rare cycle, and still runs.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between young-generation collections (CPython: 700)
OLDER_THRESHOLDS = (50, 100)  # young collections per middle one, middle ones per full one (CPython: 10, 10)


def tune_for_caches() -> None:
    """Freeze what is loaded now (modules, configuration: later collections skip it) and collect far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)

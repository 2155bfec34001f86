"""Pages of a list from the watch cache, every page consistent at the list's revision.

Why this exists: kubectl sends `limit=500` on every `get` and informers list
with a limit too; each page of one list must show the store as of the first
page's revision, even when later pages are asked for after more writes.
Reading storage for each page (a range at that revision and a COUNT) cost
several times an unpaginated list from the cache. Kubernetes 1.33+
(ListFromCacheSnapshot, KEP-4988) serves these pages from snapshots of its
watch cache, kept for the window of its watch cache.

Here no snapshot is copied: the state at revision R is the cache's current
state with the events after R undone, read from the event window
(`watchwindow`), where each event keeps the value and revision it replaced.
It reaches back exactly as far as the window -- the bound Kubernetes keeps
snapshots for -- and costs no memory of its own. Before the window's floor
(or when an event's previous value is not known) `state_before` answers
None and the caller reads storage, which gives the same page or 410 Gone.

The functions are pure: they read the current keys (sorted) and their
values, and the window, and never await, so one page is read from one state.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from skiff.apiserver.watchwindow import EventWindow
from skiff.storage.interface import KeyValue

T = TypeVar("T")

# a key's value at the list's revision: (value, create revision, mod revision), or None if it did not exist
Before = tuple[bytes, int, int] | None


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]  # the selected items, at most `limit`
    last_key: str  # the last key examined ("" if none): the next page starts after it
    more: bool  # keys remain after last_key
    remaining: int  # how many keys remain after last_key (selected or not)


def state_before(window: EventWindow, revision: int, lo: str, hi: str | None) -> dict[str, Before] | None:
    """For each key in [lo, hi) changed after `revision`, its value as of `revision` (None: absent then).

    None if the window cannot tell: `revision` is below its floor, or an event did not carry the
    value it replaced. Keys not in the answer are as the current state has them."""
    if revision < window.floor:
        return None
    revisions = window.revisions
    start = bisect.bisect_right(revisions, revision)
    keys, types, prev_values, prev_revisions, created = (
        window.keys,
        window.types,
        window.prev_values,
        window.prev_revisions,
        window.created,
    )
    before: dict[str, Before] = {}
    for i in range(start, len(revisions)):
        key = keys[i]
        if key < lo or (hi is not None and key >= hi) or key in before:
            continue  # outside the list, or an older event on the key already told its value then
        if types[i] == "CREATE":
            before[key] = None
            continue
        prev_value, prev_revision = prev_values[i], prev_revisions[i]
        if prev_value is None or prev_revision <= 0:
            return None
        before[key] = (prev_value, created[i], prev_revision)
    return before


def list_page(
    keys: Sequence[str],
    values: Mapping[str, bytes],
    created: Mapping[str, int],
    modified: Mapping[str, int],
    before: Mapping[str, Before],
    lo: str,
    hi: str | None,
    limit: int,
    select: Callable[[KeyValue], T | None],
) -> Page[T]:
    """Up to `limit` (0: all) selected items from the keys in [lo, hi) as of the list's revision.

    `keys` (sorted), `values`, `created` and `modified` are the current state; `before` is
    `state_before()` for the same range. `select` returns the item for a key's value, or None
    when a selector leaves it out: the limit counts selected items, as Kubernetes' does."""
    i = bisect.bisect_left(keys, lo)
    j = len(keys) if hi is None else bisect.bisect_left(keys, hi, i)
    if before:
        revived = sorted(key for key, at in before.items() if at is not None)  # only keys in range are in `before`
        replaced = sum(1 for key in before if key in values)
        total = j - i - replaced + len(revived)
        ordered: Iterator[str] = heapq.merge((keys[x] for x in range(i, j) if keys[x] not in before), revived)
    else:
        total = j - i
        ordered = (keys[x] for x in range(i, j))
    items: list[T] = []
    examined = 0
    last_key = ""
    more = False
    for key in ordered:
        if limit and len(items) >= limit:
            more = True
            break
        examined += 1
        last_key = key
        at = before.get(key) if before else None
        if at is not None:
            kv = KeyValue(key, at[0], at[1], at[2])
        else:
            kv = KeyValue(key, values[key], created[key], modified[key])
        item = select(kv)
        if item is not None:
            items.append(item)
    return Page(items, last_key, more, total - examined)

"""The watch cache's recent events, kept as data the cyclic GC never walks, and replay from a resourceVersion.

Why this exists: a watch from a resourceVersion inside the last WINDOW
events replays from memory instead of storage. Kept as one object per
event (a `CachedEvent`, with the `KeyValue` behind it), the window was
tens of thousands of long-lived GC-tracked objects, most of every young
collection's work (~20-40 ms pauses under a create load; bench/RESULTS.md).
Here the window is parallel lists of revisions, types, keys, values,
previous values, create revisions and the previous values' revisions --
ints, strs and bytes, which the GC does not track --
and a `CachedEvent` is made only when someone reads an event: the fan-out
of a fresh batch, or a watcher replaying from an older revision.

`floor` is the revision below which the window cannot answer: every event
with a revision above it is here. A watch from below it goes to storage's
own history (410 Gone once storage compacted it). The same events, read
backwards, give the state at any revision from `floor` on: `cachelist`
serves the pages of a list consistent at its first page's revision so.
"""

from __future__ import annotations

import bisect
from typing import Any

from skiff.storage.interface import Event

WINDOW = 20_000  # events kept in memory (at least; up to an eighth more before the oldest are dropped)


class CachedEvent:
    """One event as watchers get it. `memo` (decoded objects, encoded lines, framed chunks) is shared by the
    watchers an event is fanned out to, so a thousand watchers cost one decode and one encode; a watcher that
    reads the event later (a replay, a congested queue) may encode it again."""

    __slots__ = ("created", "key", "memo", "prev_value", "revision", "type", "value")

    def __init__(
        self, revision: int, type: str, key: str, value: bytes, prev_value: bytes | None, created: int = 0
    ) -> None:
        self.revision = revision
        self.type = type  # CREATE | UPDATE | DELETE
        self.key = key
        self.value = value
        self.prev_value = prev_value
        self.created = created  # the key's create revision (0: not known)
        self.memo: dict[Any, Any] = {}

    @classmethod
    def of(cls, ev: Event) -> CachedEvent:
        kv = ev.kv
        prev = ev.prev.value if ev.prev is not None else None
        return cls(kv.mod_revision, ev.type, kv.key, kv.value, prev, kv.create_revision)

    def __repr__(self) -> str:
        return f"CachedEvent({self.type} {self.key}@{self.revision})"


class EventWindow:
    """The last `size` events (or a few more), oldest first, as parallel lists."""

    __slots__ = ("created", "floor", "keys", "prev_revisions", "prev_values", "revisions", "size", "types", "values")

    def __init__(self, size: int = WINDOW, floor: int = 0) -> None:
        self.size = size
        self.floor = floor  # every event with revision > floor is kept
        self.revisions: list[int] = []
        self.types: list[str] = []
        self.keys: list[str] = []
        self.values: list[bytes] = []
        self.prev_values: list[bytes | None] = []
        self.created: list[int] = []
        # the mod revision of the value each event replaced: 0 for a CREATE (nothing before), -1 if not known
        self.prev_revisions: list[int] = []

    def __len__(self) -> int:
        return len(self.revisions)

    def append(
        self,
        revision: int,
        type: str,
        key: str,
        value: bytes,
        prev_value: bytes | None,
        created: int = 0,
        prev_revision: int = -1,
    ) -> None:
        """A newer event than any kept (revisions only grow)."""
        self.revisions.append(revision)
        self.types.append(type)
        self.keys.append(key)
        self.values.append(value)
        self.prev_values.append(prev_value)
        self.created.append(created)
        self.prev_revisions.append(prev_revision)
        if len(self.revisions) > self.size + (self.size >> 3):  # drop the oldest in one go, not one per append
            self._drop(len(self.revisions) - self.size)

    def _drop(self, count: int) -> None:
        self.floor = self.revisions[count - 1]
        for column in self._columns():
            del column[:count]

    def _columns(self) -> tuple[list[Any], ...]:
        return (self.revisions, self.types, self.keys, self.values, self.prev_values, self.created, self.prev_revisions)

    def reset(self, floor: int) -> None:
        """Forget every event: nothing at or below `floor` can be replayed from here."""
        for column in self._columns():
            column.clear()
        self.floor = floor

    def since(self, after: int, prefix: str) -> list[CachedEvent]:
        """The kept events with revision > `after` whose key starts with `prefix`, oldest first.

        The caller checks `after >= floor` first: below it, events are missing."""
        revisions = self.revisions
        lo = bisect.bisect_right(revisions, after)
        keys, types, values, prevs, created = self.keys, self.types, self.values, self.prev_values, self.created
        return [
            CachedEvent(revisions[i], types[i], keys[i], values[i], prevs[i], created[i])
            for i in range(lo, len(revisions))
            if keys[i].startswith(prefix)
        ]

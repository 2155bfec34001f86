"""The revisioned key-value contract every storage backend fulfils.

Modelled on kine's `server.Backend` and etcd's own API: one global revision
counter that every write bumps; each key remembers the revision that created
it and the one that last modified it. The apiserver's resourceVersion *is*
this revision. Writes are guarded by the revision the writer last saw, which
is how optimistic concurrency (409 Conflict) works.

Semantics all backends share (tests/storage runs one suite against each):

- Revisions are positive integers, strictly increasing, shared by all keys.
  An empty store has current revision >= 0 (etcd starts at 1).
- `create` fails with `KeyExistsError` when the key exists.
- `update(key, value, expected_revision)` fails with `RevisionConflictError`
  (carrying the current `KeyValue`) when the key's mod_revision differs, and
  with `KeyNotFoundError` when the key does not exist.
- `delete(key, expected_revision)`: 0 means unconditional.
- `list(prefix, revision=R)` reads the state as of revision R (0 = now), in
  key order, at most `limit` items (0 = all) starting at `start_key`
  (inclusive); `ListResult.revision` is the revision the list was read at,
  `more` says whether keys remain after the last one returned. A revision
  at or below the compacted revision raises `CompactedError`; one above the
  current revision raises `FutureRevisionError`.
- `watch(prefix, start_revision)` yields batches of events whose revision is
  >= start_revision, in revision order, without gaps, then follows new
  writes until the iterator is closed. A start_revision at or below the
  compacted revision raises `CompactedError` (on the first `__anext__`).
- `compact(revision)` forgets history before `revision`; reads of the
  current state are never affected.
- A write returns only once it is durable.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For DELETE, `kv.value` is the last value and `kv.mod_revision` the delete's revision."""

    type: Literal["CREATE", "UPDATE", "DELETE"]
    kv: KeyValue
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int
    more: bool
    # keys under the prefix from start_key on at `revision`, as etcd counts a range (remainingItemCount); 0 if unknown
    count: int = 0


class StorageError(Exception):
    """Base class for storage failures."""


class KeyExistsError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class KeyNotFoundError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class RevisionConflictError(StorageError):
    def __init__(self, key: str, current: KeyValue | None) -> None:
        super().__init__(f"revision conflict on {key}")
        self.key = key
        self.current = current


class CompactedError(StorageError):
    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} has been compacted (compacted revision {compacted})")
        self.requested = requested
        self.compacted = compacted


class FutureRevisionError(StorageError):
    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"revision {requested} is in the future (current revision {current})")
        self.requested = requested
        self.current = current


class Unavailable(StorageError):
    """The backend cannot be reached (etcd down, database closed)."""


class Backend(Protocol):
    """What the apiserver needs from a store."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def current_revision(self) -> int: ...

    async def compacted_revision(self) -> int: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start_key: str | None = None
    ) -> ListResult: ...

    async def count(self, prefix: str) -> int: ...

    async def create(self, key: str, value: bytes) -> KeyValue: ...

    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue: ...

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue: ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]: ...

    async def compact(self, revision: int) -> None: ...


WatchEventType = Literal["CREATE", "UPDATE", "DELETE"]

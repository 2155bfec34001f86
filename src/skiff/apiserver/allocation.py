"""Allocation records: one storage key per allocated value, so that storage decides who got it.

Service cluster IPs and node ports must never be handed out twice, even
when many creates race, when several API servers share one etcd, or across
restarts. Like Kubernetes' IPAddress-based allocator (`ipallocator.go`
since the MultiCIDRServiceAllocator), each allocated value is a key of its
own, written with storage's create-if-absent: of two writers asking for
the same value exactly one create succeeds, on SQLite and etcd alike. The
key outlives the process, so a restarted server sees every value in use.

An in-memory set of the values known to be taken (`hint`) only steers the
search for a free value: it is seeded from storage, updated by this
process's own claims and releases, and corrected whenever a claim collides
with a value another writer took ("mid-air collision", retried with the
next candidate). It is never trusted to say a value is free.

A record names its owner (namespace, name, uid of the Service); a release
deletes the record only if it still names that owner, guarded by the
record's revision. A record whose owner is gone (a crash between the claim
and the Service's write) is freed by the repair pass (`service_alloc`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from skiff.storage.interface import (
    Backend,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
)

log = logging.getLogger(__name__)

LIST_PAGE = 5000


class AllocationError(Exception):
    """A value could not be allocated; the message is Kubernetes' wording."""


class Allocated(AllocationError):
    pass


class NotInRange(AllocationError):
    pass


class Full(AllocationError):
    def __init__(self) -> None:
        super().__init__("range is full")


@dataclass(frozen=True, slots=True)
class Owner:
    """The Service an allocated value belongs to."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    owner: Owner | None  # None: a record this version cannot read
    created: float  # seconds since the epoch (0 if unknown)
    kv: KeyValue


Encode = Callable[[str, Owner], bytes]
Decode = Callable[[bytes], tuple[Owner | None, float]]


class Records:
    """The allocated values of one pool, each a key `<prefix><value>` in storage."""

    def __init__(self, backend: Backend, prefix: str, *, encode: Encode, decode: Decode) -> None:
        self.backend = backend
        self.prefix = prefix
        self._encode = encode
        self._decode = decode
        self.hint: set[str] = set()

    def key(self, name: str) -> str:
        return self.prefix + name

    async def load(self) -> None:
        """Seed the hint with every value storage holds."""
        self.hint = {r.name for r in await self.all()}

    async def all(self) -> list[Record]:
        """Every record in storage, paged."""
        records: list[Record] = []
        start: str | None = None
        revision = 0
        while True:
            res = await self.backend.list(self.prefix, revision=revision, limit=LIST_PAGE, start_key=start)
            revision = res.revision
            for kv in res.items:
                owner, created = self._decode(kv.value)
                records.append(Record(kv.key[len(self.prefix) :], owner, created, kv))
            if not res.more or not res.items:
                return records
            start = res.items[-1].key + "\x00"

    async def get(self, name: str) -> Record | None:
        kv = await self.backend.get(self.key(name))
        if kv is None:
            return None
        owner, created = self._decode(kv.value)
        return Record(name, owner, created, kv)

    async def claim(self, name: str, owner: Owner) -> bool:
        """Create the record of `name` for `owner`; False if it exists (taken by anyone, `owner` included)."""
        self.hint.add(name)  # before the await: concurrent searches in this process skip it
        try:
            await self.backend.create(self.key(name), self._encode(name, owner))
        except KeyExistsError:
            return False
        except BaseException:
            self.hint.discard(name)
            raise
        return True

    async def claim_next(self, candidates: Callable[[], Iterable[str]], owner: Owner) -> str:
        """Claim the first free candidate; raises Full when none is left (after re-reading storage)."""
        for attempt in range(2):
            for name in candidates():
                if name in self.hint:
                    continue
                if await self.claim(name, owner):
                    return name
                log.debug("mid-air collision on %s%s, trying the next value", self.prefix, name)
            if attempt == 0:
                await self.load()  # values released by other servers become visible
        raise Full()

    def free_candidate(self, candidates: Iterable[str]) -> str | None:
        """A value the hint believes free (dry runs: nothing is claimed)."""
        return next((c for c in candidates if c not in self.hint), None)

    async def release(self, name: str, uid: str | None) -> bool:
        """Delete the record of `name` if it is `uid`'s (any owner when uid is None); True if deleted."""
        record = await self.get(name)
        if record is None:
            self.hint.discard(name)
            return False
        if uid is not None and (record.owner is None or record.owner.uid != uid):
            return False
        try:
            await self.backend.delete(record.kv.key, record.kv.mod_revision)
        except (KeyNotFoundError, RevisionConflictError):
            return False
        self.hint.discard(name)
        return True

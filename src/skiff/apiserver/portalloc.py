"""Service node ports: the range of `--service-node-port-range` and the allocator over it.

As kube-apiserver's `portallocator`: a range written `30000-32767` (or
`30000+2767`), a lower band of `min(max(16, size/32), 128)` ports kept for
ports users ask for by number (KEP-3668), and dynamic allocation from the
upper band first, at a random offset. Each allocated port is a record at
`/registry/ranges/servicenodeports/<port>` naming its Service, claimed
with storage's create-if-absent (see `allocation`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from skiff.apiserver.allocation import Allocated, NotInRange, Owner, Records
from skiff.storage.interface import Backend

DEFAULT_NODE_PORT_RANGE = "30000-32767"
PREFIX = "/registry/ranges/servicenodeports/"
_RANGE = re.compile(r"^\s*(\d+)\s*([-+])\s*(\d+)\s*$")


def range_offset(size: int) -> int:
    """KEP-3668's lower band size: `min(max(16, size/32), 128)`, 0 for ranges of 16 or fewer."""
    if size <= 16:
        return 0
    return min(max(16, size // 32), 128)


@dataclass(frozen=True)
class NodePortRange:
    base: int
    size: int

    @classmethod
    def parse(cls, value: str) -> NodePortRange:
        """`30000-32767` or `30000+2767` (Kubernetes' net.ParsePortRange); ValueError otherwise."""
        m = _RANGE.match(value)
        if m is None:
            raise ValueError(f"unable to parse port range: {value}")
        low, op, other = int(m.group(1)), m.group(2), int(m.group(3))
        high = low + other if op == "+" else other
        if not (0 < low <= 65535 and 0 < high <= 65535) or high < low:
            raise ValueError(f"invalid port range: {value}")
        return cls(low, high - low + 1)

    @property
    def last(self) -> int:
        return self.base + self.size - 1

    def __str__(self) -> str:
        return f"{self.base}-{self.last}"

    @property
    def offset(self) -> int:
        return range_offset(self.size)

    def contains(self, port: int) -> bool:
        return self.base <= port <= self.last

    def not_in_range(self) -> NotInRange:
        return NotInRange(f"provided port is not in the valid range. The range of valid ports is {self}")

    def dynamic_candidates(self, rng: random.Random) -> Iterator[str]:
        """Every port once, dynamic order: the upper band from a random point, then the lower band."""
        bands = [(self.base + self.offset, self.last)]
        if self.offset:
            bands.append((self.base, self.base + self.offset - 1))
        for lo, hi in bands:
            count = hi - lo + 1
            start = rng.randrange(count)
            for i in range(count):
                yield str(lo + (start + i) % count)


def encode_record(port: str, owner: Owner) -> bytes:
    return orjson.dumps(
        {
            "port": int(port),
            "namespace": owner.namespace,
            "name": owner.name,
            "uid": owner.uid,
            "created": datetime.now(UTC).timestamp(),
        }
    )


def decode_record(value: bytes) -> tuple[Owner | None, float]:
    try:
        obj = orjson.loads(value)
        return Owner(obj["namespace"], obj["name"], obj["uid"]), float(obj.get("created", 0.0))
    except (ValueError, KeyError, TypeError):
        return None, 0.0


class NodePortAllocator:
    """Node ports of one range, recorded in storage."""

    def __init__(self, backend: Backend, port_range: NodePortRange, *, rng: random.Random | None = None) -> None:
        self.range = port_range
        self.records = Records(backend, PREFIX, encode=encode_record, decode=decode_record)
        self._rng = rng or random.Random()

    async def allocate(self, port: int, owner: Owner, *, dry_run: bool = False) -> None:
        """Claim the requested `port`; raises NotInRange or Allocated (Kubernetes' messages)."""
        if not self.range.contains(port):
            raise self.range.not_in_range()
        if dry_run:
            if await self.records.get(str(port)) is not None:
                raise Allocated("provided port is already allocated")
            return
        if not await self.records.claim(str(port), owner):
            raise Allocated("provided port is already allocated")

    async def allocate_next(self, owner: Owner, *, dry_run: bool = False) -> int:
        if dry_run:
            free = self.records.free_candidate(self.range.dynamic_candidates(self._rng))
            return int(free) if free is not None else self.range.base
        return int(await self.records.claim_next(lambda: self.range.dynamic_candidates(self._rng), owner))

    async def release(self, port: int, uid: str | None) -> None:
        if self.range.contains(port):
            await self.records.release(str(port), uid)

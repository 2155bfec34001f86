"""Service cluster IPs: the range math of `--service-cluster-ip-range` and the allocator over it.

As kube-apiserver's `ipallocator`: the usable addresses are the CIDR less
its network address (and, for IPv4, its broadcast address). The range is
split (KEP-3070) into a small lower band, `min(max(16, size/16), 256)`
addresses, kept for IPs users ask for by value, and the upper band that
dynamic allocation draws from first, at a random offset, falling back to
the lower band only when the upper one is full. The first address is the
`kubernetes` Service's and the tenth (10.43.0.10 in the default range) the
cluster DNS Service's: both are in the lower band, and dynamic allocation
never returns them even as a fallback.

Each allocated IP is an IPAddress object (networking.k8s.io/v1, as
Kubernetes keeps them since the MultiCIDRServiceAllocator) stored at
`/registry/networking.k8s.io/ipaddresses/<ip>` with a `parentRef` to its
Service; `allocation.Records` claims it with a guarded create.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from skiff.apiserver.allocation import Allocated, NotInRange, Owner, Records
from skiff.storage.interface import Backend

DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
PREFIX = "/registry/networking.k8s.io/ipaddresses/"
FAMILY_LABEL = "ipaddress.kubernetes.io/ip-family"
MANAGED_BY_LABEL = "ipaddress.kubernetes.io/managed-by"
MANAGER = "ipallocator.k8s.io"
OWNER_UID_ANNOTATION = "skiff.io/service-uid"
DNS_OFFSET = 9  # the DNS Service's address: the 10th usable one (10.43.0.10)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(value: str) -> Network:
    """A service CIDR as the flag gives it; ValueError with the reason when it is not usable."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"invalid service CIDR {value!r}: {e}") from None
    if net.version == 6 and net.prefixlen < 64:
        raise ValueError(f"shortest allowed prefix length for service CIDR is 64, got {net.prefixlen}")
    if net.num_addresses < 8:
        raise ValueError(f"service CIDR {value!r} is too small: it needs at least 8 addresses")
    return net


def range_offset(cidr_size: int) -> int:
    """KEP-3070's lower band size: `min(max(16, size/16), 256)`, 0 for ranges of 16 or fewer."""
    if cidr_size <= 16:
        return 0
    return min(max(16, cidr_size // 16), 256)


def family_of(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


@dataclass(frozen=True)
class ServiceIPRange:
    """The usable addresses of a service CIDR, as integers first..last, and its two bands."""

    network: Network
    first: int = field(init=False)
    last: int = field(init=False)
    offset: int = field(init=False)

    def __post_init__(self) -> None:
        base = int(self.network.network_address)
        last = int(self.network.broadcast_address)
        if self.network.version == 4:
            last -= 1
        object.__setattr__(self, "first", base + 1)
        object.__setattr__(self, "last", last)
        object.__setattr__(self, "offset", range_offset(self.network.num_addresses))

    @classmethod
    def parse(cls, cidr: str) -> ServiceIPRange:
        return cls(parse_cidr(cidr))

    @property
    def family(self) -> str:
        return "IPv6" if self.network.version == 6 else "IPv4"

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def address(self, value: int) -> str:
        return str(ipaddress.ip_address(value))

    @property
    def kubernetes_ip(self) -> str:
        """The `kubernetes` Service's address: the first usable one."""
        return self.address(self.first)

    @property
    def dns_ip(self) -> str:
        """The cluster DNS Service's address (10.43.0.10 in the default range)."""
        return self.address(self.first + DNS_OFFSET)

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == self.network.version and self.first <= int(addr) <= self.last

    def not_in_range(self, ip: str) -> NotInRange:
        return NotInRange(f"provided IP {ip} is not in the valid range")

    def dynamic_candidates(self, rng: random.Random) -> Iterator[str]:
        """Every address once, dynamic order: the upper band from a random point, then the lower band."""
        reserved = {self.first, self.first + DNS_OFFSET}
        bands = [(self.first + self.offset, self.last)]
        if self.offset:
            bands.append((self.first, self.first + self.offset - 1))
        for lo, hi in bands:
            count = hi - lo + 1
            if count <= 0:
                continue
            start = rng.randrange(count)
            for i in range(count):
                value = lo + (start + i) % count
                if value not in reserved:
                    yield self.address(value)


def encode_record(ip: str, owner: Owner) -> bytes:
    """The IPAddress object Kubernetes would store for `ip`, owned by `owner`'s Service."""
    obj: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {FAMILY_LABEL: family_of(ip), MANAGED_BY_LABEL: MANAGER},
            "annotations": {OWNER_UID_ANNOTATION: owner.uid},
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": owner.namespace, "name": owner.name}},
    }
    return orjson.dumps(obj)


def decode_record(value: bytes) -> tuple[Owner | None, float]:
    try:
        obj = orjson.loads(value)
        meta, ref = obj["metadata"], obj["spec"]["parentRef"]
        owner = Owner(
            ref.get("namespace") or "", ref["name"], (meta.get("annotations") or {}).get(OWNER_UID_ANNOTATION, "")
        )
        created = datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (ValueError, KeyError, TypeError):
        return None, 0.0
    return owner, created


class IPAllocator:
    """Cluster IPs of one service CIDR, recorded in storage."""

    def __init__(self, backend: Backend, ip_range: ServiceIPRange, *, rng: random.Random | None = None) -> None:
        self.range = ip_range
        self.records = Records(backend, PREFIX, encode=encode_record, decode=decode_record)
        self._rng = rng or random.Random()

    async def allocate(self, ip: str, owner: Owner, *, dry_run: bool = False) -> None:
        """Claim the requested `ip`; raises NotInRange or Allocated (Kubernetes' messages)."""
        if not self.range.contains(ip):
            raise self.range.not_in_range(ip)
        canonical = str(ipaddress.ip_address(ip))
        if dry_run:
            if await self.records.get(canonical) is not None:
                raise Allocated("provided IP is already allocated")
            return
        if not await self.records.claim(canonical, owner):
            raise Allocated("provided IP is already allocated")

    async def allocate_next(self, owner: Owner, *, dry_run: bool = False) -> str:
        """Claim a free IP, the upper band first; raises Full."""
        if dry_run:
            free = self.records.free_candidate(self.range.dynamic_candidates(self._rng))
            return free if free is not None else self.range.address(self.range.first)
        return await self.records.claim_next(lambda: self.range.dynamic_candidates(self._rng), owner)

    async def release(self, ip: str, uid: str | None) -> None:
        if self.range.contains(ip):
            await self.records.release(str(ipaddress.ip_address(ip)), uid)

"""Service IP and node port allocation against real storage: SQLite and etcd alike.

Storage is the source of truth: concurrent claims, several allocators
sharing one store (several API servers) and a restarted allocator never
hand out one value twice.
"""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest

from skiff.apiserver.allocation import Allocated, Full, NotInRange, Owner
from skiff.apiserver.ipalloc import IPAllocator, ServiceIPRange
from skiff.apiserver.portalloc import NodePortAllocator, NodePortRange
from skiff.apiserver.service_alloc import ServiceAllocators, ServiceNetworkConfig
from skiff.apiserver.service_repair import LEAK_GRACE, SERVICES_PREFIX, repair
from skiff.storage.interface import Backend


def owner(i: int) -> Owner:
    return Owner("default", f"svc-{i}", f"uid-{i}")


async def test_concurrent_ip_allocations_are_distinct(backend: Backend) -> None:
    alloc = IPAllocator(backend, ServiceIPRange.parse("10.43.0.0/16"))
    await alloc.records.load()
    ips = await asyncio.gather(*(alloc.allocate_next(owner(i)) for i in range(50)))
    assert len(set(ips)) == 50
    assert {r.name for r in await alloc.records.all()} == set(ips)


async def test_allocators_sharing_storage_never_collide(backend: Backend) -> None:
    """Two allocators with their own (stale) hints over one small range: storage arbitrates."""
    ip_range = ServiceIPRange.parse("10.43.0.0/27")  # 30 usable, 28 dynamic (kubernetes and DNS kept)
    a = IPAllocator(backend, ip_range, rng=random.Random(1))
    b = IPAllocator(backend, ip_range, rng=random.Random(1))  # same random order: maximal collisions
    got = await asyncio.gather(*(x.allocate_next(owner(i)) for i in range(14) for x in (a, b)))
    assert len(got) == len(set(got)) == 28
    with pytest.raises(Full):
        await a.allocate_next(owner(99))


async def test_restarted_allocator_sees_every_allocation(backend: Backend) -> None:
    ip_range = ServiceIPRange.parse("10.43.0.0/28")  # 14 usable, 12 dynamic
    first = IPAllocator(backend, ip_range)
    taken = {await first.allocate_next(owner(i)) for i in range(11)}
    restarted = IPAllocator(backend, ip_range)
    await restarted.records.load()
    last = await restarted.allocate_next(owner(11))
    assert last not in taken
    with pytest.raises(Full):
        await restarted.allocate_next(owner(12))


async def test_requested_ip_and_release(backend: Backend) -> None:
    alloc = IPAllocator(backend, ServiceIPRange.parse("10.43.0.0/16"))
    await alloc.allocate("10.43.0.5", owner(1))
    with pytest.raises(Allocated, match=r"^provided IP is already allocated$"):
        await alloc.allocate("10.43.0.5", owner(2))
    with pytest.raises(Allocated):
        await alloc.allocate("10.43.0.5", owner(2), dry_run=True)
    with pytest.raises(NotInRange, match=r"^provided IP 10\.44\.0\.5 is not in the valid range$"):
        await alloc.allocate("10.44.0.5", owner(2))
    await alloc.release("10.43.0.5", "uid-2")  # not its owner: kept
    with pytest.raises(Allocated):
        await alloc.allocate("10.43.0.5", owner(2))
    await alloc.release("10.43.0.5", "uid-1")
    await alloc.allocate("10.43.0.5", owner(2))


async def test_concurrent_requests_for_one_ip_have_one_winner(backend: Backend) -> None:
    alloc = IPAllocator(backend, ServiceIPRange.parse("10.43.0.0/16"))
    results = await asyncio.gather(*(alloc.allocate("10.43.0.7", owner(i)) for i in range(10)), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, Allocated) for r in results if r is not None)


async def test_node_ports(backend: Backend) -> None:
    alloc = NodePortAllocator(backend, NodePortRange.parse("30000-32767"))
    ports = await asyncio.gather(*(alloc.allocate_next(owner(i)) for i in range(50)))
    assert len(set(ports)) == 50 and all(30000 <= p <= 32767 for p in ports)
    await alloc.allocate(30001, owner(100))
    with pytest.raises(Allocated, match=r"^provided port is already allocated$"):
        await alloc.allocate(30001, owner(101))
    with pytest.raises(NotInRange, match=r"The range of valid ports is 30000-32767$"):
        await alloc.allocate(40000, owner(101))


async def test_repair_frees_leaks_and_restores_missing_records(backend: Backend) -> None:
    allocators = ServiceAllocators(backend, ServiceNetworkConfig())
    # a Service that holds an IP and a node port but has no records (written before records existed)
    held = {
        "metadata": {"name": "old", "namespace": "default", "uid": "uid-old"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                 "ports": [{"port": 80, "nodePort": 30020}]},
    }  # fmt: skip
    await backend.create(SERVICES_PREFIX + "default/old", orjson.dumps(held))
    # a record whose Service never got written (a crash after the claim), old enough to be a leak
    leaked = allocators.ip.records
    await backend.create(leaked.key("10.43.0.21"), _aged_ip_record("10.43.0.21", "ghost"))
    # a fresh record without its Service: maybe a create in flight, left alone
    await allocators.ip.allocate("10.43.0.22", Owner("default", "in-flight", "uid-new"))
    report = await repair(allocators, backend)
    assert (report.freed, report.restored) == (1, 2)
    names = {r.name for r in await allocators.ip.records.all()}
    assert names == {"10.43.0.20", "10.43.0.22"}
    assert {r.name for r in await allocators.ports.records.all()} == {"30020"}
    with pytest.raises(Allocated):
        await allocators.ip.allocate("10.43.0.20", owner(5))


def _aged_ip_record(ip: str, name: str) -> bytes:
    from skiff.apiserver.ipalloc import encode_record

    obj = orjson.loads(encode_record(ip, Owner("default", name, f"uid-{name}")))
    aged = time.gmtime(time.time() - LEAK_GRACE - 60)
    obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", aged)
    return orjson.dumps(obj)

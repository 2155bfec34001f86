"""Allocation records and Services kept in agreement, and the `kubernetes` Service every cluster has.

Like kube-apiserver's repair controllers (`ipallocator/controller/repairip.go`,
`portallocator/controller/repair.go`), a pass runs when the server starts
and every few minutes after:

- a record whose Service is gone (or no longer holds the value) is freed --
  the trace of a server that died between claiming a value and writing the
  Service. Records younger than `LEAK_GRACE` are left alone: their Service
  may be a create still in flight on this or another server.
- a value a Service holds without a record (a store restored from before
  records existed) gets its record back, so nobody else is given it.

The records are read before the Services, so a Service created in between
is never mistaken for missing.

At start the server also creates `default/kubernetes` (port 443 to the API
server's port, the first address of the service range), as kube-apiserver's
bootstrap controller does, with its Endpoints and EndpointSlice pointing at
this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from skiff.api import errors
from skiff.apiserver.allocation import Owner, Record, Records
from skiff.apiserver.hostinfo import host_addresses
from skiff.apiserver.options import WriteOptions
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.service_alloc import ServiceAllocators, held_cluster_ips, held_node_ports, owner_of
from skiff.apiserver.store import Store
from skiff.storage.interface import Backend

log = logging.getLogger(__name__)

Obj = dict[str, Any]
REPAIR_INTERVAL = 180.0  # as kube-apiserver: every 3 minutes
LEAK_GRACE = 30.0
SERVICES_PREFIX = "/registry/core/services/"
KUBERNETES = "kubernetes"


@dataclass
class RepairReport:
    freed: int = 0
    restored: int = 0


async def _list_services(backend: Backend) -> list[Obj]:
    services: list[Obj] = []
    start: str | None = None
    revision = 0
    while True:
        res = await backend.list(SERVICES_PREFIX, revision=revision, limit=5000, start_key=start)
        revision = res.revision
        services.extend(orjson.loads(kv.value) for kv in res.items)
        if not res.more or not res.items:
            return services
        start = res.items[-1].key + "\x00"


async def _reconcile(
    records: Records, existing: list[Record], held: dict[str, Owner], now: float, report: RepairReport
) -> None:
    names = set()
    for rec in existing:
        names.add(rec.name)
        holder = held.get(rec.name)
        if holder is not None:
            if rec.owner is None or rec.owner.uid != holder.uid:
                log.warning("%s%s is recorded for %s but held by Service %s/%s", records.prefix, rec.name,
                            rec.owner, holder.namespace, holder.name)  # fmt: skip
            continue
        if now - rec.created < LEAK_GRACE:
            continue
        if await records.release(rec.name, rec.owner.uid if rec.owner is not None else None):
            report.freed += 1
            log.info("freed %s%s: its Service %s is gone", records.prefix, rec.name, rec.owner)
    for name, owner in held.items():
        if name not in names and await records.claim(name, owner):
            report.restored += 1
            log.info("restored the record of %s%s for Service %s/%s", records.prefix, name, owner.namespace, owner.name)


async def repair(allocators: ServiceAllocators, backend: Backend) -> RepairReport:
    """One pass over every record and every Service."""
    report = RepairReport()
    now = time.time()
    ip_records = await allocators.ip.records.all()
    port_records = await allocators.ports.records.all()
    held_ips: dict[str, Owner] = {}
    held_ports: dict[str, Owner] = {}
    for svc in await _list_services(backend):
        owner = owner_of(svc)
        for ip in held_cluster_ips(svc):
            if not allocators.ip.range.contains(ip):
                log.warning("the cluster IP %s of Service %s/%s is not within the service CIDR %s; please recreate",
                            ip, owner.namespace, owner.name, allocators.ip.range.network)  # fmt: skip
                continue
            other = held_ips.setdefault(str(ipaddress.ip_address(ip)), owner)
            if other != owner:
                log.warning("the cluster IP %s is assigned to several Services: %s/%s and %s/%s",
                            ip, owner.namespace, owner.name, other.namespace, other.name)  # fmt: skip
        for port in held_node_ports(svc):
            if allocators.ports.range.contains(port):
                held_ports.setdefault(str(port), owner)
    await _reconcile(allocators.ip.records, ip_records, held_ips, now, report)
    await _reconcile(allocators.ports.records, port_records, held_ports, now, report)
    await allocators.load()
    return report


async def repair_loop(allocators: ServiceAllocators, backend: Backend, interval: float = REPAIR_INTERVAL) -> None:
    """Repair every `interval` seconds until cancelled; a failed pass is logged and retried next time."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await repair(allocators, backend)
        except Exception:
            log.exception("service allocation repair failed")
        else:
            if report.freed or report.restored:
                log.info("service allocation repair: %d freed, %d restored", report.freed, report.restored)


# ---------------------------------------------------------------------- the kubernetes Service
def _advertise_address(allocators: ServiceAllocators) -> str:
    """The address the kubernetes Endpoints give: the configured one (the bind address), else a host address."""
    host = allocators.config.advertise_address.strip()
    if host and host not in ("0.0.0.0", "::"):
        return host
    family = 6 if allocators.family == "IPv6" else 4
    for addr in host_addresses():
        if addr.version == family and not addr.is_loopback and not addr.is_link_local:
            return str(addr)
    return "::1" if family == 6 else "127.0.0.1"


async def ensure_kubernetes_service(store: Store, registry: Registry, allocators: ServiceAllocators) -> None:
    """Create default/kubernetes if absent, and point its Endpoints and EndpointSlice at this server."""
    rt = registry.get("", "v1", "services")
    assert rt is not None
    port = allocators.config.secure_port
    body: Obj = {
        "metadata": {"name": KUBERNETES, "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": allocators.ip.range.kubernetes_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
        },
    }
    try:
        # look first, as kube-apiserver's controller does: a create of an existing Service fails on
        # its (taken) cluster IP before it fails on the name
        await store.get(rt, "default", KUBERNETES)
    except errors.NotFound:
        exists = False
    else:
        exists = True
    try:
        if exists:
            await _reconcile_ports(store, rt, body["spec"]["ports"])
        else:
            await store.create(rt, "default", body, WriteOptions())
            log.info("created Service default/kubernetes at %s", allocators.ip.range.kubernetes_ip)
    except errors.AlreadyExists:
        await _reconcile_ports(store, rt, body["spec"]["ports"])
    except errors.StatusError as e:
        log.warning("cannot create Service default/kubernetes: %s", e)
        return
    address = await asyncio.to_thread(_advertise_address, allocators)
    ports = [{"name": "https", "port": port, "protocol": "TCP"}]
    endpoints: Obj = {
        "metadata": {"name": KUBERNETES, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": ports}],
    }
    slice_: Obj = {
        "metadata": {"name": KUBERNETES, "labels": {"kubernetes.io/service-name": KUBERNETES}},
        "addressType": allocators.family,
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": ports,
    }
    for group, version, plural, obj, field in (
        ("", "v1", "endpoints", endpoints, "subsets"),
        ("discovery.k8s.io", "v1", "endpointslices", slice_, "endpoints"),
    ):
        await _put(store, registry, (group, version, plural), obj, field)


async def _reconcile_ports(store: Store, rt: ResourceType, ports: list[Obj]) -> None:
    """The server's port may have changed since the Service was created: point it at the current one."""
    with contextlib.suppress(errors.StatusError):
        current = await store.get(rt, "default", KUBERNETES)
        if current.get("spec", {}).get("ports") != ports:
            current["spec"]["ports"] = ports
            await store.update(rt, "default", KUBERNETES, current, WriteOptions())


async def _put(store: Store, registry: Registry, gvr: tuple[str, str, str], obj: Obj, field: str) -> None:
    rt = registry.get(*gvr)
    if rt is None:
        return
    with contextlib.suppress(errors.StatusError):
        try:
            await store.create(rt, "default", obj, WriteOptions())
            return
        except errors.AlreadyExists:
            current = await store.get(rt, "default", KUBERNETES)
        if current.get(field) != obj[field]:
            current[field] = obj[field]
            await store.update(rt, "default", KUBERNETES, current, WriteOptions())

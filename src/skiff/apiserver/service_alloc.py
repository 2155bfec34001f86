"""What a Service's create, update and delete allocate and release, as kube-apiserver does it.

The counterpart of Kubernetes' `pkg/registry/core/service/storage/alloc.go`:
IP family fields are settled first (`init_ip_family_fields`), then cluster
IPs are allocated for every type but ExternalName and headless Services
(a requested IP is honoured when it is in range and free), then node ports
for NodePort and LoadBalancer Services (a port the Service asks for by
number, else a free one; ports with the same number share one node port).

Every allocation is a claim in storage (see `allocation`), made before the
Service is written. The generic store calls these through the strategy's
`begin_create` / `begin_update` hooks, which return a `Transaction`: if the
Service's write fails, what was claimed is released (`finish(False)`); if
it succeeds, what the update gave up is released (`finish(True)`). Deleting
a Service releases what it held (`release_service`). A crash between claim
and write leaves a record without its Service, which the repair pass
(`service_repair`) frees; so nothing is ever allocated twice, and nothing
stays leaked for long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from skiff.api import errors
from skiff.api.service_validation import NONE, invalid_list, is_headless
from skiff.api.validation import FieldErrors, invalid
from skiff.apiserver.allocation import AllocationError, Full, Owner
from skiff.apiserver.ipalloc import DEFAULT_SERVICE_CIDR, IPAllocator, ServiceIPRange, family_of
from skiff.apiserver.portalloc import DEFAULT_NODE_PORT_RANGE, NodePortAllocator, NodePortRange
from skiff.storage.interface import Backend

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True)
class ServiceNetworkConfig:
    """kube-apiserver's service flags, and where the `kubernetes` Service leads."""

    cluster_ip_range: str = DEFAULT_SERVICE_CIDR  # --service-cluster-ip-range
    node_port_range: str = DEFAULT_NODE_PORT_RANGE  # --service-node-port-range
    advertise_address: str = ""  # the API server's address in the kubernetes Endpoints ("": found at start)
    secure_port: int = 6443


def owner_of(svc: Obj) -> Owner:
    meta = svc.get("metadata") or {}
    return Owner(meta.get("namespace") or "", meta.get("name") or "", meta.get("uid") or "")


def needs_cluster_ip(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") != "ExternalName"


def needs_node_port(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") in NODE_PORT_TYPES


def should_allocate_node_ports(spec: Obj) -> bool:
    if spec.get("type") == "NodePort":
        return True
    return spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def held_cluster_ips(svc: Obj) -> list[str]:
    """The cluster IPs a stored Service holds (none for ExternalName and headless Services)."""
    spec = svc.get("spec") or {}
    if not needs_cluster_ip(svc) or is_headless(spec):
        return []
    return [ip for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []) if ip]


def needs_health_check(svc: Obj) -> bool:
    """apiservice.NeedsHealthCheck: a LoadBalancer that keeps traffic on the node it arrives at."""
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def held_node_ports(svc: Obj) -> set[int]:
    """collectServiceNodePorts: every node port number of the Service."""
    spec = svc.get("spec") or {}
    ports = {int(p["nodePort"]) for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")}
    if spec.get("healthCheckNodePort"):
        ports.add(int(spec["healthCheckNodePort"]))
    return ports


def invalid_service(svc: Obj, errs: FieldErrors) -> errors.Invalid:
    return errors.field_error("Service", (svc.get("metadata") or {}).get("name") or "", errs)


@dataclass
class Transaction:
    """Claims made for one write: released if the write fails; `deferred` released if it succeeds."""

    allocators: ServiceAllocators
    uid: str
    dry_run: bool
    ips: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    deferred_ips: list[str] = field(default_factory=list)
    deferred_ports: list[int] = field(default_factory=list)

    async def finish(self, success: bool) -> None:
        if self.dry_run:
            return
        ips, ports = (self.deferred_ips, self.deferred_ports) if success else (self.ips, self.ports)
        for ip in ips:
            await self.allocators.ip.release(ip, self.uid)
        for port in ports:
            await self.allocators.ports.release(port, self.uid)


class ServiceAllocators:
    """The cluster's service IP and node port allocators, and the rules that drive them."""

    def __init__(self, backend: Backend, config: ServiceNetworkConfig) -> None:
        self.config = config
        self.ip = IPAllocator(backend, ServiceIPRange.parse(config.cluster_ip_range))
        self.ports = NodePortAllocator(backend, NodePortRange.parse(config.node_port_range))

    @property
    def family(self) -> str:
        return self.ip.range.family

    async def load(self) -> None:
        await self.ip.records.load()
        await self.ports.records.load()

    # ------------------------------------------------------------------ IP families
    def init_ip_family_fields(self, svc: Obj, old: Obj | None) -> FieldErrors:
        """initIPFamilyFields for a single-stack cluster: default ipFamilyPolicy and ipFamilies."""
        spec = svc["spec"]
        if spec.get("type") == "ExternalName":
            return []
        headless_selectorless = is_headless(spec) and not spec.get("selector")
        if spec.get("ipFamilyPolicy") is None:
            old_policy = ((old or {}).get("spec") or {}).get("ipFamilyPolicy")
            if old_policy is not None:
                spec["ipFamilyPolicy"] = old_policy
            else:
                spec["ipFamilyPolicy"] = "RequireDualStack" if headless_selectorless else "SingleStack"
        policy = spec["ipFamilyPolicy"]
        ips: list[str] = list(spec.get("clusterIPs") or [])
        families: list[str] = list(spec.get("ipFamilies") or [])
        errs: FieldErrors = []
        if policy == "SingleStack":
            multi = "must be 'RequireDualStack' or 'PreferDualStack' when multiple"
            if len(ips) == 2:
                errs.append(invalid("spec.ipFamilyPolicy", policy, f"{multi} cluster IPs are specified"))
            if len(families) == 2:
                errs.append(invalid("spec.ipFamilyPolicy", policy, f"{multi} IP families are specified"))
        for i, ip in enumerate(ips):
            if ip == NONE:
                break
            fam = family_of(ip)
            if i >= len(families):
                if fam != self.family:
                    errs.append(invalid_list(f"spec.clusterIPs[{i}]", ips, f"{fam} is not configured on this cluster"))
                else:
                    families.append(fam)
        if errs:
            return errs
        if headless_selectorless:
            families = families or [self.family]
            if len(families) < 2 and policy != "SingleStack":
                families.append("IPv6" if families[0] == "IPv4" else "IPv4")
            spec["ipFamilies"] = families
            return []
        if policy == "RequireDualStack":
            errs.append(
                invalid("spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services")
            )
        for i, fam in enumerate(families):
            if fam != self.family:
                errs.append(invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"))
        if not errs:
            spec["ipFamilies"] = families or [self.family]
        return errs

    # ------------------------------------------------------------------ create
    async def allocate_create(self, svc: Obj, *, dry_run: bool) -> Transaction:
        errs = self.init_ip_family_fields(svc, None)
        if errs:
            raise invalid_service(svc, errs)
        txn = Transaction(self, owner_of(svc).uid, dry_run)
        try:
            await self._alloc_cluster_ips(svc, txn)
            if needs_node_port(svc):
                await self._init_node_ports(svc, txn)
            if needs_health_check(svc):
                await self._alloc_health_check_port(svc, txn)
        except BaseException:
            await txn.finish(False)
            raise
        return txn

    async def _alloc_cluster_ips(self, svc: Obj, txn: Transaction) -> None:
        spec = svc["spec"]
        if not needs_cluster_ip(svc) or is_headless(spec):
            return
        ips: list[str] = list(spec.get("clusterIPs") or [])
        wanted = ips[0] if ips else ""
        owner = owner_of(svc)
        if wanted:
            try:
                await self.ip.allocate(wanted, owner, dry_run=txn.dry_run)
            except AllocationError as e:
                raise invalid_service(
                    svc, [invalid_list("spec.clusterIPs", ips, f"failed to allocate IP {wanted}: {e}")]
                ) from None
            ip = wanted
        else:
            try:
                ip = await self.ip.allocate_next(owner, dry_run=txn.dry_run)
            except Full as e:
                raise errors.InternalError(f"failed to allocate a serviceIP: {e}") from None
        if not txn.dry_run:
            txn.ips.append(ip)
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip, *ips[1:]]

    async def _claim_port(self, svc: Obj, txn: Transaction, i: int, port: int) -> None:
        try:
            await self.ports.allocate(port, owner_of(svc), dry_run=txn.dry_run)
        except AllocationError as e:
            raise invalid_service(svc, [invalid(f"spec.ports[{i}].nodePort", port, str(e))]) from None
        if not txn.dry_run:
            txn.ports.append(port)

    async def _next_port(self, svc: Obj, txn: Transaction) -> int:
        try:
            port = await self.ports.allocate_next(owner_of(svc), dry_run=txn.dry_run)
        except Full as e:
            raise errors.InternalError(f"failed to allocate a nodePort: {e}") from None
        if not txn.dry_run:
            txn.ports.append(port)
        return port

    async def _init_node_ports(self, svc: Obj, txn: Transaction) -> None:
        """initNodePorts: one node port per service port number, requested values first."""
        spec = svc["spec"]
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        by_port: dict[Any, int] = {}
        for i, sp in enumerate(ports):
            requested = int(sp.get("nodePort") or 0)
            if not requested and not should_allocate_node_ports(spec):
                continue
            allocated = by_port.get(sp.get("port"), 0)
            if not allocated:
                wanted = next(
                    (int(p["nodePort"]) for p in ports if p.get("port") == sp.get("port") and p.get("nodePort")), 0
                )
                if wanted:
                    await self._claim_port(svc, txn, i, wanted)
                    node_port = wanted
                else:
                    node_port = await self._next_port(svc, txn)
                sp["nodePort"] = by_port[sp.get("port")] = node_port
            elif requested != allocated:
                if not requested:
                    sp["nodePort"] = allocated
                else:
                    await self._claim_port(svc, txn, i, requested)

    async def _alloc_health_check_port(self, svc: Obj, txn: Transaction) -> None:
        """allocHealthCheckNodePort: the requested port, else a free one."""
        spec = svc["spec"]
        requested = int(spec.get("healthCheckNodePort") or 0)
        if requested:
            try:
                await self.ports.allocate(requested, owner_of(svc), dry_run=txn.dry_run)
            except AllocationError as e:
                raise errors.InternalError(
                    f"failed to allocate requested HealthCheck NodePort {requested}: {e}"
                ) from None
            if not txn.dry_run:
                txn.ports.append(requested)
        else:
            spec["healthCheckNodePort"] = await self._next_port(svc, txn)

    # ------------------------------------------------------------------ update
    async def allocate_update(self, svc: Obj, old: Obj, *, dry_run: bool) -> Transaction:
        errs = self.init_ip_family_fields(svc, old)
        if errs:
            raise invalid_service(svc, errs)
        txn = Transaction(self, owner_of(old).uid, dry_run)
        try:
            if not needs_cluster_ip(old) and needs_cluster_ip(svc):
                await self._alloc_cluster_ips(svc, txn)
            elif needs_cluster_ip(old) and not needs_cluster_ip(svc):
                txn.deferred_ips.extend(held_cluster_ips(old))
            if needs_node_port(old) and not needs_node_port(svc):
                txn.deferred_ports.extend(sorted(held_node_ports(old)))
            if needs_node_port(svc):
                await self._update_node_ports(svc, old, txn)
            await self._update_health_check_port(svc, old, txn)
        except BaseException:
            await txn.finish(False)
            raise
        return txn

    async def _update_node_ports(self, svc: Obj, old: Obj, txn: Transaction) -> None:
        """updateNodePorts: claim new numbers, allocate missing ones, give up the ones no longer used."""
        spec = svc["spec"]
        old_numbers = held_node_ports(old)
        claimed: set[int] = set()
        seen: set[tuple[Any, int]] = set()
        for i, sp in enumerate(p for p in spec.get("ports") or [] if isinstance(p, dict)):
            requested = int(sp.get("nodePort") or 0)
            if not requested and not should_allocate_node_ports(spec):
                continue
            if requested:
                if requested not in old_numbers and requested not in claimed:
                    await self._claim_port(svc, txn, i, requested)
                    claimed.add(requested)
            else:
                requested = sp["nodePort"] = await self._next_port(svc, txn)
            key = (sp.get("protocol"), requested)
            if key in seen:
                raise errors.InternalError(f"duplicate nodePort: {requested}/{sp.get('protocol')}")
            seen.add(key)
        if needs_node_port(old):
            txn.deferred_ports.extend(sorted(old_numbers - held_node_ports(svc)))

    async def _update_health_check_port(self, svc: Obj, old: Obj, txn: Transaction) -> None:
        """updateHealthCheckNodePort: allocated on becoming LoadBalancer/Local, released on leaving it."""
        before, after = needs_health_check(old), needs_health_check(svc)
        old_port = int((old.get("spec") or {}).get("healthCheckNodePort") or 0)
        if not before and after:
            await self._alloc_health_check_port(svc, txn)
        elif before and not after:
            if old_port and old_port not in held_node_ports(svc) and old_port not in txn.deferred_ports:
                txn.deferred_ports.append(old_port)
        elif before and after and int(svc["spec"].get("healthCheckNodePort") or 0) != old_port:
            msg = "cannot change healthCheckNodePort on loadBalancer service with externalTraffic=Local during update"
            raise invalid_service(
                svc, [invalid("spec.healthCheckNodePort", svc["spec"].get("healthCheckNodePort"), msg)]
            )

    # ------------------------------------------------------------------ delete
    async def release_service(self, svc: Obj) -> None:
        """Release what a deleted Service held (only records that still name it)."""
        uid = owner_of(svc).uid
        for ip in held_cluster_ips(svc):
            await self.ip.release(ip, uid)
        for port in sorted(held_node_ports(svc)):
            await self.ports.release(port, uid)

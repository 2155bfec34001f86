"""The Service strategy: Kubernetes' `pkg/registry/core/service/strategy.go` and its storage hooks.

Before validation it keeps `clusterIP` and `clusterIPs` in step
(NormalizeClusterIPs), and on update fills in what the client left out but
the server allocated (patchAllocatedValues: a `kubectl replace` of a
manifest without clusterIP or nodePort keeps them) and drops what the new
type no longer uses (dropTypeDependentFields: switching to ExternalName
wipes the cluster IPs, to ClusterIP the node ports). Validation is
`api.service_validation`. The storage hooks hand allocation to
`service_alloc.ServiceAllocators`, which the app attaches once storage is
open (`attach`); without one (unit tests of other kinds) Services are
stored without addresses.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api.service_validation import is_dns1035_label, validate_service, validate_service_update
from skiff.apiserver.registry import Registry
from skiff.apiserver.service_alloc import (
    ServiceAllocators,
    held_node_ports,
    needs_cluster_ip,
    needs_health_check,
    needs_node_port,
)
from skiff.apiserver.strategy import FieldErrors, Finish, Strategy

Obj = dict[str, Any]


def normalize_cluster_ips(new: Obj, old: Obj | None) -> None:
    """NormalizeClusterIPs: old clients set `clusterIP` only; keep `clusterIPs` in step with it."""
    spec, old_spec = new.get("spec"), (old or {}).get("spec") or {}
    if not isinstance(spec, dict):
        return
    cluster_ip, ips = spec.get("clusterIP") or "", spec.get("clusterIPs") or []
    if old is None:
        if cluster_ip and not ips:
            spec["clusterIPs"] = [cluster_ip]
        return
    old_ip, old_ips = old_spec.get("clusterIP") or "", old_spec.get("clusterIPs") or []
    if old_ips and not ips and old_ip == cluster_ip:
        spec["clusterIPs"] = ips = list(old_ips)
    if old_ip != cluster_ip:
        same = list(ips) == list(old_ips)
        if old_ip and not cluster_ip and same:
            spec.pop("clusterIPs", None)
        if cluster_ip and same:
            spec["clusterIPs"] = [cluster_ip]


def patch_allocated_values(new: Obj, old: Obj) -> None:
    """patchAllocatedValues: values the server allocated and the client did not send are kept."""
    spec, old_spec = new.get("spec"), old.get("spec") or {}
    if not isinstance(spec, dict):
        return
    if needs_cluster_ip(old) and needs_cluster_ip(new):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
    if needs_node_port(old) and needs_node_port(new):
        used = held_node_ports(old) & held_node_ports(new)
        by_name = {p.get("name", ""): p.get("nodePort", 0) for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and not port.get("nodePort"):
                value = by_name.get(port.get("name", ""), 0)
                if value and value not in used:
                    port["nodePort"] = value
    if needs_health_check(old) and needs_health_check(new) and not spec.get("healthCheckNodePort"):
        if old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def drop_type_dependent_fields(new: Obj, old: Obj) -> None:
    """dropTypeDependentFields: fields the new type does not use, if the client left them as they were."""
    spec, old_spec = new.get("spec"), old.get("spec") or {}
    if not isinstance(spec, dict):
        return
    if needs_cluster_ip(old) and not needs_cluster_ip(new):
        if spec.get("clusterIP") == old_spec.get("clusterIP") and spec.get("clusterIPs") == old_spec.get("clusterIPs"):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if spec.get(key) == old_spec.get(key):
                spec.pop(key, None)
    if needs_node_port(old) and not needs_node_port(new):
        new_ports = [p.get("nodePort") for p in spec.get("ports") or [] if isinstance(p, dict)]
        old_ports = [p.get("nodePort") for p in old_spec.get("ports") or [] if isinstance(p, dict)]
        if new_ports == old_ports:
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.pop("nodePort", None)
    if needs_health_check(old) and not needs_health_check(new):
        if spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort"):
            spec.pop("healthCheckNodePort", None)
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") != "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts") == old_spec.get("allocateLoadBalancerNodePorts"):
            spec.pop("allocateLoadBalancerNodePorts", None)
    if _externally_accessible(old_spec) and not _externally_accessible(spec):
        if spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
            spec.pop("externalTrafficPolicy", None)
    if spec.get("type") != "LoadBalancer" and isinstance(new.get("status"), dict):
        new["status"]["loadBalancer"] = {}


def _externally_accessible(spec: Obj) -> bool:
    kind = spec.get("type")
    return kind in ("LoadBalancer", "NodePort") or (kind == "ClusterIP" and bool(spec.get("externalIPs")))


class ServiceStrategy(Strategy):
    """Services: DNS-1035 names, `status.loadBalancer`, and cluster IPs / node ports from the allocators."""

    def __init__(self) -> None:
        super().__init__(
            has_status=True,
            tracks_generation=False,
            name_validator=is_dns1035_label,
            selectable_fields=("spec.clusterIP", "spec.type"),
        )
        self.allocators: ServiceAllocators | None = None

    def initial_status(self, obj: Obj) -> Any:
        return {"loadBalancer": {}}

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        normalize_cluster_ips(obj, None)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        normalize_cluster_ips(new, old)
        patch_allocated_values(new, old)
        drop_type_dependent_fields(new, old)

    def validate(self, obj: Obj) -> FieldErrors:
        return validate_service(obj)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        return validate_service_update(new, old)

    async def begin_create(self, obj: Obj, *, dry_run: bool) -> Finish | None:
        if self.allocators is None:
            return None
        return (await self.allocators.allocate_create(obj, dry_run=dry_run)).finish

    async def begin_update(self, new: Obj, old: Obj, *, dry_run: bool) -> Finish | None:
        if self.allocators is None:
            return None
        return (await self.allocators.allocate_update(new, old, dry_run=dry_run)).finish

    async def after_delete(self, obj: Obj) -> None:
        if self.allocators is not None:
            await self.allocators.release_service(copy.deepcopy(obj))


def attach(registry: Registry, allocators: ServiceAllocators) -> None:
    """Give the registry's Service strategy its allocators (once storage is open)."""
    rt = registry.get("", "v1", "services")
    if rt is not None and isinstance(rt.strategy, ServiceStrategy):
        rt.strategy.allocators = allocators

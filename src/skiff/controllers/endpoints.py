"""The Endpoints controller: a Service's `v1/Endpoints` lists the addresses of the pods it selects.

Kubernetes' `pkg/controller/endpoint`. For every Service with a selector, an
Endpoints object of the same name holds subsets: ready pods under
`addresses`, the others under `notReadyAddresses` (all under `addresses`
with `publishNotReadyAddresses`), each with its IP, node and a targetRef to
the pod, and the Service's ports resolved against each pod (a named
targetPort may be a different number in different pods, which makes
separate subsets). Pods without an IP, finished pods and terminating pods are
left out. Services without a selector are left alone: their Endpoints are
written by hand. The Endpoints of a deleted Service are deleted.
EndpointSlices, the newer form, come from `skiff.controllers.endpointslice`.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, Informer, resources, split_key
from skiff.client.cache import index_by_namespace
from skiff.controllers import endpointutil as eu
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
MAX_CAPACITY = 1000  # addresses per Endpoints object; beyond, it is truncated and annotated
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"


def _address(pod: Obj, service: Obj) -> Obj:
    meta = pod["metadata"]
    addr: Obj = {
        "ip": eu.pod_ips(pod)[0],
        "targetRef": {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid")},
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        addr["nodeName"] = node
    if eu.should_set_hostname(pod, service):
        addr["hostname"] = pod["spec"]["hostname"]
    return addr


def _address_key(addr: Obj) -> tuple[str, str]:
    return (str(addr.get("ip")), str((addr.get("targetRef") or {}).get("uid", "")))


def _port_key(port: Obj) -> tuple[str, int, str]:
    return (str(port.get("name", "")), int(port.get("port", 0)), str(port.get("protocol", "TCP")))


def desired_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The subsets of `service`'s Endpoints, grouped by port set and sorted (Kubernetes' RepackSubsets)."""
    spec = service.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    service_ports: list[Obj] = spec.get("ports") or []
    # address -> (ready?, ports); then grouped by identical port sets
    by_address: dict[tuple[str, str], tuple[Obj, bool, dict[tuple[str, int, str], Obj]]] = {}
    for pod in pods:
        if not eu.should_pod_be_in_endpoints(pod, include_terminating=publish_not_ready):
            continue
        addr = _address(pod, service)
        ready = publish_not_ready or eu.is_pod_ready(pod)
        ports: dict[tuple[str, int, str], Obj] = {}
        if not service_ports:
            if not eu.is_headless(service):
                continue  # only a headless Service may have endpoints without ports
        else:
            for sp in service_ports:
                number = eu.find_port(pod, sp)
                if number is None:
                    continue  # this pod does not offer that named port
                port = eu.endpoint_port(sp, number)
                ports[_port_key(port)] = port
            if not ports:
                continue
        by_address[_address_key(addr)] = (addr, ready, ports)
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for addr, ready, ports in by_address.values():
        key = tuple(sorted(ports))
        group = groups.setdefault(key, ([], [], [ports[k] for k in key]))
        (group[0] if ready else group[1]).append(addr)
    subsets = []
    for ready_addrs, not_ready_addrs, port_list in groups.values():
        subset: Obj = {}
        if ready_addrs:
            subset["addresses"] = sorted(ready_addrs, key=_address_key)
        if not_ready_addrs:
            subset["notReadyAddresses"] = sorted(not_ready_addrs, key=_address_key)
        if port_list:
            subset["ports"] = port_list
        subsets.append(subset)
    subsets.sort(key=lambda s: [_port_key(p) for p in s.get("ports") or []])
    return subsets


def truncate(subsets: list[Obj], limit: int = MAX_CAPACITY) -> tuple[list[Obj], bool]:
    """Keep at most `limit` addresses, ready ones first; whether anything was cut."""
    total = sum(len(s.get("addresses") or []) + len(s.get("notReadyAddresses") or []) for s in subsets)
    if total <= limit:
        return subsets, False
    room = limit
    out: list[Obj] = [{k: v for k, v in s.items() if k == "ports"} for s in subsets]
    for field in ("addresses", "notReadyAddresses"):
        for src, dst in zip(subsets, out, strict=True):
            kept = (src.get(field) or [])[:room]
            room -= len(kept)
            if kept:
                dst[field] = kept
    return [s for s in out if s.get("addresses") or s.get("notReadyAddresses")], True


class EndpointsController(Controller):
    name = "endpoints"
    workers = 5

    def __init__(self, client: Client, services: Informer, pods: Informer, endpoints: Informer) -> None:
        super().__init__()
        self.client = client
        self.services = self.watch(services)
        self.pods = self.wait_for(pods)
        self.endpoints = self.wait_for(endpoints)
        eu.ensure_index(pods, eu.NAMESPACE_INDEX, index_by_namespace)
        eu.add_pod_handlers(pods, services, self.enqueue_key)
        # Endpoints deleted by someone: the Service's are written again
        endpoints.add_handlers(on_delete=self.enqueue)

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        assert ns is not None
        service = self.services.get(key)
        if service is None:
            if self.endpoints.get(key) is not None:
                try:
                    await self.client.delete(resources.ENDPOINTS, name, namespace=ns)
                except errors.NotFound:
                    pass
            return
        selector = eu.selector_of(service)
        if selector is None:
            return  # Endpoints of a Service without a selector are written by its owner
        pods = [p for p in self.pods.by_index(eu.NAMESPACE_INDEX, ns) if eu.selects(selector, p)]
        subsets, truncated = truncate(desired_subsets(service, pods))
        labels = dict((service["metadata"].get("labels")) or {})
        labels[SKIP_MIRROR] = "true"
        if eu.is_headless(service):
            labels[eu.LABEL_HEADLESS] = ""
        current = self.endpoints.get(key)
        if current is None:
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "subsets": subsets,
            }
            if truncated:
                body["metadata"]["annotations"] = {OVER_CAPACITY: "truncated"}
            try:
                await self.client.create(resources.ENDPOINTS, body, namespace=ns)
            except errors.Forbidden as exc:
                if not eu.namespace_terminating(exc):
                    raise
            return
        annotations = dict(current["metadata"].get("annotations") or {})
        if truncated:
            annotations[OVER_CAPACITY] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY, None)
        if (
            (current.get("subsets") or []) == subsets
            and (current["metadata"].get("labels") or {}) == labels
            and (current["metadata"].get("annotations") or {}) == annotations
        ):
            return
        updated = copy.deepcopy(current)
        updated["subsets"] = subsets
        updated["metadata"]["labels"] = labels
        updated["metadata"]["annotations"] = annotations
        await self.client.update(resources.ENDPOINTS, updated, namespace=ns)


def new(ctx: ControllerContext) -> Controller:
    f = ctx.informers
    return EndpointsController(
        ctx.client, f.informer(resources.SERVICES), f.informer(resources.PODS), f.informer(resources.ENDPOINTS)
    )

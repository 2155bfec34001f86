"""The EndpointSlice controller: a Service's endpoints as discovery.k8s.io/v1 EndpointSlices.

Kubernetes' `pkg/controller/endpointslice` with the reconciler of
`k8s.io/endpointslice`. Endpoints objects grow with the Service and are
rewritten whole on every change; slices hold at most 100 endpoints each
(`max_endpoints_per_slice`), so a change rewrites one small object, and
service proxies watch slices. For every Service with a selector:

- each pod with an IP that is not finished becomes an endpoint with
  conditions ready (Ready and not terminating, or publishNotReadyAddresses),
  serving (Ready) and terminating (being deleted), its node, zone and a
  targetRef; pods are grouped by the ports they resolve the Service's ports
  to, one group of slices per port set and address type;
- existing slices are changed as little as possible: endpoints stay in the
  slice they are in, new ones fill slices being written anyway, then a slice
  with room, then new slices; emptied slices are deleted (or reused for new
  ones); a Service without endpoints keeps one empty placeholder slice;
- slices carry `kubernetes.io/service-name`, `endpointslice.kubernetes.io/managed-by:
  endpointslice-controller.k8s.io` and an ownerReference to the Service, so
  the garbage collector removes them with it (this controller does too).

The informer's cache lags behind this controller's own writes; like
Kubernetes' EndpointSliceTracker, the resourceVersions it wrote are
remembered and a reconcile waits until the cache has caught up, so that a
slice created a moment ago is never created twice.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, EventRecorder, Informer, RequeueAfter, resources, split_key
from skiff.client.cache import index_by_namespace
from skiff.controllers import endpointutil as eu
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100
SERVICE_INDEX = "endpointslice-service"
LABEL_ZONE = "topology.kubernetes.io/zone"
TRACK_SECONDS = 30.0  # how long a write of ours is waited for in the cache before it is given up on
PortKey = tuple[tuple[str, int, str, str], ...]
EndpointKey = tuple[tuple[str, ...], str]


def slice_service_key(slice_: Obj) -> list[str]:
    """The `namespace/service` of a slice this controller manages (index function)."""
    meta = slice_.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(MANAGED_BY) != CONTROLLER_NAME or not labels.get(eu.LABEL_SERVICE_NAME):
        return []
    return [f"{meta.get('namespace')}/{labels[eu.LABEL_SERVICE_NAME]}"]


def port_key(ports: list[Obj]) -> PortKey:
    keys = (
        (str(p.get("name", "")), int(p.get("port", 0)), str(p.get("protocol", "TCP")), str(p.get("appProtocol", "")))
        for p in ports
    )
    return tuple(sorted(keys))


def endpoint_key(endpoint: Obj) -> EndpointKey:
    return (tuple(sorted(endpoint.get("addresses") or [])), str((endpoint.get("targetRef") or {}).get("uid", "")))


def owned_by(slice_: Obj, service: Obj) -> bool:
    uid = service["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in slice_["metadata"].get("ownerReferences") or [])


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {
        k: v
        for k, v in (service["metadata"].get("labels") or {}).items()
        if k not in (eu.LABEL_SERVICE_NAME, MANAGED_BY, eu.LABEL_HEADLESS)
    }
    if eu.is_headless(service):
        labels[eu.LABEL_HEADLESS] = ""
    labels[eu.LABEL_SERVICE_NAME] = service["metadata"]["name"]
    labels[MANAGED_BY] = CONTROLLER_NAME
    return labels


def new_slice(service: Obj, address_type: str, ports: list[Obj], endpoints: list[Obj]) -> Obj:
    meta = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": f"{meta['name'][:62]}-",
            "namespace": meta["namespace"],
            "labels": slice_labels(service),
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": meta["name"],
                    "uid": meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports,
    }


def pod_to_endpoint(pod: Obj, node: Obj | None, service: Obj, address_type: str) -> Obj:
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    serving = eu.is_pod_ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    endpoint: Obj = {
        "addresses": [ip for ip in eu.pod_ips(pod) if eu.ip_family(ip) == address_type][:1],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid")},
    }
    if spec.get("nodeName"):
        endpoint["nodeName"] = spec["nodeName"]
    zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(LABEL_ZONE)
    if zone:
        endpoint["zone"] = zone
    if eu.should_set_hostname(pod, service):
        endpoint["hostname"] = spec["hostname"]
    return endpoint


@dataclass
class Plan:
    """The writes one reconcile makes."""

    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)

    def extend(self, other: Plan) -> None:
        self.create += other.create
        self.update += other.update
        self.delete += other.delete


def plan_port_mapping(
    service: Obj,
    address_type: str,
    ports: list[Obj],
    existing: list[Obj],
    desired: dict[EndpointKey, Obj],
    max_per_slice: int,
) -> Plan:
    """Kubernetes' reconcileByPortMapping: the fewest slice writes that make `existing` hold `desired`."""
    plan = Plan()
    unchanged: list[Obj] = []
    placed: set[EndpointKey] = set()
    labels = slice_labels(service)
    for slice_ in existing:
        kept: list[Obj] = []
        changed = False
        for endpoint in slice_.get("endpoints") or []:
            key = endpoint_key(endpoint)
            want = desired.get(key)
            if want is None or key in placed:
                changed = True  # gone, or a duplicate of one placed in another slice
                continue
            placed.add(key)
            kept.append(want)
            changed = changed or want != endpoint
        if not kept:
            plan.delete.append(slice_)
            continue
        if changed or (slice_["metadata"].get("labels") or {}) != labels or slice_.get("ports") != ports:
            updated = copy.deepcopy(slice_)
            updated["endpoints"] = kept
            updated["ports"] = ports
            updated["metadata"]["labels"] = labels
            plan.update.append(updated)
        else:
            unchanged.append(slice_)
    remaining = [ep for key, ep in desired.items() if key not in placed]
    # fill the slices written anyway, fullest first
    for updated in sorted(plan.update, key=lambda s: -len(s["endpoints"])):
        room = max_per_slice - len(updated["endpoints"])
        if room > 0 and remaining:
            updated["endpoints"] += remaining[:room]
            remaining = remaining[room:]
    # then one unchanged slice with room for all the rest (one write instead of a new slice)
    if remaining:
        for slice_ in sorted(unchanged, key=lambda s: -len(s.get("endpoints") or [])):
            if len(slice_.get("endpoints") or []) + len(remaining) <= max_per_slice:
                updated = copy.deepcopy(slice_)
                updated["endpoints"] = list(updated.get("endpoints") or []) + remaining
                plan.update.append(updated)
                remaining = []
                break
    while remaining:
        plan.create.append(new_slice(service, address_type, ports, remaining[:max_per_slice]))
        remaining = remaining[max_per_slice:]
    return plan


def is_placeholder(slice_: Obj, service: Obj) -> bool:
    return (
        not slice_.get("endpoints")
        and not slice_.get("ports")
        and (slice_["metadata"].get("labels") or {}) == slice_labels(service)
        and owned_by(slice_, service)
    )


class EndpointSliceController(Controller):
    name = "endpointslice"
    workers = 5

    def __init__(
        self,
        client: Client,
        services: Informer,
        pods: Informer,
        slices: Informer,
        nodes: Informer,
        *,
        max_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
        recorder: EventRecorder | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.recorder = recorder
        self.missing_ports: dict[str, str] = {}  # service key -> the last FailedToFindPort message recorded
        self.max_per_slice = max_per_slice
        self.services = self.watch(services)
        self.pods = self.wait_for(pods)
        self.slices = self.wait_for(slices)
        self.nodes = self.wait_for(nodes)
        eu.ensure_index(pods, eu.NAMESPACE_INDEX, index_by_namespace)
        eu.ensure_index(slices, SERVICE_INDEX, slice_service_key)
        eu.add_pod_handlers(pods, services, self.enqueue_key)
        slices.add_handlers(on_add=self._slice_changed, on_update=lambda _o, n: self._slice_changed(n))
        slices.add_handlers(on_delete=self._slice_deleted)
        # what this controller wrote and the cache may not show yet: service key -> slice name -> rv / deleted
        self.written: dict[str, dict[str, tuple[int, float]]] = {}
        self.deleted: dict[str, dict[str, float]] = {}

    # --- events -------------------------------------------------------------------------------
    def _slice_changed(self, slice_: Obj) -> None:
        for key in slice_service_key(slice_):
            mine = self.written.get(key, {}).get(slice_["metadata"]["name"])
            if mine is None or _rv(slice_) != mine[0]:
                self.enqueue_key(key)  # not our own write echoing back: someone else changed it

    def _slice_deleted(self, slice_: Obj) -> None:
        for key in slice_service_key(slice_):
            name = slice_["metadata"]["name"]
            self.written.get(key, {}).pop(name, None)
            if self.deleted.get(key, {}).pop(name, None) is None:
                self.enqueue_key(key)

    def _stale(self, key: str, existing: list[Obj]) -> bool:
        """Whether the cache does not show this controller's last writes for the Service yet."""
        now = time.monotonic()
        cached = {s["metadata"]["name"]: s for s in existing}
        written = self.written.get(key, {})
        for name, (rv, when) in list(written.items()):
            current = cached.get(name)
            if now - when > TRACK_SECONDS or (current is not None and _rv(current) >= rv):
                del written[name]
            elif current is None or _rv(current) < rv:
                return True
        deleted = self.deleted.get(key, {})
        for name, when in list(deleted.items()):
            if now - when > TRACK_SECONDS or name not in cached:
                del deleted[name]
            else:
                return True
        return False

    # --- reconcile ----------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        ns, _name = split_key(key)
        assert ns is not None
        service = self.services.get(key)
        existing = self.slices.by_index(SERVICE_INDEX, key)
        if service is None:
            # the garbage collector removes them through their ownerReference; so does this
            await self._write(key, ns, Plan(delete=existing))
            self.missing_ports.pop(key, None)
            return
        selector = eu.selector_of(service)
        if selector is None:
            return
        if self._stale(key, existing):
            raise RequeueAfter(0.2)
        pods = [p for p in self.pods.by_index(eu.NAMESPACE_INDEX, ns) if eu.selects(selector, p)]
        spec = service.get("spec") or {}
        address_types = list(spec.get("ipFamilies") or ["IPv4"])
        plan = Plan()
        by_type: dict[str, list[Obj]] = {}
        for slice_ in existing:
            if slice_.get("addressType") in address_types and owned_by(slice_, service):
                by_type.setdefault(slice_["addressType"], []).append(slice_)
            else:
                plan.delete.append(slice_)  # another Service of that name before, or a family no longer served
        missing_nodes = False
        for address_type in address_types:
            sub, missing = self._plan_address_type(service, pods, by_type.get(address_type, []), address_type)
            plan.extend(sub)
            missing_nodes = missing_nodes or missing
        # reuse slices about to be deleted for slices about to be created (one write, not two)
        for doomed in list(plan.delete):
            if not plan.create:
                break
            if owned_by(doomed, service) and doomed.get("addressType") == plan.create[-1]["addressType"]:
                fresh = plan.create.pop()
                reused = copy.deepcopy(doomed)
                reused["metadata"]["labels"] = fresh["metadata"]["labels"]
                reused["endpoints"], reused["ports"] = fresh["endpoints"], fresh["ports"]
                plan.update.append(reused)
                plan.delete.remove(doomed)
        if service["metadata"].get("deletionTimestamp"):
            plan.create = []  # do not race the garbage collector
        await self._write(key, ns, plan)
        await self._report_missing_ports(key, service, pods)
        if missing_nodes:
            raise RequeueAfter(5.0)  # a pod on a Node not (yet) known: look again

    async def _report_missing_ports(self, key: str, service: Obj, pods: list[Obj]) -> None:
        """A Warning on the Service when selected pods lack a named targetPort (they are left out for that port)."""
        message = missing_ports_message(service, pods)
        if message == self.missing_ports.get(key, ""):
            return
        self.missing_ports[key] = message
        if message and self.recorder is not None:
            await self.recorder.record(service, type="Warning", reason="FailedToFindPort", message=message)

    def _plan_address_type(
        self, service: Obj, pods: list[Obj], existing: list[Obj], address_type: str
    ) -> tuple[Plan, bool]:
        spec = service.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        service_ports: list[Obj] = spec.get("ports") or []
        existing_by_ports: dict[PortKey, list[Obj]] = {}
        for slice_ in existing:
            existing_by_ports.setdefault(port_key(slice_.get("ports") or []), []).append(slice_)
        desired: dict[PortKey, dict[EndpointKey, Obj]] = {}
        desired_ports: dict[PortKey, list[Obj]] = {}
        missing_nodes = False
        for pod in pods:
            if not eu.should_pod_be_in_endpoints(pod, include_terminating=True):
                continue
            ports = []
            for sp in service_ports:
                number = eu.find_port(pod, sp)
                if number is not None:
                    ports.append(eu.endpoint_port(sp, number))
            node_name = (pod.get("spec") or {}).get("nodeName") or ""
            node = self.nodes.get(node_name) if node_name else None
            if node is None and not publish_not_ready:
                missing_nodes = True  # as Kubernetes: skipped until its Node is known
                continue
            endpoint = pod_to_endpoint(pod, node, service, address_type)
            if not endpoint["addresses"]:
                continue
            key = port_key(ports)
            desired_ports.setdefault(key, ports)
            desired.setdefault(key, {})[endpoint_key(endpoint)] = endpoint
        plan = Plan()
        for key, endpoints in desired.items():
            plan.extend(
                plan_port_mapping(
                    service,
                    address_type,
                    desired_ports[key],
                    existing_by_ports.get(key, []),
                    endpoints,
                    self.max_per_slice,
                )
            )
        for key, slices in existing_by_ports.items():
            if key not in desired:
                plan.delete.extend(slices)
        if len(plan.delete) == len(existing) and not plan.create:
            # no endpoints at all: one empty placeholder slice stays
            if len(plan.delete) == 1 and is_placeholder(plan.delete[0], service):
                plan.delete = []
            else:
                plan.create.append(new_slice(service, address_type, [], []))
        return plan, missing_nodes

    async def _write(self, key: str, ns: str, plan: Plan) -> None:
        now = time.monotonic()
        for slice_ in plan.create:
            try:
                created = await self.client.create(resources.ENDPOINTSLICES, slice_, namespace=ns)
            except errors.Forbidden as exc:
                if eu.namespace_terminating(exc):
                    return  # nothing can be created in it any more
                raise
            self.written.setdefault(key, {})[created["metadata"]["name"]] = (_rv(created), now)
        for slice_ in plan.update:
            updated = await self.client.update(resources.ENDPOINTSLICES, slice_, namespace=ns)
            self.written.setdefault(key, {})[updated["metadata"]["name"]] = (_rv(updated), now)
        for slice_ in plan.delete:
            name = slice_["metadata"]["name"]
            try:
                await self.client.delete(resources.ENDPOINTSLICES, name, namespace=ns)
            except errors.NotFound:
                continue
            self.written.get(key, {}).pop(name, None)
            self.deleted.setdefault(key, {})[name] = now


def missing_ports_message(service: Obj, pods: list[Obj]) -> str:
    """Which Service ports name a targetPort that some selected pods do not have; "" when none."""
    parts = []
    candidates = [p for p in pods if eu.should_pod_be_in_endpoints(p, include_terminating=True)]
    for sp in (service.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort")
        if not isinstance(target, str) or target.isdigit():
            continue
        without = sorted(p["metadata"]["name"] for p in candidates if eu.find_port(p, sp) is None)
        if without:
            port = sp.get("name") or str(sp.get("port"))
            more = f" and {len(without) - 1} more" if len(without) > 1 else ""
            parts.append(f"port {port!r}: pod {without[0]}{more} has no {sp.get('protocol') or 'TCP'} container "
                         f"port named {target!r}")  # fmt: skip
    return ("; ".join(parts) + "; left out of those ports' endpoints") if parts else ""


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def new(ctx: ControllerContext) -> Controller:
    f = ctx.informers
    max_per_slice = int(ctx.options.extra.get("max_endpoints_per_slice", MAX_ENDPOINTS_PER_SLICE))
    return EndpointSliceController(
        ctx.client,
        f.informer(resources.SERVICES),
        f.informer(resources.PODS),
        f.informer(resources.ENDPOINTSLICES),
        f.informer(resources.NODES),
        max_per_slice=max_per_slice,
        recorder=ctx.recorder("endpointslice-controller"),
    )

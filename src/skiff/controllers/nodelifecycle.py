"""The node lifecycle controller: a node that falls silent is marked Unknown, tainted, and its pods evicted.

Kubernetes' `pkg/controller/nodelifecycle` together with the taint eviction
controller (`pkg/controller/tainteviction`), for one reason: pods on a dead
machine must be given up so that their controllers recreate them elsewhere.
Each reconcile of a node, in order:

1. health (`nodelifecycle_health`): a node not heard from (Lease renewal or
   Ready heartbeat) for `node_monitor_grace_period` (40 s) gets every
   condition set to Unknown, and a NodeNotReady event;
2. taints (`nodelifecycle_taints`): conditions map to NoSchedule taints; a
   node not Ready gets the NoExecute taint too, at most `node_eviction_rate`
   nodes per second per zone (0.1, as kube-controller-manager's
   `--node-eviction-rate`). A zone with ≥ 55 % of more than two nodes down
   slows to `secondary_node_eviction_rate` (0 for zones of ≤ 50 nodes), and
   when every node of every zone is down the controller assumes the fault is
   its own (the control plane lost the network), removes the NoExecute taints
   and evicts nothing until a node comes back. Taints go once the node is Ready;
3. the pods of a node not Ready are marked not Ready (MarkPodsNotReady);
4. eviction (`tainteviction`): pods that do not tolerate the NoExecute taints
   (for long enough) are deleted.

A monitor task recomputes the zone states every `node_monitor_period`.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from skiff.api import errors
from skiff.api.tolerations import tolerates
from skiff.client import Client, Controller, EventRecorder, Informer, RequeueAfter, object_key, resources, split_key
from skiff.client.cache import index_by_node_name
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.controllers.context import ControllerContext
from skiff.controllers.nodelifecycle_health import (
    NODE_LEASE_NAMESPACE,
    Heartbeats,
    condition,
    now_rfc3339,
    ready_status,
    unknown_conditions,
)
from skiff.controllers.nodelifecycle_taints import (
    STATE_FULL,
    STATE_PARTIAL,
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TokenBucket,
    has_managed_no_execute,
    managed_taints,
    no_execute_taints,
    updated_taints,
    wanted_taints,
    zone_key,
    zone_states,
)
from skiff.controllers.tainteviction import TaintEvictor, effective_tolerations, toleration_time

__all__ = [
    "TAINT_NOT_READY",
    "TAINT_UNREACHABLE",
    "NodeLifecycleController",
    "TokenBucket",
    "effective_tolerations",
    "new",
    "ready_status",
    "tolerates",
    "toleration_time",
    "zone_key",
]

Obj = dict[str, Any]
NODE_INDEX = "nodeName"


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    workers = 4

    def __init__(
        self,
        client: Client,
        nodes: Informer,
        leases: Informer,
        pods: Informer,
        *,
        grace_period: float = 40.0,
        monitor_period: float = 5.0,
        default_eviction_seconds: int = 300,
        eviction_rate: float = 0.1,
        secondary_eviction_rate: float = 0.01,
        large_cluster_threshold: int = 50,
        unhealthy_zone_threshold: float = 0.55,
        recorder: EventRecorder | None = None,
        eviction_recorder: EventRecorder | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.grace_period = grace_period
        self.monitor_period = monitor_period
        self.default_eviction_seconds = default_eviction_seconds
        self.eviction_rate = eviction_rate
        self.secondary_eviction_rate = secondary_eviction_rate
        self.large_cluster_threshold = large_cluster_threshold
        self.unhealthy_zone_threshold = unhealthy_zone_threshold
        self.recorder = recorder or EventRecorder(client, component="node-controller")
        self.eviction_recorder = eviction_recorder or EventRecorder(client, component="taint-eviction-controller")
        self.nodes = self.watch(nodes)
        self.leases = self.wait_for(leases)
        self.pods = self.wait_for(pods)
        try:
            pods.add_index(NODE_INDEX, index_by_node_name)
        except ValueError:
            pass  # a shared informer another controller indexed already
        leases.add_handlers(on_add=self._lease_changed, on_update=lambda _o, n: self._lease_changed(n))
        pods.add_handlers(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.heartbeats = Heartbeats()
        self.zone_states: dict[str, str] = {}
        self.zone_limiters: dict[str, TokenBucket] = {}
        self.master_disruption = False
        self.evictor = TaintEvictor(
            client, self.eviction_recorder, default_eviction_seconds=default_eviction_seconds, log=self.log
        )

    # --- events -------------------------------------------------------------------------------
    def _lease_changed(self, lease: Obj) -> None:
        name = lease["metadata"]["name"]
        renew = (lease.get("spec") or {}).get("renewTime")
        if self.heartbeats.lease_renewed(name, renew, time.monotonic()):
            node = self.nodes.get(name)
            if node is not None and (ready_status(node) != "True" or managed_taints(node)):
                self.enqueue_key(name)  # coming back: clear it now, not at the next deadline

    def _pod_changed(self, pod: Obj) -> None:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return
        node = self.nodes.get(node_name)
        if node is not None and (ready_status(node) != "True" or no_execute_taints(node)):
            self.enqueue_key(node_name)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        if (
            old is new  # a resync
            or old_spec.get("tolerations") != new_spec.get("tolerations")
            or old_spec.get("nodeName") != new_spec.get("nodeName")
            or condition(old, "Ready") != condition(new, "Ready")
        ):
            self._pod_changed(new)

    def _pod_deleted(self, pod: Obj) -> None:
        self.evictor.forget(object_key(pod))

    # --- running ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        monitor = spawn(self._monitor(stop), name=f"{self.name}/monitor", logger=self.log)
        try:
            await super().run(stop)
        finally:
            await cancel_and_wait([monitor])

    async def _monitor(self, stop: asyncio.Event) -> None:
        """Every monitor period: zone states (and the eviction rates they imply)."""
        await asyncio.gather(self.nodes.wait_synced(), self.leases.wait_synced(), self.pods.wait_synced())
        while not stop.is_set():
            self.update_zone_states()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.monitor_period)
            except TimeoutError:
                pass

    def update_zone_states(self) -> None:
        """Kubernetes' handleDisruption: per-zone Normal / PartialDisruption / FullDisruption."""
        zones, states = zone_states(self.nodes.list(), self.unhealthy_zone_threshold)
        all_down = bool(states) and all(s == STATE_FULL for s in states.values())
        changed_zones = {z for z in states if states[z] != self.zone_states.get(z)}
        if all_down != self.master_disruption:
            if all_down:
                self.log.warning("every node is not Ready: the control plane may be cut off; no evictions")
            else:
                self.log.info("some node is Ready again: leaving full-disruption mode")
            self.master_disruption = all_down
            changed_zones = set(states)
        for zone in changed_zones:
            size = len(zones[zone])
            if states[zone] == STATE_PARTIAL:
                qps = self.secondary_eviction_rate if size > self.large_cluster_threshold else 0.0
            else:
                qps = self.eviction_rate  # Normal, and FullDisruption of one zone among healthy ones
            self.zone_limiters.setdefault(zone, TokenBucket(qps)).swap(qps)
            if zone in self.zone_states:
                self.log.info("zone %r: %s → %s", zone, self.zone_states[zone], states[zone])
            for node in zones[zone]:
                self.enqueue(node)
        self.zone_states = states

    # --- reconcile ----------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        _ns, name = split_key(key)
        node = self.nodes.get(name)
        if node is None:
            self.heartbeats.forget(name)
            return
        wake: list[float] = []
        node, went_not_ready = await self._check_health(node, wake)
        if went_not_ready:
            await self.recorder.record(
                node, type="Normal", reason="NodeNotReady", message=f"Node {name} status is now: NodeNotReady"
            )
        node = await self._update_taints(node, wake)
        pods = self.pods.by_index(NODE_INDEX, name)
        if ready_status(node) != "True":
            await self._mark_pods_not_ready(pods)
        await self.evictor.evict(no_execute_taints(node), pods, wake)
        if wake:
            raise RequeueAfter(max(min(wake), 0.05))

    async def _check_health(self, node: Obj, wake: list[float]) -> tuple[Obj, bool]:
        """Note heartbeats; mark the node Unknown once silent past the grace period."""
        name = node["metadata"]["name"]
        now = time.monotonic()
        heartbeat = (condition(node, "Ready") or {}).get("lastHeartbeatTime")
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        health = self.heartbeats.observe(name, heartbeat, renew, now)
        silent_until = health.probe + self.grace_period
        if now < silent_until:
            wake.append(silent_until - now + 0.01)
            return node, False
        was_ready = ready_status(node) == "True"
        conditions = unknown_conditions(node, now_rfc3339())
        if conditions is None:
            return node, False
        updated = copy.deepcopy(node)
        updated["status"]["conditions"] = conditions
        written = await self.client.update_status(resources.NODES, updated)
        self.log.info("node %s: no heartbeat for %.0fs; marked Unknown", name, now - health.probe)
        return written, was_ready

    def _zone_allows_taint(self, node: Obj, wake: list[float]) -> bool:
        limiter = self.zone_limiters.get(zone_key(node))
        if limiter is None:  # a zone the monitor has not seen yet
            limiter = self.zone_limiters[zone_key(node)] = TokenBucket(self.eviction_rate)
        wait = limiter.take()
        if wait > 0:
            wake.append(min(wait, self.monitor_period))
            return False
        return True

    async def _update_taints(self, node: Obj, wake: list[float]) -> Obj:
        taints: list[Obj] = list((node.get("spec") or {}).get("taints") or [])
        want_no_schedule, want_no_execute = wanted_taints(node)
        if self.master_disruption:
            want_no_execute = None
        elif (
            want_no_execute is not None
            and not has_managed_no_execute(taints)
            and not self._zone_allows_taint(node, wake)
        ):
            want_no_execute = None  # rate-limited: wait for the zone's turn
        new_taints = updated_taints(taints, want_no_schedule, want_no_execute, now_rfc3339())
        if new_taints == taints:
            return node
        updated = copy.deepcopy(node)
        updated.setdefault("spec", {})["taints"] = new_taints
        if not new_taints:
            del updated["spec"]["taints"]
        written = await self.client.update(resources.NODES, updated)
        self.log.info(
            "node %s: taints %s", node["metadata"]["name"], [f"{t['key']}:{t['effect']}" for t in new_taints] or "none"
        )
        return written

    async def _mark_pods_not_ready(self, pods: list[Obj]) -> None:
        """Kubernetes' MarkPodsNotReady: a pod on a node that is not Ready is not Ready either."""
        for pod in pods:
            ready = condition(pod, "Ready")
            if (
                ready is None
                or ready.get("status") == "False"
                or (pod.get("status") or {}).get("phase")
                in (
                    "Succeeded",
                    "Failed",
                )
            ):
                continue
            updated = copy.deepcopy(pod)
            for cond in updated["status"]["conditions"]:
                if cond.get("type") == "Ready":
                    cond["status"] = "False"
                    cond["lastTransitionTime"] = now_rfc3339()
            try:
                await self.client.update_status(resources.PODS, updated)
            except errors.NotFound:
                continue
            await self.recorder.record(pod, type="Warning", reason="NodeNotReady", message="Node is not ready")


def new(ctx: ControllerContext) -> Controller:
    opts = ctx.options
    f = ctx.informers
    extra = opts.extra
    return NodeLifecycleController(
        ctx.client,
        f.informer(resources.NODES),
        f.informer(resources.LEASES, namespace=NODE_LEASE_NAMESPACE),
        f.informer(resources.PODS),
        grace_period=opts.node_monitor_grace_period,
        monitor_period=opts.node_monitor_period,
        default_eviction_seconds=opts.default_eviction_seconds,
        eviction_rate=float(extra.get("node_eviction_rate", 0.1)),
        secondary_eviction_rate=float(extra.get("secondary_node_eviction_rate", 0.01)),
        large_cluster_threshold=int(extra.get("large_cluster_size_threshold", 50)),
        unhealthy_zone_threshold=float(extra.get("unhealthy_zone_threshold", 0.55)),
        recorder=ctx.recorder("node-controller"),
        eviction_recorder=ctx.recorder("taint-eviction-controller"),
    )

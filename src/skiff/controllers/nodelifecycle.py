"""The node lifecycle controller: a node that falls silent is marked Unknown, tainted, and its pods evicted.

Kubernetes' `pkg/controller/nodelifecycle` together with the taint eviction
controller (`pkg/controller/tainteviction`), for one reason: pods on a dead
machine must be given up so that their controllers recreate them elsewhere.

Health. A node is alive while its kubelet renews its Lease in
`kube-node-lease` or refreshes its Ready condition's `lastHeartbeatTime`.
When either changes, this controller notes the local time (its own clock,
never the kubelet's, so skew does not matter). A node not heard from for
`node_monitor_grace_period` (40 s) gets every condition set to Unknown
(reason NodeStatusUnknown, "Kubelet stopped posting node status."), its
pods' Ready condition set to False, and a NodeNotReady event.

Taints. Conditions map to NoSchedule taints (Ready False → not-ready,
Unknown → unreachable, MemoryPressure/DiskPressure/PIDPressure/
NetworkUnavailable True → the matching pressure taint, spec.unschedulable →
unschedulable) so the scheduler stops placing pods there. A node not Ready
also gets the NoExecute taint of the same key, added at most
`node_eviction_rate` nodes per second per zone (0.1, as kube-controller-manager's
`--node-eviction-rate`). As Kubernetes, a zone with ≥ 55 % of more than two
nodes down slows to `secondary_node_eviction_rate` (0 for zones of ≤ 50 nodes),
and when every node of every zone is down the controller assumes the fault
is its own (the control plane lost the network), removes the NoExecute
taints and evicts nothing until a node comes back. Taints go once the node is Ready.

Eviction. Pods on a node with NoExecute taints they do not tolerate are
deleted at once (after a DisruptionTarget condition and a
TaintManagerEviction event); tolerated for `tolerationSeconds`, they are
deleted that long after the taint was first seen. Kubernetes' DefaultTolerationSeconds
admission plugin gives every pod a toleration of not-ready and unreachable for
300 s; skiff applies that default here instead: a pod without its own
toleration for one of those taints is treated as tolerating it for
`default_eviction_seconds` (the `--default-eviction-seconds` flag). The
evicted pods stay Terminating until their node returns to finish them
(as in Kubernetes); ReplicaSets count them out and create replacements.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, EventRecorder, Informer, RequeueAfter, object_key, resources, split_key
from skiff.client.cache import index_by_node_name
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
NODE_LEASE_NAMESPACE = "kube-node-lease"
NODE_INDEX = "nodeName"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
# (condition, status) -> the NoSchedule taint it calls for
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): TAINT_NOT_READY,
    ("Ready", "Unknown"): TAINT_UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
NO_SCHEDULE_KEYS = frozenset([*CONDITION_TAINTS.values(), TAINT_UNSCHEDULABLE])
NO_EXECUTE_KEYS = frozenset([TAINT_NOT_READY, TAINT_UNREACHABLE])
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
STATE_NORMAL, STATE_PARTIAL, STATE_FULL = "Normal", "PartialDisruption", "FullDisruption"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(obj: Obj, type_: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def ready_status(node: Obj) -> str:
    """ "True", "False" or "Unknown" (a node that never posted a Ready condition is Unknown)."""
    cond = condition(node, "Ready")
    return str(cond.get("status") or "Unknown") if cond else "Unknown"


def zone_key(node: Obj) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    region = labels.get("topology.kubernetes.io/region") or labels.get("failure-domain.beta.kubernetes.io/region", "")
    zone = labels.get("topology.kubernetes.io/zone") or labels.get("failure-domain.beta.kubernetes.io/zone", "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Kubernetes' Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def effective_tolerations(pod: Obj, default_seconds: int) -> list[Obj]:
    """The pod's tolerations plus the DefaultTolerationSeconds ones for not-ready/unreachable it lacks."""
    tolerations = list((pod.get("spec") or {}).get("tolerations") or [])
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        taint = {"key": key, "effect": "NoExecute"}
        if not any(tolerates(t, taint) for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": default_seconds}
            )
    return tolerations


def toleration_time(taints: list[Obj], tolerations: list[Obj]) -> float | None:
    """Seconds the pod may stay: 0 if some taint is not tolerated, None if all are forever."""
    used = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return 0.0
        used.append(match)
    seconds = [t["tolerationSeconds"] for t in used if t.get("tolerationSeconds") is not None]
    if not seconds:
        return None
    return float(max(min(int(s) for s in seconds), 0))


class TokenBucket:
    """A rate limiter of burst 1: how long until the next NoExecute taint may be added in a zone."""

    def __init__(self, qps: float) -> None:
        self.qps = qps
        self.tokens = 1.0
        self.last = time.monotonic()

    def swap(self, qps: float) -> None:
        self._refill()
        self.qps = qps

    def _refill(self) -> None:
        now = time.monotonic()
        if self.qps > 0:
            self.tokens = min(1.0, self.tokens + (now - self.last) * self.qps)
        self.last = now

    def take(self) -> float:
        """0 if a token was taken; else the seconds to wait (inf when the rate is 0)."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.qps if self.qps > 0 else float("inf")


@dataclass
class Health:
    """What the controller last heard from a node, on its own monotonic clock."""

    probe: float  # when a heartbeat (Lease renewal or Ready lastHeartbeatTime change) was last seen
    heartbeat: str | None  # the Ready condition's lastHeartbeatTime then
    renew_time: str | None  # the Lease's renewTime then


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
        self.health: dict[str, Health] = {}
        self.zone_states: dict[str, str] = {}
        self.zone_limiters: dict[str, TokenBucket] = {}
        self.master_disruption = False
        self.evictions: dict[str, float] = {}  # pod key -> when its eviction countdown started (monotonic)

    # --- events -------------------------------------------------------------------------------
    def _lease_changed(self, lease: Obj) -> None:
        name = lease["metadata"]["name"]
        health = self.health.get(name)
        renew = (lease.get("spec") or {}).get("renewTime")
        if health is not None and renew and renew != health.renew_time:
            health.probe, health.renew_time = time.monotonic(), renew
            node = self.nodes.get(name)
            if node is not None and (ready_status(node) != "True" or _managed_taints(node)):
                self.enqueue_key(name)  # coming back: clear it now, not at the next deadline

    def _pod_changed(self, pod: Obj) -> None:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return
        node = self.nodes.get(node_name)
        if node is not None and (ready_status(node) != "True" or _no_execute_taints(node)):
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
        self.evictions.pop(object_key(pod), None)

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
        zones: dict[str, list[Obj]] = {}
        for node in self.nodes.list():
            zones.setdefault(zone_key(node), []).append(node)
        states = {}
        for zone, members in zones.items():
            not_ready = sum(1 for n in members if ready_status(n) != "True")
            if not_ready == len(members):
                states[zone] = STATE_FULL
            elif not_ready > 2 and not_ready / len(members) >= self.unhealthy_zone_threshold:
                states[zone] = STATE_PARTIAL
            else:
                states[zone] = STATE_NORMAL
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
            self.health.pop(name, None)
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
        await self._evict(node, pods, wake)
        if wake:
            raise RequeueAfter(max(min(wake), 0.05))

    async def _check_health(self, node: Obj, wake: list[float]) -> tuple[Obj, bool]:
        """Note heartbeats; mark the node Unknown once silent past the grace period."""
        name = node["metadata"]["name"]
        now = time.monotonic()
        ready = condition(node, "Ready")
        heartbeat = (ready or {}).get("lastHeartbeatTime")
        lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        health = self.health.get(name)
        if health is None:  # first sight (or a restarted controller): a full grace period from now
            health = self.health[name] = Health(probe=now, heartbeat=heartbeat, renew_time=renew)
        if heartbeat != health.heartbeat or (renew and renew != health.renew_time):
            health.probe, health.heartbeat, health.renew_time = now, heartbeat, renew or health.renew_time
        silent_until = health.probe + self.grace_period
        if now < silent_until:
            wake.append(silent_until - now + 0.01)
            return node, False
        was_ready = ready_status(node) == "True"
        stamp = now_rfc3339()
        conditions = [dict(c) for c in (node.get("status") or {}).get("conditions") or []]
        changed = False
        for type_ in KUBELET_CONDITIONS:
            cond = next((c for c in conditions if c.get("type") == type_), None)
            if cond is None:
                conditions.append(
                    {
                        "type": type_,
                        "status": "Unknown",
                        "reason": "NodeStatusNeverUpdated",
                        "message": "Kubelet never posted node status.",
                        "lastHeartbeatTime": (node["metadata"].get("creationTimestamp") or stamp),
                        "lastTransitionTime": stamp,
                    }
                )
                changed = True
            elif cond.get("status") != "Unknown":
                cond.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=stamp,
                )
                changed = True
        if not changed:
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
        spec = node.get("spec") or {}
        taints: list[Obj] = list(spec.get("taints") or [])
        conditions = (node.get("status") or {}).get("conditions") or []
        want_no_schedule = {
            CONDITION_TAINTS[(c.get("type", ""), c.get("status", ""))]
            for c in conditions
            if (c.get("type", ""), c.get("status", "")) in CONDITION_TAINTS
        }
        if spec.get("unschedulable"):
            want_no_schedule.add(TAINT_UNSCHEDULABLE)
        status = ready_status(node) if condition(node, "Ready") else "True"  # never posted: not evicted yet
        want_no_execute = {"False": TAINT_NOT_READY, "Unknown": TAINT_UNREACHABLE}.get(status)
        has_no_execute = {
            t["key"] for t in taints if t.get("effect") == "NoExecute" and t.get("key") in NO_EXECUTE_KEYS
        }
        if self.master_disruption:
            want_no_execute = None
        elif want_no_execute is not None and not has_no_execute and not self._zone_allows_taint(node, wake):
            want_no_execute = None  # rate-limited: wait for the zone's turn
        new_taints = []
        for t in taints:
            if t.get("effect") == "NoSchedule" and t.get("key") in NO_SCHEDULE_KEYS:
                if t["key"] in want_no_schedule:
                    new_taints.append(t)
                    want_no_schedule.discard(t["key"])
            elif t.get("effect") == "NoExecute" and t.get("key") in NO_EXECUTE_KEYS:
                if t["key"] == want_no_execute:
                    new_taints.append(t)
                    want_no_execute = None
            else:
                new_taints.append(t)  # someone else's taint
        new_taints += [{"key": k, "effect": "NoSchedule"} for k in sorted(want_no_schedule)]
        if want_no_execute is not None:
            new_taints.append({"key": want_no_execute, "effect": "NoExecute", "timeAdded": now_rfc3339()})
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

    async def _evict(self, node: Obj, pods: list[Obj], wake: list[float]) -> None:
        """The taint eviction controller's work for one node's pods."""
        taints = _no_execute_taints(node)
        now = time.monotonic()
        for pod in pods:
            key = object_key(pod)
            if pod["metadata"].get("deletionTimestamp"):
                self.evictions.pop(key, None)
                continue
            allowed = (
                toleration_time(taints, effective_tolerations(pod, self.default_eviction_seconds)) if taints else None
            )
            if allowed is None:
                if self.evictions.pop(key, None) is not None:
                    await self.eviction_recorder.record(
                        pod, type="Normal", reason="TaintManagerEviction", message=f"Cancelling deletion of Pod {key}"
                    )
                continue
            started = self.evictions.setdefault(key, now)
            due = started + allowed
            if now < due:
                wake.append(due - now)
                continue
            await self._delete_pod(pod)
            self.evictions.pop(key, None)

    async def _delete_pod(self, pod: Obj) -> None:
        key = object_key(pod)
        ns, name = split_key(key)
        await self.eviction_recorder.record(
            pod, type="Normal", reason="TaintManagerEviction", message=f"Marking for deletion Pod {key}"
        )
        updated = copy.deepcopy(pod)
        conditions = [
            c for c in (updated.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"
        ]
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": now_rfc3339(),
                "lastProbeTime": None,
            }
        )
        updated.setdefault("status", {})["conditions"] = conditions
        try:
            await self.client.update_status(resources.PODS, updated)
            await self.client.delete(resources.PODS, name, namespace=ns, preconditions={"uid": pod["metadata"]["uid"]})
        except errors.NotFound:
            return
        self.log.info("evicted pod %s from node %s", key, (pod.get("spec") or {}).get("nodeName"))


def _no_execute_taints(node: Obj) -> list[Obj]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]


def _managed_taints(node: Obj) -> bool:
    return any(t.get("key") in NO_SCHEDULE_KEYS | NO_EXECUTE_KEYS for t in (node.get("spec") or {}).get("taints") or [])


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

"""The DaemonSet controller: one pod on every node that should run it, updated node by node.

Follows Kubernetes' `pkg/controller/daemon`. For each node the controller
asks *should a daemon pod run here* (the template's `nodeName`,
`nodeSelector` and required node affinity match the node, and the node's
NoSchedule/NoExecute taints are tolerated) and *may an existing one keep
running* (only an untolerated NoExecute taint evicts). It then creates the
missing pods, deletes failed ones, extra ones and those on nodes that no
longer qualify.

Pods are pinned the way Kubernetes has done since 1.12: the pod's required
node affinity is replaced by one term `matchFields: metadata.name In
[<node>]` and the scheduler binds it, so resources, ports and preemption
are checked like for any pod (`spec.nodeName` is not set by this
controller). Every daemon pod gets the tolerations Kubernetes adds
(`not-ready` and `unreachable` NoExecute without a time limit;
`disk-pressure`, `memory-pressure`, `pid-pressure`, `unschedulable`
NoSchedule; `network-unavailable` for host-network pods), so daemons stay
on nodes in trouble, where they are often what fixes the trouble.

Updates: each distinct template is a ControllerRevision (`skiff.controllers.history`),
and pods carry its hash in `controller-revision-hash`. RollingUpdate deletes
old pods while at most `maxUnavailable` nodes lack an available up-to-date
pod (the manage step then creates the new one); OnDelete waits for the user
to delete them. With `maxSurge`, up to that many nodes run a new pod beside
the old one, which is deleted once the new one is available.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Awaitable
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, EventRecorder, RequeueAfter, object_key, resources
from skiff.controllers.context import ControllerContext
from skiff.controllers.history import (
    REVISION_HASH_LABEL,
    ensure_revision,
    revision_hash_of,
    truncate_history,
)
from skiff.controllers.podcontrol import BURST_REPLICAS, slow_start_batch
from skiff.controllers.workloads import (
    Expectations,
    ensure_controller_index,
    is_available,
    is_deleting,
    is_ready,
    meta,
    namespace_terminating,
    next_available,
    now,
    owned_pods,
    phase,
    pod_from_template,
    uid_of,
    write_status,
)

Obj = dict[str, Any]
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
OBJECT_NAME_FIELD = "metadata.name"
DAEMON_TOLERATIONS: tuple[tuple[str, str], ...] = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
NETWORK_UNAVAILABLE = ("node.kubernetes.io/network-unavailable", "NoSchedule")


def new(ctx: ControllerContext) -> Controller:
    return DaemonSetController(ctx.client, ctx)


# --- node eligibility (pure) -------------------------------------------------------------------
def _requirement_matches(req: Obj, value: str | None) -> bool:
    op = req.get("operator")
    values = [str(v) for v in req.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _term_matches(term: Obj, node: Obj) -> bool:
    """A NodeSelectorTerm: all its expressions and fields match (an empty term matches nothing)."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = meta(node).get("labels") or {}
    if not all(_requirement_matches(r, labels.get(r.get("key", ""))) for r in exprs):
        return False
    return all(r.get("key") == OBJECT_NAME_FIELD and _requirement_matches(r, meta(node).get("name")) for r in fields)


def node_affinity_matches(pod_spec: Obj, node: Obj) -> bool:
    """`nodeSelector` and required node affinity of a pod spec against a node (terms ORed)."""
    labels = meta(node).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    return any(_term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Kubernetes' Toleration.ToleratesTaint."""
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(taints: list[Obj], tolerations: list[Obj], effects: tuple[str, ...]) -> Obj | None:
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def with_daemon_tolerations(pod_spec: Obj) -> Obj:
    """The pod spec with the tolerations Kubernetes adds to every daemon pod (a new dict)."""
    spec = copy.deepcopy(pod_spec)
    tolerations: list[Obj] = spec.setdefault("tolerations", [])
    wanted = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append(NETWORK_UNAVAILABLE)
    for key, effect in wanted:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": effect})
    return spec


def should_run(pod_spec: Obj, node: Obj) -> tuple[bool, bool]:
    """(should a daemon pod run on `node`, may a running one stay) — NodeShouldRunDaemonPod."""
    name = pod_spec.get("nodeName")
    if name and name != meta(node).get("name"):
        return False, False
    if not node_affinity_matches(pod_spec, node):
        return False, False
    taints: list[Obj] = (node.get("spec") or {}).get("taints") or []
    tolerations: list[Obj] = pod_spec.get("tolerations") or []
    if untolerated(taints, tolerations, ("NoSchedule", "NoExecute")) is not None:
        return False, untolerated(taints, tolerations, ("NoExecute",)) is None
    return True, True


def pin_to_node(pod_spec: Obj, node_name: str) -> None:
    """Replace the required node affinity with `metadata.name In [node]` (ReplaceDaemonSetPodNodeNameNodeAffinity)."""
    affinity = pod_spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchFields": [{"key": OBJECT_NAME_FIELD, "operator": "In", "values": [node_name]}]}]
    }


def target_node(pod: Obj) -> str | None:
    """The node a daemon pod is for: `spec.nodeName`, or its pinning affinity (GetTargetNodeName)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            values = field.get("values") or []
            if field.get("key") == OBJECT_NAME_FIELD and field.get("operator") == "In" and len(values) == 1:
                return str(values[0])
    return None


def _scaled(raw: object, total: int) -> int:
    """An IntOrString: a count, or a percentage of `total` rounded up (GetScaledValueFromIntOrPercent)."""
    if isinstance(raw, str) and raw.endswith("%"):
        return math.ceil(int(raw[:-1]) * total / 100)
    return int(str(raw))


def rolling_limits(ds: Obj, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers of nodes; both 0 would stall a rollout, so that reads as (0, 1)."""
    rolling = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge", 0), desired)
    unavailable = _scaled(rolling.get("maxUnavailable", 1), desired)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(ds: Obj, desired: int) -> int:
    return rolling_limits(ds, desired)[1]


# --- the controller ------------------------------------------------------------------------------
class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def __init__(self, client: Client, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = client
        self.recorder: EventRecorder = ctx.recorder("daemonset-controller")
        self.expectations = Expectations()
        self.daemonsets = self.watch(ctx.informers.informer(resources.DAEMONSETS))
        self.pods = self.wait_for(ctx.informers.informer(resources.PODS))
        ensure_controller_index(self.pods)
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.nodes = self.wait_for(ctx.informers.informer(resources.NODES))
        self.nodes.add_handlers(
            on_add=lambda _n: self._enqueue_all(),
            on_update=self._node_updated,
            on_delete=lambda _n: self._enqueue_all(),
        )
        self.revisions = self.wait_for(ctx.informers.informer(resources.CONTROLLERREVISIONS))

    # --- events ---------------------------------------------------------------------------------
    def _enqueue_all(self) -> None:
        for key in self.daemonsets.keys():
            self.queue.add(key)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        def relevant(n: Obj) -> tuple[Any, ...]:
            spec = n.get("spec") or {}
            return (meta(n).get("labels"), spec.get("taints"), spec.get("unschedulable"))

        if relevant(old) != relevant(new):
            self._enqueue_all()

    def _pod_added(self, pod: Obj) -> None:
        key = self.enqueue_owner(pod, "DaemonSet")
        if key is not None:
            self.expectations.created(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = self.enqueue_owner(new, "DaemonSet")
        if key is not None and is_deleting(new) and not is_deleting(old):
            self.expectations.deleted(key, object_key(new))

    def _pod_deleted(self, pod: Obj) -> None:
        key = self.enqueue_owner(pod, "DaemonSet")
        if key is not None:
            self.expectations.deleted(key, object_key(pod))

    # --- reconcile ------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        ds = self.daemonsets.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        if is_deleting(ds):
            return  # the garbage collector removes the pods
        revision, history, collision_count = await ensure_revision(
            self.client, self.revisions, ds, resources.DAEMONSETS
        )
        hash_ = revision_hash_of(revision)
        nodes = self.nodes.list()
        by_node = self._pods_by_node(ds)
        events: list[tuple[str, str, str]] = []
        try:
            if self.expectations.satisfied(key):
                await self._manage(key, ds, nodes, by_node, hash_, events)
                strategy = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type") or "RollingUpdate"
                if strategy == "RollingUpdate":
                    await self._rolling_update(key, ds, nodes, self._pods_by_node(ds), hash_, events)
                in_use = {
                    f"{meta(ds)['name']}-{(meta(p).get('labels') or {}).get(REVISION_HASH_LABEL)}"
                    for p in owned_pods(self.pods, ds)
                }
                limit = int((ds.get("spec") or {}).get("revisionHistoryLimit", 10))
                current = meta(revision)["name"]
                await truncate_history(self.client, history, keep=limit, in_use=in_use, current=current)
            await self._write_status(ds, nodes, self._pods_by_node(ds), hash_, collision_count)
        finally:  # what was done is reported even when a later step fails
            for type_, reason, message in events:
                await self.recorder.record(ds, type=type_, reason=reason, message=message)
        wait = next_available(owned_pods(self.pods, ds), int((ds.get("spec") or {}).get("minReadySeconds") or 0))
        if wait is not None:
            raise RequeueAfter(wait)  # a ready pod becomes available then: status and rollout move on

    def _pods_by_node(self, ds: Obj) -> dict[str, list[Obj]]:
        by_node: dict[str, list[Obj]] = {}
        for pod in owned_pods(self.pods, ds):
            node = target_node(pod)
            if node is not None:
                by_node.setdefault(node, []).append(pod)
        for pods in by_node.values():
            pods.sort(key=lambda p: (meta(p).get("creationTimestamp") or "", meta(p).get("name", "")))
        return by_node

    def _template_spec(self, ds: Obj) -> Obj:
        template = (ds.get("spec") or {}).get("template") or {}
        return with_daemon_tolerations(template.get("spec") or {})

    async def _manage(
        self, key: str, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]], hash_: str,
        events: list[tuple[str, str, str]],
    ) -> None:  # fmt: skip
        spec = self._template_spec(ds)
        to_create: list[str] = []
        to_delete: list[Obj] = []
        node_names = set()
        strategy = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type") or "RollingUpdate"
        eligible = sum(1 for n in nodes if should_run(spec, n)[0])
        surge = strategy == "RollingUpdate" and rolling_limits(ds, eligible)[0] > 0
        for node in nodes:
            name = meta(node)["name"]
            node_names.add(name)
            run, keep = should_run(spec, node)
            pods = by_node.get(name, [])
            if run and not pods:
                to_create.append(name)
            elif keep:
                running = []
                for pod in pods:
                    if is_deleting(pod):
                        continue
                    if phase(pod) == "Failed":
                        to_delete.append(pod)
                        events.append((
                            "Warning", "FailedDaemonPod",
                            f"Found failed daemon pod {object_key(pod)} on node {name}, will try to kill it",
                        ))  # fmt: skip
                    else:
                        running.append(pod)
                to_delete.extend(self._excess(running, hash_, surge=surge))
            else:
                to_delete.extend(p for p in pods if not is_deleting(p))
        # pods for nodes that are gone
        for name, pods in by_node.items():
            if name not in node_names:
                to_delete.extend(p for p in pods if not is_deleting(p))
        await self._sync_nodes(key, ds, to_create, to_delete, hash_, events)

    @staticmethod
    def _excess(running: list[Obj], hash_: str, *, surge: bool) -> list[Obj]:
        """Pods beyond one per node (oldest first kept); while surging, one old and one new may share a node."""
        if len(running) <= 1:
            return []
        if not surge:
            return running[1:]
        new_pods = [p for p in running if (meta(p).get("labels") or {}).get(REVISION_HASH_LABEL) == hash_]
        old_pods = [p for p in running if p not in new_pods]
        return new_pods[1:] + old_pods[1:]

    async def _rolling_update(
        self, key: str, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]], hash_: str,
        events: list[tuple[str, str, str]],
    ) -> None:  # fmt: skip
        if not self.expectations.satisfied(key):
            return
        spec = self._template_spec(ds)
        at = now()
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        eligible = [meta(n)["name"] for n in nodes if should_run(spec, n)[0]]
        surge, limit = rolling_limits(ds, len(eligible))
        if surge > 0:
            await self._surge_update(key, ds, eligible, by_node, hash_, surge, events)
            return
        unavailable = 0
        replace_now: list[Obj] = []
        candidates: list[Obj] = []
        for name in eligible:
            pods = [p for p in by_node.get(name, []) if not is_deleting(p)]
            new_pods = [p for p in pods if (meta(p).get("labels") or {}).get(REVISION_HASH_LABEL) == hash_]
            old_pods = [p for p in pods if p not in new_pods]
            if len(pods) != 1:
                unavailable += 1  # none yet, or several: the manage step sorts it out
            elif new_pods:
                if not is_available(new_pods[0], min_ready, at):
                    unavailable += 1
            elif not is_available(old_pods[0], min_ready, at):
                replace_now.append(old_pods[0])  # unavailable anyway: replacing it costs nothing
            else:
                candidates.append(old_pods[0])
        room = max(limit - unavailable, 0)
        to_delete = replace_now + candidates[:room]
        if to_delete:
            await self._sync_nodes(key, ds, [], to_delete, hash_, events)

    async def _surge_update(
        self, key: str, ds: Obj, eligible: list[str], by_node: dict[str, list[Obj]], hash_: str, surge: int,
        events: list[tuple[str, str, str]],
    ) -> None:  # fmt: skip
        """maxSurge > 0: a new pod starts beside the old one, which goes once the new one is available."""
        at = now()
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        surging = 0
        old_to_delete: list[Obj] = []
        replace_now: list[str] = []  # nodes whose old pod is unavailable anyway: a new one may start at once
        candidates: list[str] = []
        for name in eligible:
            pods = [p for p in by_node.get(name, []) if not is_deleting(p)]
            new_pods = [p for p in pods if (meta(p).get("labels") or {}).get(REVISION_HASH_LABEL) == hash_]
            old_pods = [p for p in pods if p not in new_pods]
            if len(new_pods) > 1 or len(old_pods) > 1:
                surging += 1  # the manage step cleans this node up first
            elif not old_pods:
                continue  # up to date (or nothing yet: the manage step creates it)
            elif not new_pods:
                if not is_available(old_pods[0], min_ready, at):
                    replace_now.append(name)
                elif surging < surge:
                    candidates.append(name)
            elif not is_available(new_pods[0], min_ready, at):
                surging += 1  # the new pod is on its way
            else:
                old_to_delete.append(old_pods[0])  # the new pod is available: the old one can go
        room = max(surge - surging, 0)
        create_on = replace_now + candidates[:room]
        if create_on or old_to_delete:
            await self._sync_nodes(key, ds, create_on, old_to_delete, hash_, events)

    async def _sync_nodes(
        self, key: str, ds: Obj, create_on: list[str], delete_pods: list[Obj], hash_: str,
        events: list[tuple[str, str, str]],
    ) -> None:  # fmt: skip
        if not create_on and not delete_pods:
            return
        create_on, delete_pods = create_on[:BURST_REPLICAS], delete_pods[:BURST_REPLICAS]
        self.expectations.expect(key, adds=len(create_on), deletes=[object_key(p) for p in delete_pods])
        template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
        template["spec"] = self._template_spec(ds)
        labels = {REVISION_HASH_LABEL: hash_, TEMPLATE_GENERATION_LABEL: str(meta(ds).get("generation") or 1)}

        async def create(node_name: str) -> None:
            pod = pod_from_template(template, ds, resources.DAEMONSETS, labels=labels)
            pin_to_node(pod["spec"], node_name)
            try:
                created = await self.client.create(resources.PODS, pod)
            except Exception as exc:
                self.expectations.created(key)
                if namespace_terminating(exc):
                    return  # the namespace and this daemon set are going away
                events.append(("Warning", "FailedCreate", f"Error creating: {exc}"))
                raise
            events.append(("Normal", "SuccessfulCreate", f"Created pod: {meta(created)['name']}"))

        async def delete(pod: Obj) -> None:
            try:
                await self.client.delete(
                    resources.PODS, meta(pod)["name"], namespace=meta(pod)["namespace"],
                    preconditions={"uid": uid_of(pod)},
                )  # fmt: skip
                events.append(("Normal", "SuccessfulDelete", f"Deleted pod: {meta(pod)['name']}"))
            except (errors.NotFound, errors.Conflict):
                self.expectations.deleted(key, object_key(pod))

        pending = iter(create_on)
        attempted = 0

        def create_next() -> Awaitable[None]:
            nonlocal attempted
            attempted += 1
            return create(next(pending))

        async def deletions() -> list[BaseException]:
            results = await asyncio.gather(*(delete(p) for p in delete_pods), return_exceptions=True)
            return [r for r in results if isinstance(r, BaseException)]

        # creations in doubling batches (a create failing for all costs a few requests); deletions at once
        (_created, error), failures = await asyncio.gather(slow_start_batch(len(create_on), create_next), deletions())
        if error is not None:
            self.expectations.created(key, len(create_on) - attempted)  # never tried: never coming
            raise error
        if failures:
            raise failures[0]

    # --- status ---------------------------------------------------------------------------------
    async def _write_status(
        self, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]], hash_: str, collision_count: int
    ) -> None:
        spec = self._template_spec(ds)
        at = now()
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        desired = current = ready = available = updated = misscheduled = 0
        for node in nodes:
            run, _keep = should_run(spec, node)
            pods = [p for p in by_node.get(meta(node)["name"], []) if not is_deleting(p)]
            if run:
                desired += 1
                if pods:
                    current += 1
                    pod = pods[0]
                    if is_ready(pod):
                        ready += 1
                        if is_available(pod, min_ready, at):
                            available += 1
                    if (meta(pod).get("labels") or {}).get(REVISION_HASH_LABEL) == hash_:
                        updated += 1
            elif pods:
                misscheduled += 1
        status: Obj = {
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": meta(ds).get("generation") or 1,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
        }
        if desired - available > 0:
            status["numberUnavailable"] = desired - available
        if collision_count:
            status["collisionCount"] = collision_count
        old = ds.get("status") or {}
        if "conditions" in old:
            status["conditions"] = old["conditions"]
        if status == old:
            return
        await write_status(self.client, resources.DAEMONSETS, ds, status)

"""The DaemonSet controller: one pod on every node that should run it, updated node by node.

Follows Kubernetes' `pkg/controller/daemon`. For each node the controller
asks whether a daemon pod should run there and whether an existing one may
keep running (`daemonset_nodes`), then creates the missing pods (pinned to
their node), deletes failed ones, extra ones and those on nodes that no
longer qualify. With the RollingUpdate strategy it then replaces pods of an
older template node by node (`daemonset_update`); each template is a
ControllerRevision (`skiff.controllers.history`). Finally it writes status.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable
from typing import Any

from skiff.api import errors
from skiff.api.tolerations import tolerates
from skiff.client import Client, Controller, EventRecorder, RequeueAfter, object_key, resources
from skiff.controllers.context import ControllerContext
from skiff.controllers.daemonset_nodes import (
    node_affinity_matches,
    pin_to_node,
    should_run,
    target_node,
    with_daemon_tolerations,
)
from skiff.controllers.daemonset_update import (
    excess,
    max_unavailable,
    rolling_deletions,
    rolling_limits,
    surge_steps,
)
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

__all__ = [
    "DaemonSetController",
    "max_unavailable",
    "new",
    "node_affinity_matches",
    "pin_to_node",
    "rolling_limits",
    "should_run",
    "target_node",
    "tolerates",
    "with_daemon_tolerations",
]

Obj = dict[str, Any]
TEMPLATE_GENERATION_LABEL = "pod-template-generation"


def new(ctx: ControllerContext) -> Controller:
    return DaemonSetController(ctx.client, ctx)


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
                to_delete.extend(excess(running, hash_, surge=surge))
            else:
                to_delete.extend(p for p in pods if not is_deleting(p))
        # pods for nodes that are gone
        for name, pods in by_node.items():
            if name not in node_names:
                to_delete.extend(p for p in pods if not is_deleting(p))
        await self._sync_nodes(key, ds, to_create, to_delete, hash_, events)

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
        if surge > 0:  # a new pod starts beside the old one, which goes once the new one is available
            create_on, to_delete = surge_steps(eligible, by_node, hash_, surge, min_ready, at)
        else:
            create_on, to_delete = [], rolling_deletions(eligible, by_node, hash_, limit, min_ready, at)
        if create_on or to_delete:
            await self._sync_nodes(key, ds, create_on, to_delete, hash_, events)

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

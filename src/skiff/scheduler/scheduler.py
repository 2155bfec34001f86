"""The scheduler component: watch pods and nodes, place pending pods, bind them.

`run_scheduler` is what `skiff server` (in-process) and `skiff scheduler`
(alone, against a kubeconfig) run. Like kube-scheduler it is just a client of
the API server:

1. informers list and watch pods (not finished ones), nodes and namespaces;
   bound pods and nodes feed the cache, pending pods whose `schedulerName`
   is one of our profiles (and without scheduling gates) go into the queue;
2. the loop pops the most important pod and runs its profile's plugins
   synchronously, from PreFilter to Reserve, against the cache;
3. the chosen node is *assumed* (the pod counts there at once) and the
   binding — a POST to `pods/<name>/binding` — runs in a background task,
   so the next pod is already being placed while the API server writes;
   a failed binding forgets the assumption and sends the pod back to the
   queue with backoff;
4. a pod that fits nowhere gets PostFilter (preemption), a FailedScheduling
   Warning event and a `PodScheduled=False` condition saying why, and waits
   in the queue until a cluster event may help.

With leader election (several servers), only the holder of the
`kube-system/kube-scheduler` Lease schedules; a new leader starts from a
fresh cache.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

from skiff.api import errors
from skiff.client import Client, InformerFactory, LeaderElector, ServerUnreachable, resources
from skiff.client.tasks import cancel_and_wait, spawn, wait_or_stop
from skiff.scheduler import config as schedconfig
from skiff.scheduler.algorithm import Algorithm, NoNodesAvailable, SchedulingError
from skiff.scheduler.cache import SchedulerCache
from skiff.scheduler.framework import (
    ASSIGNED_POD,
    NAMESPACE,
    NODE,
    ActionType,
    ClusterEvent,
    Code,
    CycleState,
    FitError,
    Plugin,
    Status,
    VolumeLister,
    error,
)
from skiff.scheduler.plugins import in_tree
from skiff.scheduler.podinfo import PodInfo, pod_key
from skiff.scheduler.queue import QueuedPodInfo, SchedulingQueue
from skiff.scheduler.reporting import COMPONENT, ConditionWriter, EventSink
from skiff.scheduler.runtime import Framework
from skiff.scheduler.volumes import InformerVolumeLister

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
MAX_CONCURRENT_BINDINGS = 32
SCHEDULING_GATED = "Scheduling is blocked due to non-empty scheduling gates"


class Scheduler:
    """One scheduler: cache, queue, profiles, and the loop that ties them together."""

    def __init__(
        self,
        client: Client,
        cfg: schedconfig.SchedulerConfig | None = None,
        *,
        registry: Mapping[str, type[Plugin]] | None = None,
    ) -> None:
        self.client = client
        # the writes (bindings, events, conditions, preemption) take the client's lean HTTP/1.1 path: one
        # binding and one event per pod is most of what the scheduler asks of the API server
        self.writer = client.lean(pool_size=MAX_CONCURRENT_BINDINGS + 16)
        self.config = cfg or schedconfig.default_config()
        self._cache = SchedulerCache()
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        reg = dict(registry) if registry is not None else in_tree()
        self.frameworks: dict[str, Framework] = {
            p.scheduler_name: Framework(p, reg, self) for p in self.config.profiles
        }
        plugin_events: dict[str, tuple[ClusterEvent, ...]] = {}
        for fwk in self.frameworks.values():
            plugin_events.update(fwk.plugin_events())
        self.queue = SchedulingQueue(
            initial_backoff=self.config.pod_initial_backoff_seconds,
            max_backoff=self.config.pod_max_backoff_seconds,
            plugin_events=plugin_events,
        )
        self.algorithm = Algorithm(self._cache, percentage_of_nodes_to_score=self.config.percentage_of_nodes_to_score)
        self.informers = InformerFactory(client)
        self.pod_informer = self.informers.informer(resources.PODS, field_selector=ACTIVE_PODS)
        self.node_informer = self.informers.informer(resources.NODES)
        self.namespace_informer = self.informers.informer(resources.NAMESPACES)
        self._volumes = InformerVolumeLister(self.informers, self.queue.move_all_to_active_or_backoff)
        self.events = EventSink(self.writer)
        self.conditions = ConditionWriter(self.writer, current=self.pod_informer.get)
        # bindings in flight at once: enough to keep the API server busy, few enough to reuse a small
        # pool of keep-alive connections instead of opening (and TLS-handshaking) hundreds
        self._binding_slots = asyncio.Semaphore(MAX_CONCURRENT_BINDINGS)
        self.scheduled = 0
        self.failed_attempts = 0
        self.bind_errors = 0
        self.pod_informer.add_handlers(on_add=self._on_pod_add, on_update=self._on_pod_update,
                                       on_delete=self._on_pod_delete)  # fmt: skip
        self.node_informer.add_handlers(on_add=self._on_node_add, on_update=self._on_node_update,
                                        on_delete=self._on_node_delete)  # fmt: skip
        self.namespace_informer.add_handlers(on_add=self._on_namespace, on_update=self._on_namespace_update,
                                             on_delete=self._on_namespace_delete)  # fmt: skip

    # --- Services (what plugins may use) -----------------------------------------------------
    @property
    def cache(self) -> SchedulerCache:
        return self._cache

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        return self._ns_labels

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        task = spawn(coro, name=name, logger=log)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def bind_pod(self, pod: PodInfo, node_name: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, **({"uid": pod.uid} if pod.uid else {})},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        await self.writer.create(resources.PODS, binding, namespace=pod.namespace, name=pod.name,
                                 subresource="binding")  # fmt: skip

    async def delete_pod(self, pod: PodInfo, *, reason: str) -> None:
        self.events.record(pod.pod, "Normal", "Preempted", reason)
        try:
            await self.writer.delete(resources.PODS, pod.name, namespace=pod.namespace,
                                     preconditions={"uid": pod.uid} if pod.uid else None)  # fmt: skip
        except (errors.NotFound, errors.Conflict):
            pass

    async def set_nominated_node(self, pod: PodInfo, node_name: str | None) -> None:
        try:
            await self.writer.patch(resources.PODS, pod.name, {"status": {"nominatedNodeName": node_name}},
                                    namespace=pod.namespace, patch_type="merge", subresource="status")  # fmt: skip
        except errors.NotFound:
            pass

    def volume_lister(self) -> VolumeLister:
        return self._volumes

    async def annotate_claim(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        await self.writer.patch(resources.PVCS, name, {"metadata": {"annotations": dict(annotations)}},
                                namespace=namespace, patch_type="merge")  # fmt: skip

    # --- informer handlers (they only update the cache and the queue) -------------------------
    def _responsible(self, pod: PodInfo) -> bool:
        return pod.scheduler_name in self.frameworks

    def _track_nomination(self, pod: PodInfo) -> None:
        nominated = (pod.pod.get("status") or {}).get("nominatedNodeName")
        if nominated and not pod.node_name and not pod.terminating and self._responsible(pod):
            self._cache.nominate(pod, str(nominated))
        elif self._cache.has_nominations:
            self._cache.nominate(pod, None)

    def _on_pod_add(self, obj: Obj) -> None:
        pod = PodInfo(obj)
        self._track_nomination(pod)
        if pod.node_name:
            self._cache.add_pod(pod)
            self.queue.delete(pod.key)
            self.queue.move_all_to_active_or_backoff(ClusterEvent(ASSIGNED_POD, ActionType.ADD, "AssignedPodAdd"))
        elif self._responsible(pod) and not pod.terminating:
            if _gated(obj):
                self._report_gated(obj)
            else:
                self.queue.add(pod)

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        new_spec = new.get("spec") or {}
        node_name = new_spec.get("nodeName")
        if node_name:
            old_node = (old.get("spec") or {}).get("nodeName")
            cached = self._cache.pod(pod_key(new))
            if old_node and cached is not None and not self._cache.is_assumed(cached.key) and _same_for_cache(old, new):
                return  # a status change (Running, Ready…): nothing the scheduler counts
            if not old_node and cached is not None and cached.node_name == node_name and _just_bound(old, new):
                pod = cached.with_object(new)  # our own binding confirmed: the assumed version, parsed already
            else:
                pod = PodInfo(new)
            if not old_node:
                self.queue.delete(pod.key)
                self.conditions.forget(pod.key)
                self._track_nomination(pod)
            self._cache.update_pod(pod)
            if old_node:
                action = _assigned_pod_change(cached, pod)
                if action:
                    self.queue.move_all_to_active_or_backoff(ClusterEvent(ASSIGNED_POD, action, "AssignedPodUpdate"))
            return
        pod = PodInfo(new)
        self._track_nomination(pod)
        if not self._responsible(pod) or pod.terminating or _gated(new):
            self.queue.delete(pod.key)
            if self._responsible(pod) and not pod.terminating:
                self._report_gated(new)
            return
        self.queue.update(pod)

    def _report_gated(self, pod: Obj) -> None:
        """Kubernetes' SchedulingGates: the pod waits outside the queue, and says so (`kubectl get` shows it)."""
        self.conditions.unschedulable(pod, reason="SchedulingGated", message=SCHEDULING_GATED)

    def _on_pod_delete(self, obj: Obj) -> None:
        key = pod_key(obj)
        if self._cache.has_nominations:
            self._cache.nominate(PodInfo(obj), None)
        self.queue.delete(key)
        self.conditions.forget(key)
        if self._cache.remove_pod(key) is not None:
            self.queue.move_all_to_active_or_backoff(ClusterEvent(ASSIGNED_POD, ActionType.DELETE, "AssignedPodDelete"))

    def _on_node_add(self, obj: Obj) -> None:
        self._cache.add_node(obj)
        self.queue.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.ADD, "NodeAdd"))

    def _on_node_update(self, old: Obj, new: Obj) -> None:
        changed = self._cache.update_node(new)
        if changed:
            self.queue.move_all_to_active_or_backoff(ClusterEvent(NODE, changed, "NodeUpdate"))

    def _on_node_delete(self, obj: Obj) -> None:
        self._cache.remove_node(str((obj.get("metadata") or {}).get("name") or ""))
        self.queue.move_all_to_active_or_backoff(ClusterEvent(NODE, ActionType.DELETE, "NodeDelete"))

    def _on_namespace(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        self._ns_labels[str(meta.get("name"))] = dict(meta.get("labels") or {})

    def _on_namespace_update(self, old: Obj, new: Obj) -> None:
        before = self._ns_labels.get(str((new.get("metadata") or {}).get("name")))
        self._on_namespace(new)
        if before != ((new.get("metadata") or {}).get("labels") or {}):
            self.queue.move_all_to_active_or_backoff(ClusterEvent(NAMESPACE, ActionType.UPDATE, "NamespaceUpdate"))

    def _on_namespace_delete(self, obj: Obj) -> None:
        self._ns_labels.pop(str((obj.get("metadata") or {}).get("name")), None)

    # --- running ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Sync the informers, then schedule until `stop` is set."""
        names = ", ".join(self.frameworks)
        self.informers.start()
        self.events.start()
        self.conditions.start()
        timers = spawn(self.queue.run(), name="scheduler/queue-timers", logger=log)
        try:
            await wait_or_stop(self.informers.wait_synced(), stop)
            if stop.is_set():
                return
            log.info("scheduler running (profiles: %s; %d nodes, %d pods pending)",
                     names, self._cache.num_nodes, len(self.queue))  # fmt: skip
            await wait_or_stop(self._loop(), stop)
        finally:
            self.queue.close()
            await cancel_and_wait([timers])
            await cancel_and_wait(list(self._tasks), grace=2.0)
            await self.informers.stop()
            await self.events.stop()
            await self.conditions.stop()
            await self.writer.close()
            log.info("scheduler stopped (%d scheduled, %d failed attempts, %d binding errors)",
                     self.scheduled, self.failed_attempts, self.bind_errors)  # fmt: skip

    async def _loop(self) -> None:
        while True:
            qpi = await self.queue.pop()
            if qpi is None:
                return
            try:
                self.schedule_one(qpi)
            except Exception:  # a bug must not stop scheduling of every other pod
                log.exception("scheduling %s failed", qpi.key)
                self.queue.add_backoff(qpi)
            await asyncio.sleep(0)  # let the informers and, in-process, the API server run

    def schedule_one(self, qpi: QueuedPodInfo) -> None:
        """One scheduling cycle, synchronous up to Reserve; binding continues in a task."""
        pod = qpi.pod
        fwk = self.frameworks.get(pod.scheduler_name)
        if fwk is None or pod.terminating or self._cache.pod(pod.key) is not None:
            self.queue.done(pod.key)  # not ours, going away, or already assumed/bound
            return
        state = CycleState()
        try:
            result = self.algorithm.schedule(fwk, state, pod)
        except FitError as fit:
            self._post_filter(fwk, state, qpi, fit)
            return
        except NoNodesAvailable as exc:
            self._failed(qpi, reason="Unschedulable", message=str(exc), rejected_by=set())
            return
        except SchedulingError as exc:
            self._failed(qpi, reason="SchedulerError", message=str(exc), error=True)
            return
        assumed = self._cache.assume_pod(pod, result.node)
        status = fwk.run_reserve(state, assumed, result.node)
        if status is not None:
            fwk.run_unreserve(state, assumed, result.node)
            self._cache.forget_pod(pod.key)
            self._failed(qpi, reason="Unschedulable" if status.rejected else "SchedulerError",
                         message=status.message, rejected_by={status.plugin}, error=not status.rejected)  # fmt: skip
            return
        self.spawn(self._bind(fwk, state, qpi, assumed, result.node), name=f"bind/{pod.key}")

    def _post_filter(self, fwk: Framework, state: CycleState, qpi: QueuedPodInfo, fit: FitError) -> None:
        d = fit.diagnosis
        nominated: str | None = None
        if fwk.post_filter:
            failed: Mapping[str, Status] = d.node_statuses
            if d.absent_status is not None:
                absent = d.absent_status
                failed = {n.name: d.node_statuses.get(n.name, absent) for n in self._cache.node_list()}
            result, status = fwk.run_post_filter(state, qpi.pod, failed)
            if status is not None and status.message:
                d.post_filter_msg = status.message
            if result is not None and result.nominated_node:
                nominated = result.nominated_node
                self._cache.nominate(qpi.pod, nominated)  # hold the room now; the API write follows
        self._failed(qpi, reason="Unschedulable", message=str(fit), rejected_by=d.unschedulable_plugins,
                     nominated=nominated)  # fmt: skip

    async def _bind(self, fwk: Framework, state: CycleState, qpi: QueuedPodInfo, pod: PodInfo, node: str) -> None:
        status: Status | None
        gone = False
        try:
            async with self._binding_slots:  # the pod is assumed already: waiting here costs only latency
                status = await fwk.run_pre_bind(state, pod, node)
                if status is None:
                    status = await fwk.run_bind(state, pod, node)
        except (errors.NotFound, errors.Conflict) as exc:
            status, gone = error(str(exc)), True  # deleted, or bound by someone else: nothing to retry
        except (errors.StatusError, ServerUnreachable) as exc:
            status = error(str(exc))
        except Exception as exc:
            log.exception("binding %s to %s failed", pod.key, node)
            status = error(str(exc))
        if status is not None:
            self.bind_errors += 1
            fwk.run_unreserve(state, pod, node)
            self._cache.forget_pod(pod.key)
            if gone:
                log.info("not binding %s: %s", pod.key, status.message)
                self.queue.done(pod.key)
                return
            self._failed(qpi, reason="SchedulerError", message=f"Binding rejected: {status.message}", error=True)
            return
        self.queue.done(pod.key)
        self.scheduled += 1
        fwk.run_post_bind(state, pod, node)
        message = f"Successfully assigned {pod.namespace}/{pod.name} to {node}"
        self.events.record(pod.pod, "Normal", "Scheduled", message)

    def _failed(
        self,
        qpi: QueuedPodInfo,
        *,
        reason: str,
        message: str,
        rejected_by: set[str] | None = None,
        error: bool = False,
        nominated: str | None = None,
    ) -> None:
        self.failed_attempts += 1
        pod = qpi.pod
        if error:
            log.warning("error scheduling %s: %s", pod.key, message)
            self.queue.add_backoff(qpi)
        else:
            log.debug("%s is unschedulable: %s", pod.key, message)
            self.queue.add_unschedulable(qpi, rejected_by=rejected_by or set())
        current = self.pod_informer.get(pod.key) or pod.pod
        if (current.get("spec") or {}).get("nodeName"):
            return  # bound meanwhile (by another scheduler): nothing to report
        self.events.record(current, "Warning", "FailedScheduling", message)
        self.conditions.unschedulable(current, reason=reason, message=message, nominated=nominated)


def _gated(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def _same_for_cache(old: Obj, new: Obj) -> bool:
    """Nothing the cache counts changed (spec, labels, deletion): typically a status update."""
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    return (
        old.get("spec") == new.get("spec")
        and om.get("labels") == nm.get("labels")
        and om.get("deletionTimestamp") == nm.get("deletionTimestamp")
    )


def _just_bound(old: Obj, new: Obj) -> bool:
    """Only the binding happened: the spec differs by nodeName alone, labels and deletion unchanged."""
    spec = dict(new.get("spec") or {})
    spec.pop("nodeName", None)
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    return (
        spec == (old.get("spec") or {})
        and om.get("labels") == nm.get("labels")
        and om.get("deletionTimestamp") == nm.get("deletionTimestamp")
    )


def _assigned_pod_change(old: PodInfo | None, new: PodInfo) -> ActionType:
    if old is None:
        return ActionType.ADD
    action = ActionType(0)
    if old.labels != new.labels:
        action |= ActionType.UPDATE_POD_LABEL
    o, n = old.requests, new.requests
    if (n.milli_cpu < o.milli_cpu or n.memory < o.memory or n.ephemeral_storage < o.ephemeral_storage
            or any(n.scalar.get(k, 0) < v for k, v in o.scalar.items())):  # fmt: skip
        action |= ActionType.UPDATE_POD_SCALE_DOWN
    if new.terminating and not old.terminating:
        action |= ActionType.UPDATE_POD_OTHER
    return action


async def run_scheduler(
    client: Client,
    stop: asyncio.Event,
    *,
    config_path: str | None = None,
    leader_elect: bool = False,
    registry: Mapping[str, type[Plugin]] | None = None,
) -> None:
    """Run the scheduler until `stop` is set; with leader election, only while holding the Lease."""
    cfg = schedconfig.load(config_path)
    Scheduler(client, cfg, registry=registry)  # fail fast on a bad profile, before any election
    le = cfg.leader_election
    if not (leader_elect or le.leader_elect):
        await Scheduler(client, cfg, registry=registry).run(stop)
        return
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    elector = LeaderElector(client, le.resource_namespace, le.resource_name, identity,
                            lease_duration=le.lease_duration, renew_deadline=le.renew_deadline,
                            retry_period=le.retry_period)  # fmt: skip

    async def lead(leadership_ended: asyncio.Event) -> None:
        await Scheduler(client, cfg, registry=registry).run(leadership_ended)

    await elector.run(lead, stop=stop)


__all__ = ["COMPONENT", "Code", "Scheduler", "run_scheduler"]

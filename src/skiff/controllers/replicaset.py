"""The ReplicaSet controller: keep `spec.replicas` pods matching the selector running.

Kubernetes' pkg/controller/replicaset, level-triggered: `reconcile(key)`
reads the ReplicaSet and the pods from the informer caches, claims pods
(adopts matching orphans, releases owned pods that stopped matching; see
`refmanager`), creates the missing pods from the template in slow-start
batches or deletes the surplus (`podranking` picks the least valuable
first), and writes status: replicas, fullyLabeledReplicas, readyReplicas,
availableReplicas (ready for `minReadySeconds`), observedGeneration and a
ReplicaFailure condition when creating or deleting failed.

Pods being deleted and finished pods do not count. Because the pod cache
lags behind the controller's own writes, `Expectations` record the
creations and deletions in flight: until the informer has delivered them,
a reconcile only refreshes status and never creates or deletes again. A
Deployment's ReplicaSets are plain ReplicaSets to this controller.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors
from skiff.api.selectors import LabelSelector, label_selector_from_dict
from skiff.client import Client, Controller, Informer, RequeueAfter, controller_owner, object_key, resources
from skiff.client.cache import index_by_controller_uid, index_by_namespace
from skiff.client.events import now_rfc3339
from skiff.controllers.context import ControllerContext
from skiff.controllers.podcontrol import (
    BURST_REPLICAS,
    PodControl,
    ensure_index,
    namespace_terminating,
    pods_prefix,
    seconds_until_available,
    slow_start_batch,
)
from skiff.controllers.podranking import pods_to_delete
from skiff.controllers.refmanager import BY_NAMESPACE, OwnerEnqueuer, RefManager
from skiff.controllers.workloads import (
    BY_CONTROLLER,
    Expectations,
    is_active,
    is_available,
    is_deleting,
    is_ready,
    pod_from_template,
)

Obj = dict[str, Any]
log = logging.getLogger(__name__)

ORPHANS_BY_NAMESPACE = "orphans-by-namespace"


def orphans_by_namespace(obj: Obj) -> list[str]:
    """Objects without a controller owner, by namespace (the candidates for adoption)."""
    if controller_owner(obj) is not None:
        return []
    return index_by_namespace(obj)


def selector_of(rs: Obj) -> LabelSelector:
    """The ReplicaSet's selector (one that cannot be parsed selects nothing)."""
    try:
        return label_selector_from_dict((rs.get("spec") or {}).get("selector"))
    except errors.BadRequest:
        return LabelSelector.match_nothing()


def spec_replicas(rs: Obj) -> int:
    value = (rs.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def calculate_status(rs: Obj, pods: list[Obj], manage_error: Exception | None, now: datetime | None = None) -> Obj:
    """The status `pods` (the active pods the ReplicaSet owns) give it; zero counts omitted as Kubernetes does."""
    spec = rs.get("spec") or {}
    old = rs.get("status") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    when = now or datetime.now(UTC)
    fully = ready = available = 0
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in template_labels.items()):
            fully += 1
        if is_ready(pod):
            ready += 1
            if is_available(pod, min_ready, when):
                available += 1
    conditions = [dict(c) for c in old.get("conditions") or []]
    failure = next((c for c in conditions if c.get("type") == "ReplicaFailure"), None)
    if manage_error is not None and failure is None:
        diff = len(pods) - spec_replicas(rs)
        reason = "FailedCreate" if diff < 0 else ("FailedDelete" if diff > 0 else "")
        conditions.append(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "lastTransitionTime": now_rfc3339(),
                "reason": reason,
                "message": str(manage_error),
            }
        )
    elif manage_error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    status: Obj = {"replicas": len(pods)}
    for field, value in (("fullyLabeledReplicas", fully), ("readyReplicas", ready), ("availableReplicas", available)):
        if value:
            status[field] = value
    if old.get("observedGeneration"):
        status["observedGeneration"] = old["observedGeneration"]
    if conditions:
        status["conditions"] = conditions
    return status


class ReplicaSetController(Controller):
    name = "replicaset"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client: Client = ctx.client
        self.pod_control = PodControl(ctx.client, ctx.recorder("replicaset-controller"))
        self.expectations = Expectations()
        self.rs: Informer = self.watch(ctx.informers.informer(resources.REPLICASETS))
        self.pods: Informer = self.wait_for(ctx.informers.informer(resources.PODS))
        ensure_index(self.rs, BY_NAMESPACE, index_by_namespace)
        ensure_index(self.pods, BY_CONTROLLER, index_by_controller_uid)
        ensure_index(self.pods, ORPHANS_BY_NAMESPACE, orphans_by_namespace)
        self.owners = OwnerEnqueuer(
            self.rs, kind="ReplicaSet", api_group="apps", selector_of=selector_of, enqueue=self.enqueue_key
        )
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # --- handlers: only enqueue keys and note what the cache has caught up with ----------------
    def _pod_added(self, pod: Obj) -> None:
        if is_deleting(pod):
            self._pod_deleted(pod)  # seen first already being deleted: not a creation we wait for
            return
        if controller_owner(pod) is not None:
            key = self.owners.owner_key(pod)
            if key is not None:
                self.expectations.created(key)
                self.enqueue_key(key)
            return
        self.owners.enqueue_matching(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return  # a resync: nothing changed
        if is_deleting(new):
            self._pod_deleted(new)
            if old["metadata"].get("labels") != new["metadata"].get("labels"):
                self._pod_deleted(old)
            return
        self.owners.child_updated(old, new)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self.owners.owner_key(pod)
        if key is not None:
            self.expectations.deleted(key, object_key(pod))
            self.enqueue_key(key)

    # --- reconcile ------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        rs = self.rs.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        needs_sync = self.expectations.satisfied(key)
        meta = rs["metadata"]
        selector = selector_of(rs)
        candidates = self.pods.by_index(BY_CONTROLLER, meta.get("uid", "")) + self.pods.by_index(
            ORPHANS_BY_NAMESPACE, meta.get("namespace", "")
        )
        active = [p for p in candidates if is_active(p)]
        manager = RefManager(
            self.client,
            resources.PODS,
            owner=rs,
            owner_resource=resources.REPLICASETS,
            match=lambda pod: selector.matches((pod.get("metadata") or {}).get("labels")),
        )
        pods = await manager.claim(active)
        manage_error: Exception | None = None
        if needs_sync and not meta.get("deletionTimestamp"):
            try:
                await self.manage_replicas(key, rs, pods)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                manage_error = exc
        now = datetime.now(UTC)
        await self.update_status(rs, calculate_status(rs, pods, manage_error, now))
        if manage_error is not None:
            raise manage_error
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        waits = [w for w in (seconds_until_available(p, min_ready, now) for p in pods) if w is not None]
        if waits:
            raise RequeueAfter(min(waits) + 0.5)

    async def manage_replicas(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        """Create or delete pods so that `pods` (the active pods owned) number `spec.replicas`."""
        diff = len(pods) - spec_replicas(rs)
        meta = rs["metadata"]
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect(key, adds=count)
            template = (rs.get("spec") or {}).get("template") or {}
            pod = pod_from_template(template, rs, resources.REPLICASETS, generate_name=pods_prefix(meta["name"]))

            async def create_one() -> None:
                try:
                    await self.pod_control.create_pod(copy.deepcopy(pod), rs)
                except errors.Timeout:
                    return  # the pod may well be created: the informer will tell
                except errors.StatusError as exc:
                    if namespace_terminating(exc):
                        return
                    raise

            successes, error = await slow_start_batch(count, create_one)
            for _ in range(count - successes):  # never created: do not wait for them
                self.expectations.created(key)
            if error is not None:
                raise error
        elif diff > 0:
            count = min(diff, BURST_REPLICAS)
            victims = pods_to_delete(pods, self._related_pods(rs), count)
            self.expectations.expect(key, deletes=[object_key(p) for p in victims])

            async def delete_one(pod: Obj) -> None:
                pmeta = pod["metadata"]
                try:
                    deleted = await self.pod_control.delete_pod(pmeta["namespace"], pmeta["name"], rs)
                except Exception:
                    self.expectations.deleted(key, object_key(pod))
                    raise
                if not deleted:
                    self.expectations.deleted(key, object_key(pod))

            results = await asyncio.gather(*(delete_one(p) for p in victims), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    def _related_pods(self, rs: Obj) -> list[Obj]:
        """The pods of this ReplicaSet and of its siblings (the ReplicaSets of the same controller)."""
        ref = controller_owner(rs)
        if ref is None:
            siblings = [rs]
        else:
            siblings = [
                other
                for other in self.rs.by_index(BY_NAMESPACE, rs["metadata"].get("namespace", ""))
                if (controller_owner(other) or {}).get("uid") == ref.get("uid")
            ]
        related: list[Obj] = []
        for sibling in siblings:
            related.extend(self.pods.by_index(BY_CONTROLLER, sibling["metadata"].get("uid", "")))
        return related

    async def update_status(self, rs: Obj, status: Obj) -> Obj:
        """Write `status` (with observedGeneration) unless it is what the ReplicaSet has already."""
        generation = rs["metadata"].get("generation")
        old = rs.get("status") or {}
        if status == old and old.get("observedGeneration") == generation:
            return rs
        status = dict(status)
        if generation:
            status["observedGeneration"] = generation
        updated = copy.deepcopy(rs)
        updated["status"] = status
        try:
            return await self.client.update_status(resources.REPLICASETS, updated)
        except errors.Conflict:
            meta = rs["metadata"]
            fresh = await self.client.get(resources.REPLICASETS, meta["name"], namespace=meta["namespace"])
            if fresh["metadata"].get("uid") != rs["metadata"].get("uid"):
                return fresh
            fresh["status"] = status
            return await self.client.update_status(resources.REPLICASETS, fresh)


def new(ctx: ControllerContext) -> Controller:
    return ReplicaSetController(ctx)

"""The StatefulSet controller: pods with stable names and storage, started and stopped in order.

Follows Kubernetes' `pkg/controller/statefulset`. Replica `i` is always the
pod `<set>-<i>` (labels `statefulset.kubernetes.io/pod-name` and
`apps.kubernetes.io/pod-index`, hostname `<set>-<i>`, subdomain
`serviceName`, so it keeps its DNS name across restarts), and mounts the
PersistentVolumeClaims `<claim>-<set>-<i>` made from `volumeClaimTemplates`
— created before the pod, and kept when the set scales down or is deleted
unless `persistentVolumeClaimRetentionPolicy` says Delete (then the claim
gets an ownerReference to the pod or the set and the garbage collector
removes it with its owner).

With `podManagementPolicy: OrderedReady` (the default) the controller
creates pod i only once pods 0..i-1 are Running and Ready, removes pods
from the highest ordinal down one at a time, and does nothing else while any
pod is unhealthy. `Parallel` creates and deletes all at once. A failed or
succeeded pod is deleted and recreated under the same name.

Updates: each template is a ControllerRevision; `status.updateRevision` is
the current template's, `status.currentRevision` the one the set converged
on last. RollingUpdate replaces pods from the highest ordinal down to
`partition`, `maxUnavailable` (default 1) at a time, counting every pod
not Running and Ready as unavailable; ordinals below the partition are (re)created from the current
revision. OnDelete replaces a pod only when the user deletes it. When every
pod runs the update revision, it becomes the current one.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, EventRecorder, RequeueAfter, resources
from skiff.controllers.context import ControllerContext
from skiff.controllers.history import REVISION_HASH_LABEL, ensure_revision, truncate_history
from skiff.controllers.workloads import (
    ensure_controller_index,
    is_available,
    is_deleting,
    is_running_and_ready,
    is_terminal,
    meta,
    namespace_terminating,
    next_available,
    now,
    owned_pods,
    owner_reference,
    pod_from_template,
    uid_of,
    write_status,
)

Obj = dict[str, Any]
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def new(ctx: ControllerContext) -> Controller:
    return StatefulSetController(ctx.client, ctx)


def ordinal_of(set_name: str, pod: Obj) -> int | None:
    """The ordinal `i` of a pod named `<set>-<i>`, or None for another name."""
    match = re.fullmatch(re.escape(set_name) + r"-(0|[1-9][0-9]*)", meta(pod).get("name", ""))
    return int(match.group(1)) if match else None


def claim_name(claim_template: Obj, set_name: str, ordinal: int) -> str:
    return f"{meta(claim_template).get('name')}-{set_name}-{ordinal}"


def revision_template(revision: Obj) -> Obj:
    """The pod template stored in a ControllerRevision's data (the replacing patch, without `$patch`)."""
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


class StatefulSetController(Controller):
    name = "statefulset"
    workers = 2

    def __init__(self, client: Client, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = client
        self.recorder: EventRecorder = ctx.recorder("statefulset-controller")
        self.sets = self.watch(ctx.informers.informer(resources.STATEFULSETS))
        self.pods = self.watch_owned(ctx.informers.informer(resources.PODS), "StatefulSet")
        ensure_controller_index(self.pods)
        self.claims = self.wait_for(ctx.informers.informer(resources.PVCS))
        self.revisions = self.wait_for(ctx.informers.informer(resources.CONTROLLERREVISIONS))

    async def reconcile(self, key: str) -> None:
        sts = self.sets.get(key)
        if sts is None or is_deleting(sts):
            return  # the garbage collector removes the pods (and the claims it owns)
        await StatefulSetSync(self, sts).run()


class StatefulSetSync:
    """One reconcile of one StatefulSet."""

    def __init__(self, ctl: StatefulSetController, sts: Obj) -> None:
        self.ctl = ctl
        self.client = ctl.client
        self.sts = sts
        self.spec: Obj = sts.get("spec") or {}
        self.name: str = meta(sts)["name"]
        self.namespace: str = meta(sts)["namespace"]
        replicas = self.spec.get("replicas")
        self.replicas = int(replicas) if replicas is not None else 1
        self.start = int((self.spec.get("ordinals") or {}).get("start") or 0)
        self.monotonic = (self.spec.get("podManagementPolicy") or "OrderedReady") != "Parallel"
        self.min_ready = int(self.spec.get("minReadySeconds") or 0)
        self.events: list[tuple[str, str, str]] = []
        self.now = now()

    async def run(self) -> None:
        update, history, collision_count = await ensure_revision(
            self.client, self.ctl.revisions, self.sts, resources.STATEFULSETS
        )
        current = self._current_revision(history, update)
        try:
            pods = self._pods()
            await self._converge(pods, current, update)
            pods = self._pods()
            await self._write_status(pods, current, update, collision_count)
            in_use = {(meta(p).get("labels") or {}).get(REVISION_HASH_LABEL, "") for p in pods.values()}
            in_use.add(meta(current)["name"])
            limit = int(self.spec.get("revisionHistoryLimit", 10))
            await truncate_history(self.client, history, keep=limit, in_use=in_use, current=meta(update)["name"])
        finally:  # what was done is reported even when a later step fails
            for type_, reason, message in self.events:
                await self.ctl.recorder.record(self.sts, type=type_, reason=reason, message=message)
        wait = next_available(owned_pods(self.ctl.pods, self.sts), self.min_ready)
        if wait is not None:
            raise RequeueAfter(wait)  # a ready pod becomes available then: the next ordinal may start

    def _pods(self) -> dict[int, Obj]:
        """This set's pods by ordinal, from the cache (pods it owns with another name are ignored)."""
        found = {}
        for pod in owned_pods(self.ctl.pods, self.sts):
            ordinal = ordinal_of(self.name, pod)
            if ordinal is not None:
                found[ordinal] = pod
        return found

    def _current_revision(self, history: list[Obj], update: Obj) -> Obj:
        wanted = (self.sts.get("status") or {}).get("currentRevision")
        for rev in history:
            if meta(rev)["name"] == wanted:
                return rev
        return update

    def _revision_of(self, pod: Obj) -> str:
        return str((meta(pod).get("labels") or {}).get(REVISION_HASH_LABEL) or "")

    def _healthy(self, pod: Obj) -> bool:
        return is_running_and_ready(pod) and is_available(pod, self.min_ready, self.now) and not is_deleting(pod)

    # --- convergence ----------------------------------------------------------------------------
    async def _converge(self, pods: dict[int, Obj], current: Obj, update: Obj) -> None:
        wanted = range(self.start, self.start + self.replicas)
        strategy = self.spec.get("updateStrategy") or {}
        rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0) if rolling else 0
        # 1. every ordinal in range has a healthy pod, lowest first
        for ordinal in wanted:
            pod = pods.get(ordinal)
            if pod is None:
                revision = current if rolling and ordinal < self.start + partition else update
                await self._create(ordinal, revision)
                if self.monotonic:
                    return
                continue
            if is_terminal(pod) and not is_deleting(pod):
                self.events.append(
                    ("Warning", "RecreatingFailedPod",
                     f"StatefulSet {self.namespace}/{self.name} is recreating failed Pod {meta(pod)['name']}"),
                )  # fmt: skip
                await self._delete(pod)
                if self.monotonic:
                    return
                continue
            if self.monotonic and not self._healthy(pod):
                return  # wait for it to become Running and Ready (or to finish terminating)
        # 2. pods beyond the range go, highest first
        condemned = sorted((o for o in pods if o not in wanted), reverse=True)
        for ordinal in condemned:
            pod = pods[ordinal]
            if is_deleting(pod):
                if self.monotonic:
                    return
                continue
            await self._release_claims_on_scale_down(pod, ordinal)
            await self._delete(pod)
            if self.monotonic:
                return
        # 3. rolling update: from the highest ordinal down to the partition, at most maxUnavailable pods down
        if not rolling:
            return
        in_range = [pods.get(o) for o in wanted]
        unavailable = sum(1 for p in in_range if p is None or not self._healthy(p))
        budget = self._max_unavailable(strategy) - unavailable
        for ordinal in sorted((o for o in wanted if o >= self.start + partition), reverse=True):
            pod = pods.get(ordinal)
            if budget <= 0:
                return
            if pod is not None and self._revision_of(pod) != meta(update)["name"] and not is_deleting(pod):
                await self._delete(pod)
                budget -= 1

    def _max_unavailable(self, strategy: Obj) -> int:
        """`rollingUpdate.maxUnavailable` (a count or a percentage of replicas, rounded up; at least 1)."""
        raw = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1)
        if isinstance(raw, str) and raw.endswith("%"):
            return max(1, -(-int(raw[:-1]) * self.replicas // 100))
        return max(1, int(raw))

    async def _create(self, ordinal: int, revision: Obj) -> None:
        pod_name = f"{self.name}-{ordinal}"
        template = revision_template(revision)
        spec: Obj = template.setdefault("spec", {})
        spec["hostname"] = pod_name
        if self.spec.get("serviceName"):
            spec["subdomain"] = self.spec["serviceName"]
        volumes: list[Obj] = [v for v in spec.get("volumes") or []]
        for claim in self.spec.get("volumeClaimTemplates") or []:
            cname = claim_name(claim, self.name, ordinal)
            if not await self._ensure_claim(claim, cname, pod_name):
                return
            volumes = [v for v in volumes if v.get("name") != meta(claim).get("name")]
            volumes.append({"name": meta(claim).get("name"), "persistentVolumeClaim": {"claimName": cname}})
        if volumes:
            spec["volumes"] = volumes
        labels = {POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: str(ordinal), REVISION_HASH_LABEL: meta(revision)["name"]}
        pod = pod_from_template(template, self.sts, resources.STATEFULSETS, name=pod_name, labels=labels)
        try:
            await self.client.create(resources.PODS, pod)
        except errors.AlreadyExists:
            return  # created by an earlier reconcile the cache has not shown yet
        except errors.StatusError as exc:
            if namespace_terminating(exc):
                return
            self.events.append(
                ("Warning", "FailedCreate",
                 f"create Pod {pod_name} in StatefulSet {self.name} failed error: {exc}"),
            )  # fmt: skip
            raise
        self.events.append(
            ("Normal", "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {self.name} successful")
        )

    async def _ensure_claim(self, claim_template: Obj, cname: str, pod_name: str) -> bool:
        """Create the claim unless it exists; False when it cannot be (the namespace is terminating)."""
        existing = self.ctl.claims.get(f"{self.namespace}/{cname}")
        if existing is not None:
            await self._reclaim(existing)
            return True
        selector_labels = (self.spec.get("selector") or {}).get("matchLabels") or {}
        claim: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": cname,
                "namespace": self.namespace,
                "labels": {**(meta(claim_template).get("labels") or {}), **selector_labels},
            },
            "spec": copy.deepcopy(claim_template.get("spec") or {}),
        }
        if meta(claim_template).get("annotations"):
            claim["metadata"]["annotations"] = dict(meta(claim_template)["annotations"])
        policy = self.spec.get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenDeleted") == "Delete":
            ref = owner_reference(self.sts, resources.STATEFULSETS)
            ref["controller"] = False  # owned for deletion, not controlled
            claim["metadata"]["ownerReferences"] = [ref]
        try:
            await self.client.create(resources.PVCS, claim)
        except errors.AlreadyExists:
            return True
        except errors.StatusError as exc:
            if namespace_terminating(exc):
                return False  # the namespace and this set are going away
            self.events.append(
                ("Warning", "FailedCreate",
                 f"create Claim {cname} for Pod {pod_name} in StatefulSet {self.name} failed error: {exc}"),
            )  # fmt: skip
            raise
        self.events.append(
            ("Normal", "SuccessfulCreate",
             f"create Claim {cname} Pod {pod_name} in StatefulSet {self.name} success"),
        )  # fmt: skip
        return True

    async def _reclaim(self, claim: Obj) -> None:
        """A claim handed to a condemned pod (whenScaled: Delete) is needed again: take it back from the pod."""
        refs = meta(claim).get("ownerReferences") or []
        if not any(r.get("kind") == "Pod" for r in refs):
            return
        kept = [r for r in refs if r.get("kind") != "Pod"]
        policy = self.spec.get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenDeleted") == "Delete" and not any(r.get("uid") == uid_of(self.sts) for r in kept):
            ref = owner_reference(self.sts, resources.STATEFULSETS)
            ref["controller"] = False
            kept.append(ref)
        patch = {"metadata": {"ownerReferences": kept or None, "uid": uid_of(claim)}}
        try:
            await self.client.patch(resources.PVCS, meta(claim)["name"], patch, namespace=self.namespace)
        except errors.NotFound:
            pass

    async def _release_claims_on_scale_down(self, pod: Obj, ordinal: int) -> None:
        """With `whenScaled: Delete`, the condemned pod becomes its claims' owner, so they go with it (GC)."""
        policy = self.spec.get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenScaled") != "Delete":
            return
        ref = {
            "apiVersion": "v1", "kind": "Pod", "name": meta(pod)["name"], "uid": uid_of(pod),
            "blockOwnerDeletion": True,
        }  # fmt: skip
        for template in self.spec.get("volumeClaimTemplates") or []:
            cname = claim_name(template, self.name, ordinal)
            claim = self.ctl.claims.get(f"{self.namespace}/{cname}")
            if claim is None:
                continue
            # the pod alone owns it now: the garbage collector deletes a dependent only once all owners are gone
            refs = [
                r
                for r in meta(claim).get("ownerReferences") or []
                if r.get("uid") not in (uid_of(pod), uid_of(self.sts))
            ]
            try:
                await self.client.patch(
                    resources.PVCS, cname, {"metadata": {"ownerReferences": [*refs, ref]}}, namespace=self.namespace
                )
            except errors.NotFound:
                pass

    async def _delete(self, pod: Obj) -> None:
        try:
            await self.client.delete(
                resources.PODS, meta(pod)["name"], namespace=self.namespace, preconditions={"uid": uid_of(pod)}
            )
        except (errors.NotFound, errors.Conflict):
            return
        self.events.append(
            ("Normal", "SuccessfulDelete", f"delete Pod {meta(pod)['name']} in StatefulSet {self.name} successful")
        )

    # --- status ---------------------------------------------------------------------------------
    async def _write_status(self, pods: dict[int, Obj], current: Obj, update: Obj, collision_count: int) -> None:
        current_name, update_name = meta(current)["name"], meta(update)["name"]
        replicas = ready = available = current_replicas = updated = 0
        for pod in pods.values():
            replicas += 1
            if is_running_and_ready(pod):
                ready += 1
                if is_available(pod, self.min_ready, self.now):
                    available += 1
            if not is_deleting(pod):
                revision = self._revision_of(pod)
                current_replicas += revision == current_name
                updated += revision == update_name
        status: Obj = {
            "observedGeneration": meta(self.sts).get("generation") or 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "currentReplicas": current_replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "currentRevision": current_name,
            "updateRevision": update_name,
            "collisionCount": collision_count,
        }
        if updated == self.replicas and ready == self.replicas and replicas == self.replicas:
            status["currentRevision"] = update_name  # the rollout is complete
            status["currentReplicas"] = updated
        old = self.sts.get("status") or {}
        if "conditions" in old:
            status["conditions"] = old["conditions"]
        if status == old:
            return
        await write_status(self.client, resources.STATEFULSETS, self.sts, status)

"""One sync of one Deployment: the writes its rollout strategies are built from.

A `DeploymentSync` holds a private copy of the Deployment and of the
ReplicaSets it owns (read from the informer caches at the start of
`reconcile`) and performs the steps Kubernetes' pkg/controller/deployment
sync.go and progress.go perform: find or create the new ReplicaSet
(`<deployment>-<pod-template-hash>`) and keep its revision annotation at
max(old)+1, scale a ReplicaSet and record the `ScalingReplicaSet` Event,
delete old ReplicaSets beyond `revisionHistoryLimit`, and compute and write
the Deployment's status with its Progressing and Available conditions.
Every write's answer replaces the copy it was made from, so a later step in
the same sync sees what an earlier one did; a stale cache shows up as a 409
Conflict from the server, and the key is simply retried.

The strategies that combine these steps (rolling, recreate, proportional
scaling) live in `deployment_rollout`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

from skiff.api import errors
from skiff.client import Client, resources
from skiff.controllers import deployment_status as ds
from skiff.controllers import deployment_util as du
from skiff.controllers.podcontrol import BackgroundEvents, namespace_terminating
from skiff.controllers.workloads import owner_reference

Obj = dict[str, Any]
log = logging.getLogger(__name__)


def _uid(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


def _name(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("name") or "")


class DeploymentSync:
    def __init__(
        self,
        client: Client,
        events: BackgroundEvents,
        deployment: Obj,
        replica_sets: Sequence[Obj],
        pod_map: Callable[[Sequence[Obj]], dict[str, list[Obj]]],
    ) -> None:
        self.client = client
        self.events = events
        self.d = copy.deepcopy(deployment)
        self.rss: list[Obj] = [copy.deepcopy(rs) for rs in replica_sets]
        self._pod_map = pod_map
        self.requeue_after: float | None = None  # look again then (a progress deadline to check)

    # --- bookkeeping ----------------------------------------------------------------------------
    def fresh(self, rs: Obj | None) -> Obj | None:
        """The latest copy of `rs` this sync has (after its own writes)."""
        if rs is None:
            return None
        uid = _uid(rs)
        return next((r for r in self.rss if _uid(r) == uid), rs)

    def fresh_all(self, rss: Sequence[Obj | None]) -> list[Obj]:
        return [f for f in (self.fresh(rs) for rs in rss) if f is not None]

    def _remember(self, rs: Obj) -> Obj:
        uid = _uid(rs)
        self.rss = [r for r in self.rss if _uid(r) != uid] + [rs]
        return rs

    def pod_map(self) -> dict[str, list[Obj]]:
        """Pods (active or not) by the uid of the ReplicaSet of this Deployment controlling them."""
        return self._pod_map(self.rss)

    def record(self, type_: str, reason: str, message: str) -> None:
        self.events.record(self.d, type=type_, reason=reason, message=message)

    # --- deployment writes ----------------------------------------------------------------------
    async def update_status(self) -> None:
        self.d = await self.client.update_status(resources.DEPLOYMENTS, self.d)

    def _set_revision(self, value: str) -> bool:
        meta = self.d.setdefault("metadata", {})
        annotations: dict[str, str] = meta.get("annotations") or {}
        meta["annotations"] = annotations
        if annotations.get(du.REVISION_ANNOTATION) == value:
            return False
        annotations[du.REVISION_ANNOTATION] = value
        return True

    async def _save(self, *, revision_changed: bool) -> None:
        """Write the revision annotation (a metadata update) if it changed, then the status."""
        if revision_changed:
            status = self.d.get("status")
            updated = await self.client.update(resources.DEPLOYMENTS, self.d)
            if status is not None:
                updated["status"] = status
            self.d = updated
        await self.update_status()

    async def check_paused_conditions(self) -> None:
        """Progressing=Unknown DeploymentPaused/DeploymentResumed, so a paused spell never counts as no progress."""
        if not ds.has_progress_deadline(self.d):
            return
        status = self.d.setdefault("status", {})
        cond = ds.get_condition(status, ds.PROGRESSING)
        if cond is not None and cond.get("reason") == ds.TIMED_OUT_REASON:
            return
        paused_cond = cond is not None and cond.get("reason") == ds.PAUSED_REASON
        paused = bool((self.d.get("spec") or {}).get("paused"))
        if paused and not paused_cond:
            ds.set_condition(
                status, ds.new_condition(ds.PROGRESSING, "Unknown", ds.PAUSED_REASON, "Deployment is paused")
            )
        elif not paused and paused_cond:
            ds.set_condition(
                status, ds.new_condition(ds.PROGRESSING, "Unknown", ds.RESUMED_REASON, "Deployment is resumed")
            )
        else:
            return
        await self.update_status()

    # --- replica sets ---------------------------------------------------------------------------
    async def get_all_rss_and_sync_revision(self, *, create: bool) -> tuple[Obj | None, list[Obj]]:
        """(the new ReplicaSet — created if asked and missing — and all old ones), revisions brought up to date."""
        _, all_old = du.find_old_rss(self.d, self.rss)
        new_rs = await self.get_new_rs(all_old, create=create)
        _, all_old = du.find_old_rss(self.d, self.rss)
        return new_rs, all_old

    async def get_new_rs(self, old_rss: Sequence[Obj], *, create: bool) -> Obj | None:
        d = self.d
        existing = du.find_new_rs(d, self.rss)
        new_revision = du.max_revision(old_rss) + 1
        status = d.setdefault("status", {})
        if existing is not None:
            rs_copy = copy.deepcopy(existing)
            annotations_updated = du.set_new_rs_annotations(d, rs_copy, new_revision, exists=True)
            min_ready = int((d.get("spec") or {}).get("minReadySeconds") or 0)
            if annotations_updated or int((rs_copy.get("spec") or {}).get("minReadySeconds") or 0) != min_ready:
                rs_copy.setdefault("spec", {})["minReadySeconds"] = min_ready
                return self._remember(await self.client.update(resources.REPLICASETS, rs_copy))
            revision = ((rs_copy.get("metadata") or {}).get("annotations") or {}).get(du.REVISION_ANNOTATION, "")
            revision_changed = self._set_revision(revision)
            status_changed = False
            if ds.has_progress_deadline(d) and ds.get_condition(status, ds.PROGRESSING) is None:
                msg = f'Found new replica set "{_name(rs_copy)}"'
                ds.set_condition(status, ds.new_condition(ds.PROGRESSING, "True", ds.FOUND_NEW_RS_REASON, msg))
                status_changed = True
            if revision_changed or status_changed:
                await self._save(revision_changed=revision_changed)
            return rs_copy
        if not create:
            return None
        return await self._create_new_rs(old_rss, new_revision)

    async def _create_new_rs(self, old_rss: Sequence[Obj], new_revision: int) -> Obj | None:
        d = self.d
        meta = d["metadata"]
        status = d.setdefault("status", {})
        pod_template_hash = du.compute_hash(du.template(d), status.get("collisionCount"))
        template = du.new_rs_template(d, pod_template_hash)
        new_rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_template_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [owner_reference(d, resources.DEPLOYMENTS)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": int((d.get("spec") or {}).get("minReadySeconds") or 0),
                "selector": du.new_rs_selector(d, pod_template_hash),
                "template": template,
            },
        }
        count = du.new_rs_new_replicas(d, [*old_rss, new_rs], new_rs)
        new_rs["spec"]["replicas"] = count
        du.set_new_rs_annotations(d, new_rs, new_revision, exists=False)
        already_exists = False
        try:
            created = await self.client.create(resources.REPLICASETS, new_rs, namespace=meta["namespace"])
        except errors.AlreadyExists:
            already_exists = True
            # a slow cache, or a hash collision: the ReplicaSet of that name must be ours and equal
            found = await self.client.get(
                resources.REPLICASETS, new_rs["metadata"]["name"], namespace=meta["namespace"]
            )
            ref = next((r for r in found["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            if not (
                ref and ref.get("uid") == meta.get("uid") and du.equal_ignore_hash(du.template(d), du.template(found))
            ):
                before = status.get("collisionCount") or 0
                status["collisionCount"] = before + 1
                await self.update_status()
                log.info("deployment %s/%s: hash collision, collisionCount %d → %d", meta["namespace"], meta["name"],
                         before, before + 1)  # fmt: skip
                raise errors.Conflict(f"hash collision creating replica set {new_rs['metadata']['name']}") from None
            created = found
        except errors.StatusError as exc:
            if namespace_terminating(exc):
                raise
            msg = f'Failed to create new replica set "{new_rs["metadata"]["name"]}": {exc}'
            if ds.has_progress_deadline(d):
                ds.set_condition(status, ds.new_condition(ds.PROGRESSING, "False", ds.FAILED_RS_CREATE_REASON, msg))
                try:
                    await self.update_status()
                except errors.StatusError:
                    pass  # the bigger problem is reported below
            self.record("Warning", ds.FAILED_RS_CREATE_REASON, msg)
            raise
        self._remember(created)
        if not already_exists and count > 0:
            self.record("Normal", "ScalingReplicaSet", f"Scaled up replica set {_name(created)} from 0 to {count}")
        revision_changed = self._set_revision(str(new_revision))
        status_changed = False
        if not already_exists and ds.has_progress_deadline(d):
            msg = f'Created new replica set "{_name(created)}"'
            ds.set_condition(status, ds.new_condition(ds.PROGRESSING, "True", ds.NEW_RS_REASON, msg))
            status_changed = True
        if revision_changed or status_changed:
            await self._save(revision_changed=revision_changed)
        return created

    async def scale_rs_and_record(self, rs: Obj, new_scale: int) -> tuple[bool, Obj]:
        """Scale `rs` to `new_scale` ("up" or "down"); (whether it was scaled, the ReplicaSet now)."""
        if du.spec_replicas(rs) == new_scale:
            return False, rs
        operation = "up" if du.spec_replicas(rs) < new_scale else "down"
        return await self.scale_rs(rs, new_scale, operation)

    async def scale_rs(self, rs: Obj, new_scale: int, operation: str) -> tuple[bool, Obj]:
        """Set the size and the desired/max-replicas annotations of `rs`; record ScalingReplicaSet if the size moved."""
        rs = self.fresh(rs) or rs
        replicas = du.spec_replicas(self.d)
        max_replicas = replicas + du.max_surge(self.d)
        size_changes = du.spec_replicas(rs) != new_scale
        if not size_changes and not du.replicas_annotations_need_update(rs, replicas, max_replicas):
            return False, rs
        old_scale = du.spec_replicas(rs)
        rs_copy = copy.deepcopy(rs)
        rs_copy.setdefault("spec", {})["replicas"] = new_scale
        du.set_replicas_annotations(rs_copy, replicas, max_replicas)
        updated = self._remember(await self.client.update(resources.REPLICASETS, rs_copy))
        if size_changes:
            self.record(
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {operation} replica set {_name(rs)} from {old_scale} to {new_scale}",
            )
        return size_changes, updated

    async def cleanup(self, old_rss: Sequence[Obj]) -> None:
        """Delete the oldest unused ReplicaSets beyond `revisionHistoryLimit`."""
        if not ds.has_revision_history_limit(self.d):
            return
        limit = int((self.d.get("spec") or {}).get("revisionHistoryLimit") or 0)
        cleanable = [rs for rs in self.fresh_all(old_rss) if not rs["metadata"].get("deletionTimestamp")]
        diff = len(cleanable) - limit
        if diff <= 0:
            return
        for rs in du.by_revision(cleanable)[:diff]:
            rs_status = rs.get("status") or {}
            if (
                int(rs_status.get("replicas") or 0) != 0
                or du.spec_replicas(rs) != 0
                or int(rs["metadata"].get("generation") or 0) > int(rs_status.get("observedGeneration") or 0)
            ):
                continue
            log.debug("deployment %s: deleting old replica set %s", _name(self.d), _name(rs))
            try:
                await self.client.delete(resources.REPLICASETS, _name(rs), namespace=rs["metadata"]["namespace"])
            except errors.NotFound:
                pass

    # --- status ---------------------------------------------------------------------------------
    def _replica_failure(self, all_rss: Sequence[Obj], new_rs: Obj | None) -> Obj | None:
        """The new ReplicaSet's ReplicaFailure condition (else an old one's), as a Deployment condition."""
        for group in ([new_rs] if new_rs is not None else [], all_rss):
            for rs in group:
                for c in (rs.get("status") or {}).get("conditions") or []:
                    if c.get("type") == ds.REPLICA_FAILURE:
                        return {
                            "type": ds.REPLICA_FAILURE,
                            "status": c.get("status"),
                            "lastUpdateTime": c.get("lastTransitionTime"),
                            "lastTransitionTime": c.get("lastTransitionTime"),
                            "reason": c.get("reason"),
                            "message": c.get("message"),
                        }
        return None

    async def sync_status(self, all_rss: Sequence[Obj | None], new_rs: Obj | None) -> None:
        """Status only (syncDeploymentStatus): for scaling and paused Deployments."""
        all_fresh, new_fresh = self.fresh_all(all_rss), self.fresh(new_rs)
        new_status = ds.calculate_status(all_fresh, new_fresh, self.d)
        if new_status == (self.d.get("status") or {}):
            return
        self.d["status"] = new_status
        await self.update_status()

    async def sync_rollout_status(self, all_rss: Sequence[Obj | None], new_rs: Obj | None) -> None:
        """Status with the Progressing condition of a rollout (syncRolloutStatus), and when to look again."""
        d = self.d
        all_fresh, new_fresh = self.fresh_all(all_rss), self.fresh(new_rs)
        new_status = ds.calculate_status(all_fresh, new_fresh, d)
        if not ds.has_progress_deadline(d):
            ds.remove_condition(new_status, ds.PROGRESSING)
        current = ds.get_condition(d.get("status"), ds.PROGRESSING)
        complete_already = (
            int(new_status.get("replicas") or 0) == int(new_status.get("updatedReplicas") or 0)
            and current is not None
            and current.get("reason") == ds.NEW_RS_AVAILABLE_REASON
        )
        subject = f'ReplicaSet "{_name(new_fresh)}"' if new_fresh is not None else f'Deployment "{_name(d)}"'
        if ds.has_progress_deadline(d) and not complete_already:
            if ds.deployment_complete(d, new_status):
                msg = f"{subject} has successfully progressed."
                ds.set_condition(new_status, ds.new_condition(ds.PROGRESSING, "True", ds.NEW_RS_AVAILABLE_REASON, msg))
            elif ds.deployment_progressing(d, new_status):
                cond = ds.new_condition(ds.PROGRESSING, "True", ds.RS_UPDATED_REASON, f"{subject} is progressing.")
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    ds.remove_condition(new_status, ds.PROGRESSING)
                ds.set_condition(new_status, cond)
            elif ds.deployment_timed_out(d, new_status):
                msg = f"{subject} has timed out progressing."
                ds.set_condition(new_status, ds.new_condition(ds.PROGRESSING, "False", ds.TIMED_OUT_REASON, msg))
        failure = self._replica_failure(all_fresh, new_fresh)
        if failure is not None:
            ds.set_condition(new_status, failure)
        else:
            ds.remove_condition(new_status, ds.REPLICA_FAILURE)
        if new_status == (d.get("status") or {}):
            after = ds.seconds_to_deadline(d, new_status)
            if after is not None:
                self.requeue_after = max(after, 0.0) + 1.0
            return
        d["status"] = new_status
        await self.update_status()

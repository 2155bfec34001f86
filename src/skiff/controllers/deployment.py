"""The Deployment controller: roll a pod template out through hash-named ReplicaSets.

Kubernetes' pkg/controller/deployment. A Deployment owns ReplicaSets named
`<deployment>-<pod-template-hash>`; the one whose template equals the
Deployment's is the new one, the others are old. `reconcile(key)` reads the
Deployment, its ReplicaSets and their pods from the informer caches, claims
ReplicaSets by selector (adopting orphans, releasing those that stopped
matching), and then, in Kubernetes' order:

1. a Deployment being deleted only gets its status refreshed;
2. paused or not, the Progressing condition notes DeploymentPaused /
   DeploymentResumed, so a long pause never reads as a stalled rollout;
3. paused, or resized (an active ReplicaSet's desired-replicas annotation
   differs from `spec.replicas`): scale without rolling out;
4. otherwise roll out with the Recreate or RollingUpdate strategy.

The ReplicaSet controller makes each ReplicaSet's pods; this controller only
sizes ReplicaSets, so the two meet only through the API. `kubectl rollout
undo` needs nothing here: it writes an old ReplicaSet's template back into the
Deployment, which then finds that ReplicaSet as its new one and gives it the
next revision. The steps are in `deployment_sync`, the strategies in
`deployment_rollout`, the arithmetic in `deployment_util`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

from skiff.api import errors
from skiff.api.selectors import LabelSelector, label_selector_from_dict
from skiff.client import Client, Controller, Informer, RequeueAfter, controller_owner, resources
from skiff.client.cache import index_by_controller_uid, index_by_namespace
from skiff.controllers import deployment_rollout as rollout
from skiff.controllers.context import ControllerContext
from skiff.controllers.deployment_sync import DeploymentSync
from skiff.controllers.podcontrol import BackgroundEvents, ensure_index
from skiff.controllers.refmanager import BY_NAMESPACE, OwnerEnqueuer, RefManager
from skiff.controllers.workloads import BY_CONTROLLER, is_deleting

Obj = dict[str, Any]
log = logging.getLogger(__name__)


def selector_of(d: Obj) -> LabelSelector:
    try:
        return label_selector_from_dict((d.get("spec") or {}).get("selector"))
    except errors.BadRequest:
        return LabelSelector.match_nothing()


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


class DeploymentController(Controller):
    name = "deployment"
    workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client: Client = ctx.client
        self.events = BackgroundEvents(ctx.recorder("deployment-controller"))
        self.deployments: Informer = self.watch(ctx.informers.informer(resources.DEPLOYMENTS))
        self.rs: Informer = self.wait_for(ctx.informers.informer(resources.REPLICASETS))
        self.pods: Informer = self.wait_for(ctx.informers.informer(resources.PODS))
        ensure_index(self.deployments, BY_NAMESPACE, index_by_namespace)
        ensure_index(self.rs, BY_NAMESPACE, index_by_namespace)
        ensure_index(self.pods, BY_CONTROLLER, index_by_controller_uid)
        self.owners = OwnerEnqueuer(
            self.deployments, kind="Deployment", selector_of=selector_of, enqueue=self.enqueue_key
        )
        self.rs.add_handlers(on_add=self._rs_added, on_update=self._rs_updated, on_delete=self._rs_deleted)
        self.pods.add_handlers(on_delete=self._pod_deleted)

    # --- handlers -------------------------------------------------------------------------------
    def _rs_added(self, rs: Obj) -> None:
        if is_deleting(rs):
            self._rs_deleted(rs)
            return
        if controller_owner(rs) is not None:
            self.owners.enqueue_owner(rs)
            return
        self.owners.enqueue_matching(rs)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        self.owners.child_updated(old, new)

    def _rs_deleted(self, rs: Obj) -> None:
        self.owners.enqueue_owner(rs)

    def _pod_deleted(self, pod: Obj) -> None:
        """A Recreate rollout waits for the old pods to be gone: look again when one goes."""
        ref = controller_owner(pod, "ReplicaSet")
        if ref is None:
            return
        rs = self.rs.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if rs is None:
            return
        key = self.owners.owner_key(rs)
        if key is None:
            return
        d = self.deployments.get(key)
        if d is not None and ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            self.enqueue_key(key)

    # --- reconcile ------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        spec = d.get("spec") or {}
        raw_selector = spec.get("selector") or {}
        if not raw_selector.get("matchLabels") and not raw_selector.get("matchExpressions"):
            msg = "This deployment is selecting all pods. A non-empty selector is required."
            self.events.record(d, type="Warning", reason="SelectingAll", message=msg)
            status = d.setdefault("status", {})
            generation = int(d["metadata"].get("generation") or 0)
            if int(status.get("observedGeneration") or 0) < generation:
                status["observedGeneration"] = generation
                await self.client.update_status(resources.DEPLOYMENTS, d)
            return
        rss = await self.claim_replica_sets(d)
        s = DeploymentSync(self.client, self.events, d, rss, self.pod_map_for(d))
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_rss = await s.get_all_rss_and_sync_revision(create=False)
            await s.sync_status([*old_rss, new_rs], new_rs)
            return
        await s.check_paused_conditions()
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if spec.get("paused") or await rollout.is_scaling_event(s):
            await rollout.sync_scaling(s)
        elif strategy == "Recreate":
            await rollout.rollout_recreate(s)
        else:
            await rollout.rollout_rolling(s)
        if s.requeue_after is not None:
            raise RequeueAfter(s.requeue_after)

    async def claim_replica_sets(self, d: Obj) -> list[Obj]:
        """The Deployment's ReplicaSets, after adopting matching orphans and releasing non-matching ones."""
        selector = selector_of(d)
        candidates = self.rs.by_index(BY_NAMESPACE, d["metadata"].get("namespace", ""))
        manager = RefManager(
            self.client,
            resources.REPLICASETS,
            owner=d,
            owner_resource=resources.DEPLOYMENTS,
            match=lambda rs: selector.matches(_labels(rs)),
        )
        return await manager.claim(candidates)

    def pod_map_for(self, d: Obj) -> Callable[[Sequence[Obj]], dict[str, list[Obj]]]:
        """Pods (active or not) by the uid of the ReplicaSet controlling them, for Recreate's wait."""
        selector = selector_of(d)

        def pod_map(rss: Sequence[Obj]) -> dict[str, list[Obj]]:
            out: dict[str, list[Obj]] = {}
            for rs in rss:
                uid = rs["metadata"].get("uid", "")
                out[uid] = [p for p in self.pods.by_index(BY_CONTROLLER, uid) if selector.matches(_labels(p))]
            return out

        return pod_map


def new(ctx: ControllerContext) -> Controller:
    return DeploymentController(ctx)

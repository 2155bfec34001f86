"""The Deployment strategies: RollingUpdate, Recreate, and scaling (also while paused).

Ported from Kubernetes' pkg/controller/deployment rolling.go, recreate.go
and sync.go, step for step, over a `DeploymentSync`:

- rolling: scale the new ReplicaSet up as far as maxSurge allows; else
  scale old ones down as far as maxUnavailable allows (unhealthy old
  replicas first, then oldest ReplicaSets first); when complete, clean up
  old ReplicaSets beyond revisionHistoryLimit;
- recreate: scale every old ReplicaSet to 0, wait until none of their pods
  is left running, then create/scale the new one;
- scale: a change of `spec.replicas` (or a paused Deployment) resizes the
  one active ReplicaSet, or — mid-rollout — shares the difference among
  the active ReplicaSets in proportion to their size (`proportional_sizes`),
  without starting or advancing a rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skiff.controllers import deployment_status as ds
from skiff.controllers import deployment_util as du
from skiff.controllers.deployment_sync import DeploymentSync

Obj = dict[str, Any]


def _available(rs: Obj | None) -> int:
    return int(((rs or {}).get("status") or {}).get("availableReplicas") or 0)


# --- rolling update ---------------------------------------------------------------------------


async def rollout_rolling(s: DeploymentSync) -> None:
    new_rs, old_rss = await s.get_all_rss_and_sync_revision(create=True)
    assert new_rs is not None
    scaled_up, new_rs = await reconcile_new_rs(s, [*old_rss, new_rs], new_rs)
    if scaled_up:
        await s.sync_rollout_status([*old_rss, new_rs], new_rs)
        return
    scaled_down = await reconcile_old_rss(s, [*old_rss, new_rs], du.filter_active(old_rss), new_rs)
    if scaled_down:
        await s.sync_rollout_status([*old_rss, new_rs], new_rs)
        return
    if ds.deployment_complete(s.d, s.d.get("status") or {}):
        await s.cleanup(old_rss)
    await s.sync_rollout_status([*old_rss, new_rs], new_rs)


async def reconcile_new_rs(s: DeploymentSync, all_rss: Sequence[Obj], new_rs: Obj) -> tuple[bool, Obj]:
    replicas = du.spec_replicas(s.d)
    if du.spec_replicas(new_rs) == replicas:
        return False, new_rs
    if du.spec_replicas(new_rs) > replicas:
        return await s.scale_rs_and_record(new_rs, replicas)
    return await s.scale_rs_and_record(new_rs, du.new_rs_new_replicas(s.d, all_rss, new_rs))


async def reconcile_old_rss(s: DeploymentSync, all_rss: Sequence[Obj], old_rss: Sequence[Obj], new_rs: Obj) -> bool:
    """Scale old ReplicaSets down as far as availability allows; whether anything was scaled."""
    if du.replica_count(old_rss) == 0:
        return False  # nothing to scale down
    all_pods = du.replica_count(all_rss)
    min_available = du.spec_replicas(s.d) - du.max_unavailable(s.d)
    new_unavailable = du.spec_replicas(new_rs) - _available(new_rs)
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return False
    # unhealthy old replicas go first: they hurt availability nothing and may block the rollout
    old_rss, cleaned = await cleanup_unhealthy_replicas(s, old_rss, max_scaled_down)
    scaled = await scale_down_old_rss_for_rolling_update(s, [*old_rss, new_rs], old_rss)
    return cleaned + scaled > 0


async def cleanup_unhealthy_replicas(
    s: DeploymentSync, old_rss: Sequence[Obj], max_cleanup: int
) -> tuple[list[Obj], int]:
    ordered = du.by_creation(old_rss)
    total = 0
    for i, rs in enumerate(ordered):
        if total >= max_cleanup:
            break
        replicas = du.spec_replicas(rs)
        if replicas == 0 or replicas == _available(rs):
            continue  # nothing, or only healthy replicas, to clean up
        count = min(max_cleanup - total, replicas - _available(rs))
        _, ordered[i] = await s.scale_rs_and_record(rs, replicas - count)
        total += count
    return ordered, total


async def scale_down_old_rss_for_rolling_update(
    s: DeploymentSync, all_rss: Sequence[Obj], old_rss: Sequence[Obj]
) -> int:
    min_available = du.spec_replicas(s.d) - du.max_unavailable(s.d)
    available = du.available_replica_count(all_rss)
    if available <= min_available:
        return 0
    to_scale = available - min_available
    total = 0
    for rs in du.by_creation(old_rss):
        if total >= to_scale:
            break
        if du.spec_replicas(rs) == 0:
            continue
        count = min(du.spec_replicas(rs), to_scale - total)
        await s.scale_rs_and_record(rs, du.spec_replicas(rs) - count)
        total += count
    return total


# --- recreate ---------------------------------------------------------------------------------


async def rollout_recreate(s: DeploymentSync) -> None:
    new_rs, old_rss = await s.get_all_rss_and_sync_revision(create=False)
    scaled_down = False
    for rs in du.filter_active(old_rss):
        scaled, _ = await s.scale_rs_and_record(rs, 0)
        scaled_down = scaled_down or scaled
    if scaled_down:
        await s.sync_rollout_status([*old_rss, new_rs], new_rs)
        return
    if old_pods_running(new_rs, s.fresh_all(old_rss), s.pod_map()):
        await s.sync_rollout_status([*old_rss, new_rs], new_rs)
        return
    if new_rs is None:
        new_rs, old_rss = await s.get_all_rss_and_sync_revision(create=True)
        assert new_rs is not None
    _, new_rs = await s.scale_rs_and_record(new_rs, du.spec_replicas(s.d))
    if ds.deployment_complete(s.d, s.d.get("status") or {}):
        await s.cleanup(old_rss)
    await s.sync_rollout_status([*old_rss, new_rs], new_rs)


def old_pods_running(new_rs: Obj | None, old_rss: Sequence[Obj], pod_map: dict[str, list[Obj]]) -> bool:
    """Whether any pod of an old ReplicaSet may still run (Recreate waits for them all to be gone)."""
    if du.actual_replica_count(old_rss) > 0:
        return True
    new_uid = ((new_rs or {}).get("metadata") or {}).get("uid")
    for rs_uid, pods in pod_map.items():
        if new_rs is not None and rs_uid == new_uid:
            continue
        for pod in pods:
            if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
                return True
    return False


# --- scaling (and paused Deployments) ------------------------------------------------------------


async def is_scaling_event(s: DeploymentSync) -> bool:
    """Whether `spec.replicas` differs from what an active ReplicaSet was sized for (desired-replicas)."""
    new_rs, old_rss = await s.get_all_rss_and_sync_revision(create=False)
    for rs in du.filter_active([*old_rss, new_rs]):
        desired = du.desired_replicas_annotation(rs)
        if desired is not None and desired != du.spec_replicas(s.d):
            return True
    return False


async def sync_scaling(s: DeploymentSync) -> None:
    """Resize without rolling out (a scaling event, or a paused Deployment), then status."""
    new_rs, old_rss = await s.get_all_rss_and_sync_revision(create=False)
    await scale(s, new_rs, old_rss)
    old_rss, new_rs = s.fresh_all(old_rss), s.fresh(new_rs)
    if (s.d.get("spec") or {}).get("paused"):
        await s.cleanup(old_rss)
    await s.sync_status([*old_rss, new_rs], new_rs)


async def scale(s: DeploymentSync, new_rs: Obj | None, old_rss: Sequence[Obj]) -> None:
    replicas = du.spec_replicas(s.d)
    target = du.find_active_or_latest(new_rs, old_rss)
    if target is not None:
        if du.spec_replicas(target) != replicas:
            await s.scale_rs_and_record(target, replicas)
        return
    if du.is_saturated(s.d, new_rs):
        for old in du.filter_active(old_rss):
            await s.scale_rs_and_record(old, 0)
        return
    if du.is_rolling_update(s.d):
        active = du.filter_active([*old_rss, new_rs])
        sizes, operation = du.proportional_sizes(s.d, active)
        for rs in active:
            await s.scale_rs(rs, sizes[rs["metadata"]["name"]], operation)

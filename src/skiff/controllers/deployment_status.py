"""A Deployment's status and conditions, as `kubectl rollout status` reads them; no I/O.

`calculate_status` sums the ReplicaSets' counts into the Deployment's
(replicas, updatedReplicas, readyReplicas, availableReplicas,
unavailableReplicas, observedGeneration; zeros omitted as Go's omitempty
does) and sets Available (MinimumReplicasAvailable or
MinimumReplicasUnavailable against maxUnavailable). Progressing is judged
from the change between the old and the new status: complete
(NewReplicaSetAvailable), progressing (ReplicaSetUpdated, which restarts
the progress deadline), or stuck past `progressDeadlineSeconds`
(ProgressDeadlineExceeded, which `kubectl rollout status` reports as a
failure). Conditions keep their lastTransitionTime while their status does
not change (Kubernetes' SetDeploymentCondition).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from skiff.api.humanize import parse_time
from skiff.client.events import now_rfc3339
from skiff.controllers.deployment_util import (
    MAX_INT32,
    actual_replica_count,
    available_replica_count,
    max_unavailable,
    ready_replica_count,
    replica_count,
    spec_replicas,
)

Obj = dict[str, Any]

# condition types and reasons (k8s.io/kubernetes/pkg/controller/deployment/util)
PROGRESSING = "Progressing"
AVAILABLE = "Available"
REPLICA_FAILURE = "ReplicaFailure"
NEW_RS_REASON = "NewReplicaSetCreated"
FOUND_NEW_RS_REASON = "FoundNewReplicaSet"
RS_UPDATED_REASON = "ReplicaSetUpdated"
NEW_RS_AVAILABLE_REASON = "NewReplicaSetAvailable"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
FAILED_RS_CREATE_REASON = "ReplicaSetCreateError"
PAUSED_REASON = "DeploymentPaused"
RESUMED_REASON = "DeploymentResumed"
MIN_AVAILABLE_REASON = "MinimumReplicasAvailable"
MIN_UNAVAILABLE_REASON = "MinimumReplicasUnavailable"


# --- conditions ---------------------------------------------------------------------------------


def new_condition(type_: str, status: str, reason: str, message: str, now: str | None = None) -> Obj:
    stamp = now or now_rfc3339()
    return {
        "type": type_,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def get_condition(status: Obj | None, type_: str) -> Obj | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_condition(status: Obj, condition: Obj) -> None:
    """Add or replace a condition; same status and reason: keep the old one; same status: keep its transition time."""
    current = get_condition(status, condition["type"])
    if (
        current is not None
        and current.get("status") == condition["status"]
        and current.get("reason") == condition["reason"]
    ):
        return
    condition = dict(condition)
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    others = [c for c in status.get("conditions") or [] if c.get("type") != condition["type"]]
    status["conditions"] = [*others, condition]


def remove_condition(status: Obj, type_: str) -> None:
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != type_]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


# --- status and progress ------------------------------------------------------------------------


def has_progress_deadline(d: Obj) -> bool:
    value = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return value is not None and int(value) != MAX_INT32


def has_revision_history_limit(d: Obj) -> bool:
    value = (d.get("spec") or {}).get("revisionHistoryLimit")
    return value is not None and int(value) != MAX_INT32


def calculate_status(all_rss: Sequence[Obj | None], new_rs: Obj | None, d: Obj, now: str | None = None) -> Obj:
    """The Deployment status its ReplicaSets give it, with the Available condition; zero counts omitted."""
    old = d.get("status") or {}
    available = available_replica_count(all_rss)
    total = replica_count(all_rss)
    counts = {
        "observedGeneration": int((d.get("metadata") or {}).get("generation") or 0),
        "replicas": actual_replica_count(all_rss),
        "updatedReplicas": actual_replica_count([new_rs]),
        "readyReplicas": ready_replica_count(all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
    }
    status: Obj = {k: v for k, v in counts.items() if v}
    conditions = [dict(c) for c in old.get("conditions") or []]
    if conditions:
        status["conditions"] = conditions
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if available >= spec_replicas(d) - max_unavailable(d):
        cond = new_condition(AVAILABLE, "True", MIN_AVAILABLE_REASON, "Deployment has minimum availability.", now)
    else:
        cond = new_condition(
            AVAILABLE, "False", MIN_UNAVAILABLE_REASON, "Deployment does not have minimum availability.", now
        )
    set_condition(status, cond)
    return status


def deployment_complete(d: Obj, status: Obj) -> bool:
    replicas = spec_replicas(d)
    return (
        int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
        and int(status.get("availableReplicas") or 0) == replicas
        and int(status.get("observedGeneration") or 0) >= int((d.get("metadata") or {}).get("generation") or 0)
    )


def deployment_progressing(d: Obj, status: Obj) -> bool:
    """Whether `status` shows progress over the Deployment's current status."""
    old = d.get("status") or {}

    def get(s: Obj, k: str) -> int:
        return int(s.get(k) or 0)

    old_old = get(old, "replicas") - get(old, "updatedReplicas")
    new_old = get(status, "replicas") - get(status, "updatedReplicas")
    return (
        get(status, "updatedReplicas") > get(old, "updatedReplicas")
        or new_old < old_old
        or get(status, "readyReplicas") > get(old, "readyReplicas")
        or get(status, "availableReplicas") > get(old, "availableReplicas")
    )


def deployment_timed_out(d: Obj, status: Obj, now: datetime | None = None) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE_REASON:
        return False
    if cond.get("reason") == TIMED_OUT_REASON:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    deadline = int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0)
    return since.timestamp() + deadline < (now or datetime.now(UTC)).timestamp()


def seconds_to_deadline(d: Obj, status: Obj, now: datetime | None = None) -> float | None:
    """When to look again for a lack of progress (requeueStuckDeployment); None if there is nothing to watch."""
    cond = get_condition(d.get("status") or {}, PROGRESSING)
    if not has_progress_deadline(d) or cond is None:
        return None
    if deployment_complete(d, status) or cond.get("reason") == TIMED_OUT_REASON:
        return None
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    deadline = int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0)
    return since.timestamp() + deadline - (now or datetime.now(UTC)).timestamp()

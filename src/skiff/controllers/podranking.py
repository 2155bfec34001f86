"""Which pods a ReplicaSet deletes first when it has too many.

Scaling down should remove the pods that matter least: Kubernetes'
`ActivePodsWithRanks` (pkg/controller/controller_utils.go) orders them
unscheduled < scheduled, Pending < Unknown < Running, not ready < ready,
lower `controller.kubernetes.io/pod-deletion-cost` first, pods doubled up on
a node with more of their siblings first, then the most recently ready,
the most restarted and the newest — with ages compared on a logarithmic
scale (LogarithmicScaleDown), so that pods of about the same age are picked
at random (by uid) rather than always the very newest. The comparison is
ported rule for rule; `pods_to_delete` is what the controller calls.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from skiff.api.humanize import parse_time
from skiff.controllers.podcontrol import ready_since
from skiff.controllers.workloads import is_active, is_ready

Obj = dict[str, Any]

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_cost(pod: Obj) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _restarts(statuses: list[Obj] | None) -> int:
    return max((int(s.get("restartCount") or 0) for s in statuses or []), default=0)


def _node(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _uid(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _log_rank(t: datetime, now: datetime) -> int:
    ns = (now - t).total_seconds() * 1e9
    return int(math.log2(ns)) if ns > 0 else -1


def _compare_times(ti: datetime | None, tj: datetime | None, ui: str, uj: str, now: datetime) -> int | None:
    """Newer first, compared on a log2 scale of age; None when the times are equal."""
    if ti == tj:
        return None
    if ti is None or tj is None:  # afterOrZero: an empty time sorts first
        return -1 if ti is None else 1
    diff = _log_rank(ti, now) - _log_rank(tj, now)
    if diff == 0:
        return -1 if ui < uj else (1 if ui > uj else 0)
    return -1 if diff < 0 else 1


def compare(pi: Obj, pj: Obj, rank_i: int, rank_j: int, now: datetime) -> int:
    """Negative when `pi` should be deleted before `pj` (ActivePodsWithRanks.Less)."""
    ni, nj = _node(pi), _node(pj)
    if ni != nj and (not ni or not nj):
        return -1 if not ni else 1
    phi = _PHASE_ORDINAL.get((pi.get("status") or {}).get("phase", ""), 0)
    phj = _PHASE_ORDINAL.get((pj.get("status") or {}).get("phase", ""), 0)
    if phi != phj:
        return -1 if phi < phj else 1
    ri, rj = is_ready(pi), is_ready(pj)
    if ri != rj:
        return -1 if not ri else 1
    ci, cj = deletion_cost(pi), deletion_cost(pj)
    if ci != cj:
        return -1 if ci < cj else 1
    if rank_i != rank_j:
        return -1 if rank_i > rank_j else 1
    if ri and rj:
        res = _compare_times(ready_since(pi), ready_since(pj), _uid(pi), _uid(pj), now)
        if res is not None:
            return res
    si, sj = pi.get("status") or {}, pj.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses"):
        xi, xj = _restarts(si.get(key)), _restarts(sj.get(key))
        if xi != xj:
            return -1 if xi > xj else 1
    created_i = parse_time((pi.get("metadata") or {}).get("creationTimestamp"))
    created_j = parse_time((pj.get("metadata") or {}).get("creationTimestamp"))
    res = _compare_times(created_i, created_j, _uid(pi), _uid(pj), now)
    return res or 0


def pods_to_delete(
    pods: Sequence[Obj], related: Sequence[Obj], count: int, *, now: datetime | None = None
) -> list[Obj]:
    """The `count` pods of `pods` to delete first; `related` are the active pods of sibling ReplicaSets too."""
    if count >= len(pods):
        return list(pods)
    on_node = Counter(_node(p) for p in related if is_active(p))
    ranked: list[tuple[Obj, int]] = [(p, on_node[_node(p)]) for p in pods]
    when = now or datetime.now(UTC)

    def cmp(a: tuple[Obj, int], b: tuple[Obj, int]) -> int:
        return compare(a[0], b[0], a[1], b[1], when)

    ranked.sort(key=functools.cmp_to_key(cmp))
    return [p for p, _ in ranked[:count]]

"""The HPA's replica calculation: how many pods a metric asks for, given usage, requests and readiness.

Kubernetes' `replica_calculator.go`: desired = ceil(ready pods * usage /
target) unless within the tolerance; pods missing metrics count as 100% of
their request on a scale-down and 0% on a scale-up, unready pods as 0% on a
scale-up, and a recount that would flip the direction means "stay". Pure, so
that each rule is tested against a fake clock; the metrics come from
`hpa_metrics`, and what the HPA then does with the count (stabilization,
policies, limits) is `hpa_behavior`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.controllers.hpa_metrics import (
    CalculationError,
    PodMetric,
    epoch,
    pod_requests,
    usage_ratio,
    utilization_ratio,
)

Obj = dict[str, Any]

DEFAULT_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
CPU_INITIALIZATION_PERIOD = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
INITIAL_READINESS_DELAY = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay


@dataclass(frozen=True)
class Tolerances:
    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def is_within(self, ratio: float) -> bool:
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


@dataclass
class PodGroups:
    ready_count: int = 0
    unready: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)


def _ready_condition(pod: Obj) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return dict(c)
    return None


def group_pods(
    pods: Iterable[Obj],
    metrics: Mapping[str, PodMetric],
    resource: str,
    *,
    now: float,
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
    initial_readiness_delay: float = INITIAL_READINESS_DELAY,
) -> PodGroups:
    """`groupPods`: which pods count, which are unready (CPU only), missing metrics, or ignored."""
    groups = PodGroups()
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name", ""))
        status = pod.get("status") or {}
        if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") == "Failed":
            groups.ignored.add(name)
            continue
        if status.get("phase") == "Pending":
            groups.unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            groups.missing.add(name)
            continue
        if resource == "cpu":
            condition = _ready_condition(pod)
            started = epoch(status.get("startTime"))
            if condition is None or started is None:
                unready = True
            else:
                transition = epoch(condition.get("lastTransitionTime")) or 0.0
                if started + cpu_initialization_period > now:
                    # still initializing: unready, or no full window of metrics since it became ready
                    unready = condition.get("status") == "False" or metric.timestamp < transition + metric.window
                else:
                    # unready and never ready since it started
                    unready = condition.get("status") == "False" and started + initial_readiness_delay > transition
            if unready:
                groups.unready.add(name)
                continue
        groups.ready_count += 1
    return groups


def _pods_and_metrics(
    pods: list[Obj], metrics: Mapping[str, PodMetric], resource: str, now: float, **timing: float
) -> tuple[PodGroups, dict[str, PodMetric]]:
    if not pods:
        raise CalculationError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, now=now, **timing)
    kept = {n: m for n, m in metrics.items() if n not in groups.ignored and n not in groups.unready}
    if not kept:
        raise CalculationError("did not receive metrics for targeted pods (pods might be unready)")
    return groups, kept


def resource_replicas(
    current: int,
    target_utilization: int,
    resource: str,
    pods: list[Obj],
    metrics: Mapping[str, PodMetric],
    *,
    now: float,
    tolerances: Tolerances = Tolerances(),
    container: str = "",
    **timing: float,
) -> tuple[int, int, int]:
    """`GetResourceReplicas` (target type Utilization): (replicas, utilization %, average usage)."""
    groups, kept = _pods_and_metrics(pods, metrics, resource, now, **timing)
    requests = pod_requests(pods, resource, container)
    ratio, utilization, raw = utilization_ratio(kept, requests, target_utilization)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(ratio):
            return current, utilization, raw
        return math.ceil(ratio * groups.ready_count), utilization, raw
    if groups.missing:
        if ratio < 1.0:  # scale-down: missing pods use 100% of their request (or the target, if higher)
            fallback = max(100, target_utilization)
            for name in groups.missing:
                kept[name] = PodMetric(requests.get(name, 0) * fallback // 100, 0.0, 0.0)
        elif ratio > 1.0:  # scale-up: missing pods use nothing
            for name in groups.missing:
                kept[name] = PodMetric(0, 0.0, 0.0)
    if scale_up_with_unready:
        for name in groups.unready:
            kept[name] = PodMetric(0, 0.0, 0.0)
    new_ratio, _, _ = utilization_ratio(kept, requests, target_utilization)
    return _recount(current, ratio, new_ratio, len(kept), tolerances), utilization, raw


def raw_resource_replicas(
    current: int,
    target_usage: int,
    resource: str,
    pods: list[Obj],
    metrics: Mapping[str, PodMetric],
    *,
    now: float,
    tolerances: Tolerances = Tolerances(),
    **timing: float,
) -> tuple[int, int]:
    """`GetRawResourceReplicas` (target type AverageValue, in thousandths): (replicas, average usage)."""
    groups, kept = _pods_and_metrics(pods, metrics, resource, now, **timing)
    ratio, usage = usage_ratio(kept, target_usage)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(ratio):
            return current, usage
        return math.ceil(ratio * groups.ready_count), usage
    if groups.missing:
        fill = target_usage if ratio < 1.0 else 0  # scale-down: exactly the target; scale-up: nothing
        for name in groups.missing:
            kept[name] = PodMetric(fill, 0.0, 0.0)
    if scale_up_with_unready:
        for name in groups.unready:
            kept[name] = PodMetric(0, 0.0, 0.0)
    new_ratio, _ = usage_ratio(kept, target_usage)
    return _recount(current, ratio, new_ratio, len(kept), tolerances), usage


def _recount(current: int, ratio: float, new_ratio: float, counted: int, tolerances: Tolerances) -> int:
    """After filling in missing and unready pods: stay if within tolerance or if the direction flips."""
    if tolerances.is_within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    replicas = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas

"""The HorizontalPodAutoscaler's arithmetic, pure: how many replicas, given usage, requests and history.

A port of Kubernetes' `pkg/controller/podautoscaler` decision logic
(`replica_calculator.go`, `metrics/utilization.go` and the normalization half
of `horizontal.go`), kept free of I/O so that each rule can be tested against
a fake clock:

- `resource_replicas` / `raw_resource_replicas`: desired = ceil(ready pods *
  usage / target) unless within the tolerance; pods missing metrics count as
  100% of their request on a scale-down and 0% on a scale-up, unready pods as
  0% on a scale-up, and a recount that would flip the direction means "stay";
- `History`: the recent recommendations and scale events of one HPA, for the
  stabilization windows and the scaling policies;
- `normalize` (no `spec.behavior`: downscale stabilization, then at most
  double (or +4) per step) and `normalize_with_behaviors` (Kubernetes'
  `normalizeDesiredReplicasWithBehaviors`: stabilization windows up and down,
  then Pods/Percent policies per period with selectPolicy Max/Min/Disabled),
  each returning the AbleToScale / ScalingLimited conditions to set.

Times are float seconds on one clock (the controller passes wall-clock epoch
seconds, since metric and readiness timestamps are wall-clock); quantities
are integers in thousandths (`MilliValue`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.api import quantity
from skiff.api.durations import parse_duration
from skiff.api.humanize import parse_time

Obj = dict[str, Any]

DEFAULT_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
CPU_INITIALIZATION_PERIOD = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
INITIAL_READINESS_DELAY = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay
SCALE_UP_LIMIT_FACTOR = 2.0  # without behavior: at most double...
SCALE_UP_LIMIT_MINIMUM = 4.0  # ...or go to 4, per step
DEFAULT_SCALE_UP: Obj = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
DEFAULT_SCALE_DOWN: Obj = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


class CalculationError(Exception):
    """No replica count can be computed; the message is Kubernetes' (it ends up in events and conditions)."""


# --- metrics and pods -------------------------------------------------------------------------


@dataclass(frozen=True)
class PodMetric:
    value: int  # thousandths of the unit (millicores, millibytes)
    timestamp: float
    window: float


@dataclass(frozen=True)
class Tolerances:
    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def is_within(self, ratio: float) -> bool:
        return (1.0 - self.scale_down) <= ratio <= (1.0 + self.scale_up)


def epoch(value: Any) -> float | None:
    t = parse_time(value)
    return t.timestamp() if t is not None else None


def pod_metrics(items: Iterable[Obj], resource: str, container: str = "") -> dict[str, PodMetric]:
    """`PodMetricsList` items → pod name → usage of `resource` (summed over containers, or one container)."""
    out: dict[str, PodMetric] = {}
    for item in items:
        meta = item.get("metadata") or {}
        name = str(meta.get("name", ""))
        stamp = epoch(item.get("timestamp")) or 0.0
        try:
            window = parse_duration(str(item.get("window") or "0s"))
        except ValueError:
            window = 0.0
        containers = item.get("containers") or []
        if container:
            found = next((c for c in containers if c.get("name") == container), None)
            if found is None:
                raise CalculationError(
                    f"container {container} not present in metrics for pod {meta.get('namespace', '')}/{name}"
                )
            value = (found.get("usage") or {}).get(resource)
            if value is not None:
                out[name] = PodMetric(quantity.milli_value(value), stamp, window)
            continue
        if not containers:
            continue
        total = 0
        for c in containers:
            value = (c.get("usage") or {}).get(resource)
            if value is None:
                break
            total += quantity.milli_value(value)
        else:
            out[name] = PodMetric(total, stamp, window)
    return out


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


def pod_requests(pods: Iterable[Obj], resource: str, container: str = "") -> dict[str, int]:
    """`calculatePodRequests`: each pod's request of `resource` in thousandths; every container must have one."""
    requests: dict[str, int] = {}
    for pod in pods:
        spec = pod.get("spec") or {}
        name = str((pod.get("metadata") or {}).get("name", ""))
        containers = list(spec.get("containers") or [])
        containers += [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        total = 0
        for c in containers:
            if container and c.get("name") != container:
                continue
            request = ((c.get("resources") or {}).get("requests") or {}).get(resource)
            if request is None:
                raise CalculationError(f"missing request for {resource} in container {c.get('name')} of Pod {name}")
            total += quantity.milli_value(request)
        requests[name] = total
    return requests


def utilization_ratio(
    metrics: Mapping[str, PodMetric], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int]:
    """`GetResourceUtilizationRatio`: (usage/target ratio, utilization %, average usage in thousandths)."""
    metrics_total = requests_total = entries = 0
    for name, metric in metrics.items():
        request = requests.get(name)
        if request is None:
            continue  # a metric without a pod we know of
        metrics_total += metric.value
        requests_total += request
        entries += 1
    if requests_total == 0:
        raise CalculationError("no metrics returned matched known pods")
    utilization = metrics_total * 100 // requests_total
    return utilization / target_utilization, utilization, metrics_total // entries


def usage_ratio(metrics: Mapping[str, PodMetric], target_usage: int) -> tuple[float, int]:
    """`GetMetricUsageRatio`: (average/target ratio, average usage in thousandths)."""
    average = sum(m.value for m in metrics.values()) // len(metrics)
    return average / target_usage, average


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


# --- behavior: rules, history, normalization --------------------------------------------------


@dataclass(frozen=True)
class Policy:
    type: str  # Pods | Percent
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window: float
    select_policy: str = "Max"  # Max | Min | Disabled
    policies: tuple[Policy, ...] = ()
    tolerance: float | None = None


def scaling_rules(rules: Obj | None, *, up: bool, downscale_stabilization: float) -> ScalingRules:
    """One direction of `spec.behavior`, with Kubernetes' defaults for what is unset.

    A scale-down stabilization window left unset is the controller's `downscale_stabilization`
    (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 minutes by default).
    """
    defaults = DEFAULT_SCALE_UP if up else DEFAULT_SCALE_DOWN
    given = rules or {}
    window = given.get("stabilizationWindowSeconds")
    if window is None:
        window = defaults.get("stabilizationWindowSeconds", downscale_stabilization)
    raw_policies = given.get("policies")
    if raw_policies is None:
        raw_policies = defaults["policies"]
    policies = tuple(
        Policy(str(p.get("type", "")), int(p.get("value", 0)), int(p.get("periodSeconds", 0))) for p in raw_policies
    )
    tolerance = given.get("tolerance")
    return ScalingRules(
        stabilization_window=float(window),
        select_policy=str(given.get("selectPolicy") or defaults["selectPolicy"]),
        policies=policies,
        tolerance=float(quantity.parse(tolerance)) if tolerance is not None else None,
    )


def tolerances_for(
    up: ScalingRules | None, down: ScalingRules | None, default: float = DEFAULT_TOLERANCE
) -> Tolerances:
    """The tolerance each way: a behavior's `tolerance` where set, else the controller's."""
    return Tolerances(
        scale_down=down.tolerance if down is not None and down.tolerance is not None else default,
        scale_up=up.tolerance if up is not None and up.tolerance is not None else default,
    )


@dataclass
class Recommendation:
    replicas: int
    timestamp: float


@dataclass
class ScaleEvent:
    change: int
    timestamp: float
    outdated: bool = False


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass
class History:
    """What one HPA recommended and did recently (kept in the controller's memory, as in Kubernetes)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    scale_up_events: list[ScaleEvent] = field(default_factory=list)
    scale_down_events: list[ScaleEvent] = field(default_factory=list)

    def record_initial(self, current: int, now: float) -> None:
        """`recordInitialRecommendation`: the first look remembers the current size as a recommendation."""
        if not self.recommendations:
            self.recommendations.append(Recommendation(current, now))

    def _remember(self, desired: int, now: float, old_index: int | None) -> None:
        if old_index is not None:
            self.recommendations[old_index] = Recommendation(desired, now)
        else:
            self.recommendations.append(Recommendation(desired, now))

    def stabilize(self, desired: int, downscale_window: float, now: float) -> int:
        """`stabilizeRecommendation` (no behavior): the highest recommendation within the downscale window."""
        cutoff = now - downscale_window
        highest, old_index = desired, None
        for i, rec in enumerate(self.recommendations):
            if rec.timestamp < cutoff:
                old_index = i
            elif rec.replicas > highest:
                highest = rec.replicas
        self._remember(desired, now, old_index)
        return highest

    def stabilize_with_behaviors(
        self, current: int, desired: int, up: ScalingRules, down: ScalingRules, now: float
    ) -> tuple[int, str, str]:
        """`stabilizeRecommendationWithBehaviors`: clamp between the lowest recent recommendation
        (scale-up window) and the highest (scale-down window)."""
        up_cutoff, down_cutoff = now - up.stabilization_window, now - down.stabilization_window
        up_rec = down_rec = desired
        old_index = None
        for i, rec in enumerate(self.recommendations):
            if rec.timestamp > up_cutoff:
                up_rec = min(rec.replicas, up_rec)
            if rec.timestamp > down_cutoff:
                down_rec = max(rec.replicas, down_rec)
            if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
                old_index = i
        recommendation = max(current, up_rec)
        recommendation = min(recommendation, down_rec)
        self._remember(desired, now, old_index)
        if desired >= current:
            return (
                recommendation,
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        return (
            recommendation,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )

    def store_scale_event(self, up: ScalingRules, down: ScalingRules, previous: int, new: int, now: float) -> None:
        """`storeScaleEvent`: remember a rescale for the policies' periods, reusing an outdated slot."""
        if new > previous:
            events, longest, change = self.scale_up_events, _longest_period(up), new - previous
        else:
            events, longest, change = self.scale_down_events, _longest_period(down), previous - new
        cutoff = now - longest
        old_index = None
        for i, event in enumerate(events):
            if event.timestamp < cutoff:
                event.outdated = True
            if event.outdated:
                old_index = i
        if old_index is not None:
            events[old_index] = ScaleEvent(change, now)
        else:
            events.append(ScaleEvent(change, now))


def _longest_period(rules: ScalingRules) -> int:
    return max((p.period_seconds for p in rules.policies), default=0)


def replicas_change_per_period(period_seconds: int, events: Iterable[ScaleEvent], now: float) -> int:
    cutoff = now - period_seconds
    return sum(e.change for e in events if e.timestamp > cutoff)


def scale_up_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    """`calculateScaleUpLimitWithScalingRules`: the most replicas the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for policy in rules.policies:
        added = replicas_change_per_period(policy.period_seconds, history.scale_up_events, now)
        deleted = replicas_change_per_period(policy.period_seconds, history.scale_down_events, now)
        start = current - added + deleted
        if policy.type == "Pods":
            proposed = start + policy.value
        elif policy.type == "Percent":
            proposed = math.ceil(start * (1 + policy.value / 100))
        else:
            continue
        result = proposed if result is None else pick(result, proposed)
    return result if result is not None else (2**31 - 1 if pick is min else -(2**31))


def scale_down_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    """`calculateScaleDownLimitWithBehaviors`: the fewest replicas the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for policy in rules.policies:
        added = replicas_change_per_period(policy.period_seconds, history.scale_up_events, now)
        deleted = replicas_change_per_period(policy.period_seconds, history.scale_down_events, now)
        start = current - added + deleted
        if policy.type == "Pods":
            proposed = start - policy.value
        elif policy.type == "Percent":
            proposed = int(start * (1 - policy.value / 100))
        else:
            continue
        result = proposed if result is None else pick(result, proposed)
    return result if result is not None else (-(2**31) if pick is max else 2**31 - 1)


WITHIN_RANGE = ("DesiredWithinRange", "the desired count is within the acceptable range")
TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
UP_LIMIT = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
DOWN_LIMIT = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")


def convert_with_rules(current: int, desired: int, min_replicas: int, max_replicas: int) -> tuple[int, str, str]:
    """`convertDesiredReplicasWithRules` (no behavior): clamp to [min, max] and to double-or-4 per step."""
    limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > limit:
        maximum, why = limit, UP_LIMIT
    else:
        maximum, why = max_replicas, TOO_MANY
    if desired < min_replicas:
        return (min_replicas, *TOO_FEW)
    if desired > maximum:
        return (maximum, *why)
    return (desired, *WITHIN_RANGE)


def convert_with_behavior_rate(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up: ScalingRules,
    down: ScalingRules,
    history: History,
    now: float,
) -> tuple[int, str, str]:
    """`convertDesiredReplicasWithBehaviorRate`: clamp to [min, max] and to what the policies allow."""
    if desired > current:
        limit = max(scale_up_limit(current, history, up, now), current)
        if max_replicas > limit:
            maximum, why = limit, UP_LIMIT
        else:
            maximum, why = max_replicas, TOO_MANY
        if desired > maximum:
            return (maximum, *why)
    elif desired < current:
        limit = min(scale_down_limit(current, history, down, now), current)
        if min_replicas < limit:
            minimum, why = limit, DOWN_LIMIT
        else:
            minimum, why = min_replicas, TOO_FEW
        if desired < minimum:
            return (minimum, *why)
    return (desired, *WITHIN_RANGE)


def _limited(desired: int, stabilized: int, reason: str, message: str) -> Condition:
    return Condition("ScalingLimited", "False" if desired == stabilized else "True", reason, message)


READY_FOR_NEW_SCALE = Condition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")


def normalize(
    history: History,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    *,
    downscale_window: float,
    now: float,
) -> tuple[int, list[Condition]]:
    """`normalizeDesiredReplicas` (no `spec.behavior`): the replicas to set and the conditions to record."""
    stabilized = history.stabilize(desired, downscale_window, now)
    if stabilized != desired:
        able = Condition(
            "AbleToScale",
            "True",
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    else:
        able = READY_FOR_NEW_SCALE
    replicas, reason, message = convert_with_rules(current, stabilized, min_replicas, max_replicas)
    return replicas, [able, _limited(replicas, stabilized, reason, message)]


def normalize_with_behaviors(
    history: History,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    *,
    up: ScalingRules,
    down: ScalingRules,
    now: float,
) -> tuple[int, list[Condition]]:
    """`normalizeDesiredReplicasWithBehaviors`: stabilization windows, then the scaling policies."""
    stabilized, reason, message = history.stabilize_with_behaviors(current, desired, up, down, now)
    able = Condition("AbleToScale", "True", reason, message) if stabilized != desired else READY_FOR_NEW_SCALE
    replicas, reason, message = convert_with_behavior_rate(
        current, stabilized, min_replicas, max_replicas, up, down, history, now
    )
    return replicas, [able, _limited(replicas, stabilized, reason, message)]


def set_condition(conditions: list[Obj], condition: Condition, now: str) -> list[Obj]:
    """`setConditionInList`: update (or append) one condition; its transition time moves only on a new status."""
    out = [dict(c) for c in conditions]
    existing = next((c for c in out if c.get("type") == condition.type), None)
    if existing is None:
        existing = {"type": condition.type}
        out.append(existing)
    if existing.get("status") != condition.status:
        existing["lastTransitionTime"] = now
    existing["status"] = condition.status
    existing["reason"] = condition.reason
    existing["message"] = condition.message
    return out

"""The HPA's behavior: what it does with a desired replica count — stabilize it, rate-limit it, clamp it.

The normalization half of Kubernetes' `horizontal.go`:

- `History`: the recent recommendations and scale events of one HPA, for the
  stabilization windows and the scaling policies;
- `normalize` (no `spec.behavior`: downscale stabilization, then at most
  double (or +4) per step) and `normalize_with_behaviors` (Kubernetes'
  `normalizeDesiredReplicasWithBehaviors`: stabilization windows up and down,
  then Pods/Percent policies per period with selectPolicy Max/Min/Disabled),
  each returning the AbleToScale / ScalingLimited conditions to set.

Pure and driven by the caller's clock (float seconds), so that each rule is
tested against a fake one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from skiff.api import quantity
from skiff.controllers.hpa_replicas import DEFAULT_TOLERANCE, Tolerances

Obj = dict[str, Any]

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

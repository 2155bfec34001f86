"""The HorizontalPodAutoscaler's arithmetic, pure: how many replicas, given usage, requests and history.

A port of Kubernetes' `pkg/controller/podautoscaler` decision logic, kept
free of I/O so that each rule can be tested against a fake clock. It is
three modules; this one gathers their names, so that the controller (`hpa`)
and the tests have one namespace to read them from:

- `hpa_metrics`: usage from `PodMetricsList`, requests from pod specs, their
  ratios (`metrics/utilization.go`);
- `hpa_replicas`: `resource_replicas` / `raw_resource_replicas`, the desired
  count and the rules for unready pods and missing metrics
  (`replica_calculator.go`);
- `hpa_behavior`: `History`, stabilization windows, scaling policies and the
  AbleToScale / ScalingLimited conditions (`normalize` and
  `normalize_with_behaviors`, the normalization half of `horizontal.go`).

Times are float seconds on one clock (the controller passes wall-clock epoch
seconds, since metric and readiness timestamps are wall-clock); quantities
are integers in thousandths (`MilliValue`).
"""

from __future__ import annotations

from skiff.controllers.hpa_behavior import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    DOWN_LIMIT,
    READY_FOR_NEW_SCALE,
    SCALE_UP_LIMIT_FACTOR,
    SCALE_UP_LIMIT_MINIMUM,
    TOO_FEW,
    TOO_MANY,
    UP_LIMIT,
    WITHIN_RANGE,
    Condition,
    History,
    Policy,
    Recommendation,
    ScaleEvent,
    ScalingRules,
    convert_with_behavior_rate,
    convert_with_rules,
    normalize,
    normalize_with_behaviors,
    replicas_change_per_period,
    scale_down_limit,
    scale_up_limit,
    scaling_rules,
    set_condition,
    tolerances_for,
)
from skiff.controllers.hpa_metrics import (
    CalculationError,
    PodMetric,
    epoch,
    pod_metrics,
    pod_requests,
    usage_ratio,
    utilization_ratio,
)
from skiff.controllers.hpa_replicas import (
    CPU_INITIALIZATION_PERIOD,
    DEFAULT_TOLERANCE,
    INITIAL_READINESS_DELAY,
    PodGroups,
    Tolerances,
    group_pods,
    raw_resource_replicas,
    resource_replicas,
)

__all__ = [
    "CPU_INITIALIZATION_PERIOD",
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_TOLERANCE",
    "DOWN_LIMIT",
    "INITIAL_READINESS_DELAY",
    "READY_FOR_NEW_SCALE",
    "SCALE_UP_LIMIT_FACTOR",
    "SCALE_UP_LIMIT_MINIMUM",
    "TOO_FEW",
    "TOO_MANY",
    "UP_LIMIT",
    "WITHIN_RANGE",
    "CalculationError",
    "Condition",
    "History",
    "PodGroups",
    "PodMetric",
    "Policy",
    "Recommendation",
    "ScaleEvent",
    "ScalingRules",
    "Tolerances",
    "convert_with_behavior_rate",
    "convert_with_rules",
    "epoch",
    "group_pods",
    "normalize",
    "normalize_with_behaviors",
    "pod_metrics",
    "pod_requests",
    "raw_resource_replicas",
    "replicas_change_per_period",
    "resource_replicas",
    "scale_down_limit",
    "scale_up_limit",
    "scaling_rules",
    "set_condition",
    "tolerances_for",
    "usage_ratio",
    "utilization_ratio",
]

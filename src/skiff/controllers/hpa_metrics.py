"""The HPA's metric reading: usage from `PodMetricsList` items, requests from pod specs, their ratios.

Kubernetes' `pkg/controller/podautoscaler/metrics/utilization.go` and the
request half of `replica_calculator.go`: this is where API objects become
numbers, so that the replica calculation (`hpa_replicas`) works on plain
integers. Quantities are integers in thousandths (`MilliValue`); times are
float epoch seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.api import quantity
from skiff.api.durations import parse_duration
from skiff.api.humanize import parse_time

Obj = dict[str, Any]


class CalculationError(Exception):
    """No replica count can be computed; the message is Kubernetes' (it ends up in events and conditions)."""


@dataclass(frozen=True)
class PodMetric:
    value: int  # thousandths of the unit (millicores, millibytes)
    timestamp: float
    window: float


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

"""Conversions between versions of a kind that share storage.

Kubernetes stores one version of each kind and converts on the way in and
out. skiff does the same for the two pairs its built-ins need: autoscaling
v1 <-> v2 HorizontalPodAutoscalers (stored as v2) and events.k8s.io/v1 <->
core/v1 Events (stored as core/v1). Each function returns a new object.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]


def _base(obj: Obj, api_version: str, kind: str) -> Obj:
    out: Obj = {"apiVersion": api_version, "kind": kind}
    if "metadata" in obj:
        out["metadata"] = copy.deepcopy(obj["metadata"])
    return out


def hpa_v1_to_v2(obj: Obj) -> Obj:
    out = _base(obj, "autoscaling/v2", "HorizontalPodAutoscaler")
    spec = obj.get("spec") or {}
    new_spec: Obj = {k: copy.deepcopy(v) for k, v in spec.items() if k != "targetCPUUtilizationPercentage"}
    if "targetCPUUtilizationPercentage" in spec:
        new_spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": spec["targetCPUUtilizationPercentage"],
                    },
                },
            }
        ]
    out["spec"] = new_spec
    if "status" in obj:
        st = obj["status"] or {}
        new_st: Obj = {k: copy.deepcopy(v) for k, v in st.items() if k != "currentCPUUtilizationPercentage"}
        if "currentCPUUtilizationPercentage" in st:
            new_st["currentMetrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {"averageUtilization": st["currentCPUUtilizationPercentage"]},
                    },
                }
            ]
        out["status"] = new_st
    return out


def hpa_v2_to_v1(obj: Obj) -> Obj:
    out = _base(obj, "autoscaling/v1", "HorizontalPodAutoscaler")
    spec = obj.get("spec") or {}
    new_spec: Obj = {
        k: copy.deepcopy(spec[k]) for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec
    }
    for m in spec.get("metrics") or []:
        res = m.get("resource") or {}
        target = res.get("target") or {}
        if m.get("type") == "Resource" and res.get("name") == "cpu" and "averageUtilization" in target:
            new_spec["targetCPUUtilizationPercentage"] = target["averageUtilization"]
    out["spec"] = new_spec
    st = obj.get("status")
    if st is not None:
        new_st: Obj = {
            k: copy.deepcopy(st[k])
            for k in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas")
            if k in st
        }
        for m in st.get("currentMetrics") or []:
            res = m.get("resource") or {}
            cur = res.get("current") or {}
            if m.get("type") == "Resource" and res.get("name") == "cpu" and "averageUtilization" in cur:
                new_st["currentCPUUtilizationPercentage"] = cur["averageUtilization"]
        out["status"] = new_st
    return out


# events.k8s.io/v1 field  <->  core/v1 field
_EVENT_FIELDS = (
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)


def event_v1_to_core(obj: Obj) -> Obj:
    out = _base(obj, "v1", "Event")
    for new, old in _EVENT_FIELDS:
        if new in obj:
            out[old] = copy.deepcopy(obj[new])
    return out


def event_core_to_v1(obj: Obj) -> Obj:
    out = _base(obj, "events.k8s.io/v1", "Event")
    for new, old in _EVENT_FIELDS:
        if old in obj:
            out[new] = copy.deepcopy(obj[old])
    return out

"""Which taints a node should carry, and how fast NoExecute taints may spread across a zone.

Conditions map to NoSchedule taints (Ready False → not-ready, Unknown →
unreachable, MemoryPressure/DiskPressure/PIDPressure/NetworkUnavailable
True → the matching pressure taint, spec.unschedulable → unschedulable) so
the scheduler stops placing pods there. A node not Ready also gets the
NoExecute taint of the same key (which evicts its pods, `tainteviction`),
added at most `node_eviction_rate` nodes per second per zone (a
`TokenBucket` per zone). As Kubernetes' `handleDisruption`, a zone with
≥ 55 % of more than two nodes down is in PartialDisruption (it slows down)
and a zone with every node down in FullDisruption; when every zone is, the
controller assumes the fault is its own. The node lifecycle controller
(`nodelifecycle`) applies what these pure functions say.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from skiff.controllers.nodelifecycle_health import condition, ready_status

Obj = dict[str, Any]
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
# (condition, status) -> the NoSchedule taint it calls for
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): TAINT_NOT_READY,
    ("Ready", "Unknown"): TAINT_UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
NO_SCHEDULE_KEYS = frozenset([*CONDITION_TAINTS.values(), TAINT_UNSCHEDULABLE])
NO_EXECUTE_KEYS = frozenset([TAINT_NOT_READY, TAINT_UNREACHABLE])
STATE_NORMAL, STATE_PARTIAL, STATE_FULL = "Normal", "PartialDisruption", "FullDisruption"


# --- zones ----------------------------------------------------------------------------------------
def zone_key(node: Obj) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    region = labels.get("topology.kubernetes.io/region") or labels.get("failure-domain.beta.kubernetes.io/region", "")
    zone = labels.get("topology.kubernetes.io/zone") or labels.get("failure-domain.beta.kubernetes.io/zone", "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def zone_states(nodes: Iterable[Obj], unhealthy_threshold: float) -> tuple[dict[str, list[Obj]], dict[str, str]]:
    """The nodes of each zone, and its state: Normal, PartialDisruption or FullDisruption."""
    zones: dict[str, list[Obj]] = {}
    for node in nodes:
        zones.setdefault(zone_key(node), []).append(node)
    states = {}
    for zone, members in zones.items():
        not_ready = sum(1 for n in members if ready_status(n) != "True")
        if not_ready == len(members):
            states[zone] = STATE_FULL
        elif not_ready > 2 and not_ready / len(members) >= unhealthy_threshold:
            states[zone] = STATE_PARTIAL
        else:
            states[zone] = STATE_NORMAL
    return zones, states


class TokenBucket:
    """A rate limiter of burst 1: how long until the next NoExecute taint may be added in a zone."""

    def __init__(self, qps: float) -> None:
        self.qps = qps
        self.tokens = 1.0
        self.last = time.monotonic()

    def swap(self, qps: float) -> None:
        self._refill()
        self.qps = qps

    def _refill(self) -> None:
        now = time.monotonic()
        if self.qps > 0:
            self.tokens = min(1.0, self.tokens + (now - self.last) * self.qps)
        self.last = now

    def take(self) -> float:
        """0 if a token was taken; else the seconds to wait (inf when the rate is 0)."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.qps if self.qps > 0 else float("inf")


# --- taints ---------------------------------------------------------------------------------------
def wanted_taints(node: Obj) -> tuple[set[str], str | None]:
    """(the NoSchedule taint keys the node's conditions call for, the NoExecute one if it is not Ready)."""
    spec = node.get("spec") or {}
    conditions = (node.get("status") or {}).get("conditions") or []
    want_no_schedule = {
        CONDITION_TAINTS[(c.get("type", ""), c.get("status", ""))]
        for c in conditions
        if (c.get("type", ""), c.get("status", "")) in CONDITION_TAINTS
    }
    if spec.get("unschedulable"):
        want_no_schedule.add(TAINT_UNSCHEDULABLE)
    status = ready_status(node) if condition(node, "Ready") else "True"  # never posted: not evicted yet
    return want_no_schedule, {"False": TAINT_NOT_READY, "Unknown": TAINT_UNREACHABLE}.get(status)


def has_managed_no_execute(taints: Iterable[Obj]) -> bool:
    """Whether one of this controller's NoExecute taints is among `taints`."""
    return bool({t["key"] for t in taints if t.get("effect") == "NoExecute" and t.get("key") in NO_EXECUTE_KEYS})


def updated_taints(taints: list[Obj], want_no_schedule: set[str], want_no_execute: str | None, stamp: str) -> list[Obj]:
    """`taints` with this controller's taints made what is wanted; others' taints kept as they are."""
    want_no_schedule = set(want_no_schedule)
    new_taints = []
    for t in taints:
        if t.get("effect") == "NoSchedule" and t.get("key") in NO_SCHEDULE_KEYS:
            if t["key"] in want_no_schedule:
                new_taints.append(t)
                want_no_schedule.discard(t["key"])
        elif t.get("effect") == "NoExecute" and t.get("key") in NO_EXECUTE_KEYS:
            if t["key"] == want_no_execute:
                new_taints.append(t)
                want_no_execute = None
        else:
            new_taints.append(t)  # someone else's taint
    new_taints += [{"key": k, "effect": "NoSchedule"} for k in sorted(want_no_schedule)]
    if want_no_execute is not None:
        new_taints.append({"key": want_no_execute, "effect": "NoExecute", "timeAdded": stamp})
    return new_taints


def no_execute_taints(node: Obj) -> list[Obj]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]


def managed_taints(node: Obj) -> bool:
    """Whether the node carries any taint this controller manages."""
    return any(t.get("key") in NO_SCHEDULE_KEYS | NO_EXECUTE_KEYS for t in (node.get("spec") or {}).get("taints") or [])

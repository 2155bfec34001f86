"""Node heartbeats: when each node was last heard from, and the conditions of a node gone silent.

A node is alive while its kubelet renews its Lease in `kube-node-lease` or
refreshes its Ready condition's `lastHeartbeatTime`. When either changes,
the node lifecycle controller notes the local time (its own monotonic
clock, never the kubelet's, so skew does not matter). A node not heard from
for the grace period gets every kubelet condition set to Unknown (reason
NodeStatusUnknown, "Kubelet stopped posting node status.") —
`unknown_conditions` says how. Kubernetes' `tryUpdateNodeHealth`
(pkg/controller/nodelifecycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
NODE_LEASE_NAMESPACE = "kube-node-lease"
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(obj: Obj, type_: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def ready_status(node: Obj) -> str:
    """ "True", "False" or "Unknown" (a node that never posted a Ready condition is Unknown)."""
    cond = condition(node, "Ready")
    return str(cond.get("status") or "Unknown") if cond else "Unknown"


@dataclass
class Health:
    """What the controller last heard from a node, on its own monotonic clock."""

    probe: float  # when a heartbeat (Lease renewal or Ready lastHeartbeatTime change) was last seen
    heartbeat: str | None  # the Ready condition's lastHeartbeatTime then
    renew_time: str | None  # the Lease's renewTime then


class Heartbeats:
    """The `Health` of every node the controller has looked at, by node name."""

    def __init__(self) -> None:
        self.health: dict[str, Health] = {}

    def forget(self, name: str) -> None:
        self.health.pop(name, None)

    def lease_renewed(self, name: str, renew: str | None, now: float) -> bool:
        """Note a Lease renewal of a node already known; whether it was one (a sign of life)."""
        health = self.health.get(name)
        if health is not None and renew and renew != health.renew_time:
            health.probe, health.renew_time = now, renew
            return True
        return False

    def observe(self, name: str, heartbeat: str | None, renew: str | None, now: float) -> Health:
        """Note the node's current heartbeat and Lease renewal; its Health after that."""
        health = self.health.get(name)
        if health is None:  # first sight (or a restarted controller): a full grace period from now
            health = self.health[name] = Health(probe=now, heartbeat=heartbeat, renew_time=renew)
        if heartbeat != health.heartbeat or (renew and renew != health.renew_time):
            health.probe, health.heartbeat, health.renew_time = now, heartbeat, renew or health.renew_time
        return health


def unknown_conditions(node: Obj, stamp: str) -> list[Obj] | None:
    """The node's conditions with every kubelet condition Unknown; None if they all are already."""
    conditions = [dict(c) for c in (node.get("status") or {}).get("conditions") or []]
    changed = False
    for type_ in KUBELET_CONDITIONS:
        cond = next((c for c in conditions if c.get("type") == type_), None)
        if cond is None:
            conditions.append(
                {
                    "type": type_,
                    "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": (node["metadata"].get("creationTimestamp") or stamp),
                    "lastTransitionTime": stamp,
                }
            )
            changed = True
        elif cond.get("status") != "Unknown":
            cond.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=stamp,
            )
            changed = True
    return conditions if changed else None

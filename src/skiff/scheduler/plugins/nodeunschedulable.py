"""NodeUnschedulable: cordoned nodes (`spec.unschedulable`, `kubectl cordon`) take no new pods.

Unless the pod tolerates the `node.kubernetes.io/unschedulable:NoSchedule`
taint, as DaemonSet pods do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skiff.scheduler.framework import (
    NODE,
    ActionType,
    ClusterEvent,
    CycleState,
    FilterPlugin,
    Handle,
    Status,
    unresolvable,
)
from skiff.scheduler.nodeinfo import NO_SCHEDULE, NodeInfo
from skiff.scheduler.podinfo import PodInfo

NAME = "NodeUnschedulable"
ERR_REASON = "node(s) were unschedulable"
TAINT_KEY = "node.kubernetes.io/unschedulable"
_FAILED = unresolvable(ERR_REASON, plugin=NAME)


class NodeUnschedulable(FilterPlugin):
    name = NAME

    def __init__(self, handle: Handle | None = None) -> None:
        self.handle = handle

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> NodeUnschedulable:
        return cls(handle)

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.unschedulable:
            return None
        if any(t.tolerates(TAINT_KEY, "", NO_SCHEDULE) for t in pod.tolerations):
            return None
        return _FAILED

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        if self.handle is not None and not self.handle.cache.nodes_unschedulable:
            return nodes  # no node in the cache is cordoned (and `nodes` come from the cache)
        out = []
        for node in nodes:
            if not node.unschedulable:
                out.append(node)
            elif self.filter(state, pod, node) is None:
                out.append(node)
            else:
                failed[node.name] = _FAILED
        return out

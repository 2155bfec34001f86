"""NodeName: a pod that names its node (`spec.nodeName`) fits only there.

Pods with a node name are bound already and never reach the scheduler's queue;
the filter exists for what-if evaluations (preemption) and for parity with
Kubernetes' default plugin set.
"""

from __future__ import annotations

from collections.abc import Iterable

from skiff.scheduler.framework import NODE, ActionType, ClusterEvent, CycleState, FilterPlugin, Status, unresolvable
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo

NAME = "NodeName"
ERR_REASON = "node(s) didn't match the requested node name"
_FAILED = unresolvable(ERR_REASON, plugin=NAME)


class NodeName(FilterPlugin):
    name = NAME

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(NODE, ActionType.ADD),)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if pod.node_name and pod.node_name != node.name:
            return _FAILED
        return None

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        if not pod.node_name:
            return nodes
        return super().filter_nodes(state, pod, nodes, failed)

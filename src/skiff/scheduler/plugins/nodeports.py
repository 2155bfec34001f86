"""NodePorts: two pods cannot take the same host port (protocol, address) on one node."""

from __future__ import annotations

from collections.abc import Iterable

from skiff.scheduler.framework import (
    ASSIGNED_POD,
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    FilterPlugin,
    PreFilterPlugin,
    Status,
    unschedulable,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo

NAME = "NodePorts"
ERR_REASON = "node(s) didn't have free ports for the requested pod ports"
_FAILED = unschedulable(ERR_REASON, plugin=NAME)


class NodePorts(PreFilterPlugin, FilterPlugin):
    name = NAME

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(ASSIGNED_POD, ActionType.DELETE), ClusterEvent(NODE, ActionType.ADD))

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if pod.host_ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if pod.host_ports and node.port_conflicts(pod.host_ports):
            return _FAILED
        return None

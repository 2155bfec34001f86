"""DefaultPreemption: when a pod fits nowhere, evict lower-priority pods to make room.

Runs at PostFilter. For every node where the pod failed only for reasons
other pods leaving could fix (`UNSCHEDULABLE`, not `…_AND_UNRESOLVABLE`):
remove every pod of lower `spec.priority` in a what-if copy of the node; if
the pod then fits, put victims back one by one, highest priority first,
keeping out only those that must go. Among the candidate nodes, pick the one
whose most important victim is least important, then the smallest sum of
victim priorities, then the fewest victims (Kubernetes' first criteria).
The victims are deleted and the pod's `status.nominatedNodeName` set, in
background tasks; the pod goes back to the queue and is tried on that node
first when the victims are gone.

When no node can be helped, the message explains it the way Kubernetes does:
"preemption: 0/3 nodes are available: 3 No preemption victims found for
incoming pod."

Until it is bound, the nominated pod's requests count on that node for pods
of lower or equal priority (see `Algorithm._with_nominated`), so the room is
not given away. Not done (Kubernetes does): PodDisruptionBudgets, and
counting the nominated pod's (anti-)affinity terms against others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from skiff.scheduler.framework import (
    ASSIGNED_POD,
    NODE,
    ActionType,
    ClusterEvent,
    Code,
    CycleState,
    Diagnosis,
    FitError,
    Handle,
    PostFilterPlugin,
    PostFilterResult,
    Status,
    unresolvable,
    unschedulable,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)
NAME = "DefaultPreemption"
NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_HELPFUL = "Preemption is not helpful for scheduling"


class DefaultPreemption(PostFilterPlugin):
    name = NAME

    def __init__(self, handle: Handle, *, min_candidates_percentage: int = 10, min_candidates_absolute: int = 100):
        self.handle = handle
        self.min_candidates_percentage = min_candidates_percentage
        self.min_candidates_absolute = min_candidates_absolute

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> DefaultPreemption:
        pct = args.get("minCandidateNodesPercentage", 10)
        absolute = args.get("minCandidateNodesAbsolute", 100)
        if not isinstance(pct, int) or not 0 <= pct <= 100:
            raise ValueError("minCandidateNodesPercentage: not in valid range [0, 100]")
        if not isinstance(absolute, int) or absolute < 0:
            raise ValueError("minCandidateNodesAbsolute: not in valid range [0, inf)")
        if pct == 0 and absolute == 0:
            raise ValueError("minCandidateNodesPercentage and minCandidateNodesAbsolute cannot both be zero")
        return cls(handle, min_candidates_percentage=pct, min_candidates_absolute=absolute)

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(ASSIGNED_POD, ActionType.DELETE), ClusterEvent(NODE, ActionType.ADD))

    def post_filter(
        self, state: CycleState, pod: PodInfo, failed: Mapping[str, Status]
    ) -> tuple[PostFilterResult | None, Status | None]:
        if pod.spec.get("preemptionPolicy") == "Never":
            return None, unschedulable("preemption: not eligible due to preemptionPolicy=Never.", plugin=NAME)
        nominated = str((pod.pod.get("status") or {}).get("nominatedNodeName") or "")
        if nominated:
            node = self.handle.cache.get(nominated)
            if node is not None and any(p.terminating and p.priority < pod.priority for p in node.pods.values()):
                return None, unschedulable(
                    "preemption: not eligible due to a terminating pod on the nominated node.", plugin=NAME
                )
        nodes = self.handle.cache.node_list()
        statuses: dict[str, Status] = {}
        potential = []
        for node in nodes:
            status = failed.get(node.name)
            if status is not None and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                statuses[node.name] = unresolvable(NOT_HELPFUL)
            elif status is not None:
                potential.append(node)
        wanted = max(len(potential) * self.min_candidates_percentage // 100, self.min_candidates_absolute)
        candidates: list[tuple[NodeInfo, list[PodInfo]]] = []
        for node in potential:
            victims = self.select_victims(state, pod, node)
            if victims is None:
                statuses[node.name] = unschedulable(NO_VICTIMS)
                continue
            candidates.append((node, victims))
            if len(candidates) >= wanted:
                break
        if not candidates:
            message = str(FitError(pod, len(nodes), Diagnosis(node_statuses=statuses)))
            return PostFilterResult(nominated_node=None), unschedulable(f"preemption: {message}", plugin=NAME)
        node, victims = min(
            candidates,
            key=lambda c: (max(v.priority for v in c[1]) if c[1] else -(2**31), sum(v.priority for v in c[1]),
                           len(c[1])),
        )  # fmt: skip
        log.info("preempting %d pod(s) on %s for %s", len(victims), node.name, pod.key)
        self.handle.spawn(self._evict(pod, node.name, victims), name=f"preempt/{pod.key}")
        return PostFilterResult(nominated_node=node.name), None

    async def _evict(self, pod: PodInfo, node_name: str, victims: list[PodInfo]) -> None:
        for victim in victims:
            await self.handle.delete_pod(victim, reason=f"Preempted by pod {pod.uid} on node {node_name}")
        await self.handle.set_nominated_node(pod, node_name)

    def select_victims(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> list[PodInfo] | None:
        """The fewest lower-priority pods to remove from `node` so that `pod` fits (None: impossible)."""
        lower = [p for p in node.pods.values() if p.priority < pod.priority]
        if not lower:
            return None
        what_if = node.clone()
        trial = state.clone()
        for victim in lower:
            what_if.remove_pod(victim)
            self.handle.run_remove_pod(trial, pod, victim, what_if)
        if self.handle.run_filters(trial, pod, what_if) is not None:
            return None
        victims = []
        for candidate in sorted(lower, key=lambda p: -p.priority):  # try to keep the most important first
            what_if.add_pod(candidate)
            self.handle.run_add_pod(trial, pod, candidate, what_if)
            if self.handle.run_filters(trial, pod, what_if) is not None:
                what_if.remove_pod(candidate)
                self.handle.run_remove_pod(trial, pod, candidate, what_if)
                victims.append(candidate)
        return victims

"""NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used evenly.

A node at 90% cpu and 10% memory strands its memory; this score is
(1 - standard deviation of the used fractions) x 100, so a pod goes where it
evens things out. It counts actual requests (not the non-zero defaults), and
is skipped for pods that request nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, cast

from skiff.scheduler.framework import (
    ASSIGNED_POD,
    MAX_NODE_SCORE,
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    Handle,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from skiff.scheduler.nodeinfo import NodeInfo, keep, memo_key, recall, remember
from skiff.scheduler.plugins.noderesources import DEFAULT_RESOURCES, node_amounts, parse_resources, pod_amount
from skiff.scheduler.podinfo import CPU, MEMORY, PodInfo

NAME = "NodeResourcesBalancedAllocation"


def balanced_score(requested: list[int], allocatable: list[int]) -> int:
    fractions = []
    for req, alloc in zip(requested, allocatable, strict=True):
        if alloc == 0:
            continue
        fractions.append(min(req / alloc, 1.0))
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)


class BalancedAllocation(PreScorePlugin, ScorePlugin):
    name = NAME

    def __init__(self, resources: Iterable[tuple[str, int]] = DEFAULT_RESOURCES) -> None:
        self.names = [name for name, _ in resources]
        self._fast = self.names == [CPU, MEMORY]

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> BalancedAllocation:
        return cls(parse_resources(args.get("resources"), "resources"))

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (
            ClusterEvent(ASSIGNED_POD, ActionType.DELETE | ActionType.UPDATE_POD_SCALE_DOWN),
            ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE),
        )

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if all(pod_amount(pod, name, non_zero=False) == 0 for name in self.names):
            return SKIP  # a best-effort pod changes no balance
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        requested, allocatable = [], []
        for name in self.names:
            alloc, req = node_amounts(node, name, pod_amount(pod, name, non_zero=False), non_zero=False)
            allocatable.append(alloc)
            requested.append(req)
        return balanced_score(requested, allocatable)

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        if not self._fast:
            key = memo_key(self, *(pod_amount(pod, name, non_zero=False) for name in self.names))
            out = []
            for node in nodes:
                score = node.memo.get(key)
                if score is None:
                    score = self.score(state, pod, node)
                    remember(node, key, score)
                out.append(score)
            return out
        pod_cpu, pod_mem = pod.requests.milli_cpu, pod.requests.memory
        key = memo_key(self, pod_cpu, pod_mem)
        span = state.span
        out, todo = recall(span, key, nodes)
        if not todo:
            return cast(list[int], out)  # every node remembered its score
        for i in todo:  # few: the nodes changed since
            node = nodes[i]
            cap_cpu, cap_mem = node.alloc_milli_cpu, node.alloc_memory
            if cap_cpu and cap_mem:
                f_cpu = min((node.req_milli_cpu + pod_cpu) / cap_cpu, 1.0)
                f_mem = min((node.req_memory + pod_mem) / cap_mem, 1.0)
                score = int((1 - abs((f_cpu - f_mem) / 2)) * MAX_NODE_SCORE)
            else:
                score = MAX_NODE_SCORE  # one fraction or none: no deviation
            keep(span, key, node, score)
            out[i] = score
        return cast(list[int], out)

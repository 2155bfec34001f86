"""TaintToleration: a pod lands only where it tolerates every NoSchedule/NoExecute taint.

This is also how Kubernetes keeps pods off broken nodes: the node lifecycle
controller taints a NotReady node `node.kubernetes.io/not-ready` and a silent
one `node.kubernetes.io/unreachable`, and no pod tolerates those for
scheduling unless it says so. The score prefers nodes with fewer untolerated
PreferNoSchedule taints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skiff.scheduler.framework import (
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    FilterPlugin,
    Handle,
    PreScorePlugin,
    ScorePlugin,
    Status,
    default_normalize,
    unresolvable,
)
from skiff.scheduler.nodeinfo import NodeInfo, Taint
from skiff.scheduler.podinfo import PodInfo, Toleration

NAME = "TaintToleration"
_SCORE_STATE = "TaintToleration/prescore"


def untolerated_taint(taints: tuple[Taint, ...], tolerations: tuple[Toleration, ...]) -> Taint | None:
    """The first taint no toleration tolerates (Kubernetes `FindMatchingUntoleratedTaint`)."""
    for taint in taints:
        key, value, effect = taint
        if not any(t.tolerates(key, value, effect) for t in tolerations):
            return taint
    return None


def reason_for(taint: Taint) -> str:
    return f"node(s) had untolerated taint {{{taint[0]}: {taint[1]}}}"


class TaintToleration(FilterPlugin, PreScorePlugin, ScorePlugin):
    name = NAME
    normalizes = True

    def __init__(self, handle: Handle | None = None) -> None:
        self.handle = handle

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> TaintToleration:
        return cls(handle)

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.hard_taints:
            return None
        taint = untolerated_taint(node.hard_taints, pod.tolerations)
        if taint is None:
            return None
        return unresolvable(reason_for(taint), plugin=NAME)

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        if self.handle is not None and not self.handle.cache.nodes_with_hard_taints:
            return nodes  # no node in the cache has such taints (and `nodes` come from the cache)
        out = []
        for node in nodes:
            if not node.hard_taints:
                out.append(node)
                continue
            status = self.filter(state, pod, node)
            if status is None:
                out.append(node)
            else:
                failed[node.name] = status
        return out

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if self.handle is not None and self.handle.cache.nodes_with_prefer_taints == 0:
            return SKIP  # every node would score the same
        state.data[_SCORE_STATE] = tuple(t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule"))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if not node.prefer_taints:
            return 0
        tolerations = state.data.get(_SCORE_STATE)
        if tolerations is None:
            tolerations = tuple(t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule"))
        return sum(1 for key, value, effect in node.prefer_taints
                   if not any(t.tolerates(key, value, effect) for t in tolerations))  # fmt: skip

    def normalize_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        default_normalize(scores, reverse=True)

"""PodTopologySpread: keep matching pods evenly spread over zones, nodes, or any node label.

For each `topologySpreadConstraints` entry: count the pods matching its
selector (same namespace, not terminating) in every domain (value of
`topologyKey`) among the nodes that count — those with every constraint's
key and, by default, matching the pod's node affinity (`nodeAffinityPolicy:
Honor`; `nodeTaintsPolicy: Honor` also drops nodes with untolerated taints).
Placing the pod in a domain must keep `count + self - global minimum ≤
maxSkew` (fewer domains than `minDomains` make the minimum 0).

`whenUnsatisfiable: DoNotSchedule` constraints filter; `ScheduleAnyway` ones
only score: fewer matching pods in the node's domains scores higher (each
constraint weighted by log(domains + 2), as Kubernetes). Kubernetes' implicit
cluster-wide default constraints (for pods of Services and ReplicaSets) are
not applied: only what the pod (or `defaultConstraints` in the plugin
arguments, with `defaultingType: List`) says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.api import errors
from skiff.api.selectors import LabelSelector, label_selector_from_dict, new_requirement
from skiff.scheduler.framework import (
    ASSIGNED_POD,
    MAX_NODE_SCORE,
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    FilterPlugin,
    Handle,
    PreFilterExtensions,
    PreFilterPlugin,
    PreScorePlugin,
    ScorePlugin,
    Status,
    error,
    unresolvable,
    unschedulable,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.plugins.nodeaffinity import RequiredNodeAffinity
from skiff.scheduler.plugins.tainttoleration import untolerated_taint
from skiff.scheduler.podinfo import PodInfo

NAME = "PodTopologySpread"
ERR_CONSTRAINTS = "node(s) didn't match pod topology spread constraints"
ERR_LABEL = ERR_CONSTRAINTS + " (missing required label)"
HOSTNAME = "kubernetes.io/hostname"
DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
_STATE = "PodTopologySpread/prefilter"
_SCORE_STATE = "PodTopologySpread/prescore"


@dataclass(frozen=True)
class Constraint:
    max_skew: int
    topology_key: str
    selector: LabelSelector
    min_domains: int = 1
    honor_affinity: bool = True
    honor_taints: bool = False


def constraints_of(pod: PodInfo, raw: Iterable[Mapping[str, Any]], action: str) -> list[Constraint]:
    """The pod's constraints with `whenUnsatisfiable == action` (matchLabelKeys folded into the selector)."""
    out = []
    for c in raw:
        if c.get("whenUnsatisfiable", DO_NOT_SCHEDULE) != action:
            continue
        selector = label_selector_from_dict(c.get("labelSelector"))
        keys = [k for k in c.get("matchLabelKeys") or [] if k in pod.labels]
        if keys and not selector.nothing:
            selector = LabelSelector(
                [*selector.requirements, *(new_requirement(k, "in", [pod.labels[k]]) for k in keys)]
            )
        out.append(
            Constraint(
                max_skew=int(c.get("maxSkew") or 1),
                topology_key=str(c.get("topologyKey") or ""),
                selector=selector,
                min_domains=int(c.get("minDomains") or 1),
                honor_affinity=c.get("nodeAffinityPolicy", "Honor") == "Honor",
                honor_taints=c.get("nodeTaintsPolicy", "Ignore") == "Honor",
            )
        )
    return out


def count_matching(node: NodeInfo, selector: LabelSelector, namespace: str) -> int:
    n = 0
    for p in node.pods.values():
        if p.namespace == namespace and not p.terminating and selector.matches(p.labels):
            n += 1
    return n


@dataclass
class _PreFilterState:
    constraints: list[Constraint]
    affinity: RequiredNodeAffinity
    counts: list[dict[str, int]] = field(default_factory=list)  # per constraint: domain value -> matching pods

    def clone(self) -> _PreFilterState:
        return _PreFilterState(self.constraints, self.affinity, [dict(c) for c in self.counts])

    def min_match(self, i: int) -> int:
        counts = self.counts[i]
        if len(counts) < self.constraints[i].min_domains:
            return 0
        return min(counts.values(), default=0)


class PodTopologySpread(PreFilterPlugin, PreFilterExtensions, FilterPlugin, PreScorePlugin, ScorePlugin):
    name = NAME
    normalizes = True

    def __init__(self, handle: Handle, default_constraints: list[Mapping[str, Any]] | None = None) -> None:
        self.handle = handle
        self.default_constraints = default_constraints or []

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> PodTopologySpread:
        defaulting = args.get("defaultingType", "System")
        if defaulting not in ("System", "List"):
            raise ValueError(f'defaultingType: Unsupported value: "{defaulting}": supported values: "List", "System"')
        defaults = args.get("defaultConstraints") or []
        if defaulting == "System" and defaults:
            raise ValueError("defaultConstraints: Invalid value: when .defaultingType is System, must be empty")
        for c in defaults:
            if c.get("labelSelector") is not None:
                raise ValueError("defaultConstraints[].labelSelector: Forbidden: constraint must not define a selector")
        return cls(handle, list(defaults))

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (
            ClusterEvent(ASSIGNED_POD, ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_POD_LABEL),
            ClusterEvent(
                NODE,
                ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_NODE_LABEL | ActionType.UPDATE_NODE_TAINT,
            ),
        )

    def _raw_constraints(self, pod: PodInfo) -> list[Mapping[str, Any]]:
        own = pod.spec.get("topologySpreadConstraints") or []
        if own:
            return list(own)
        if not self.default_constraints:
            return []
        # List defaulting: the defaults, selecting the pod's own labels (Kubernetes uses its owners' selectors)
        selector = {"matchLabels": dict(pod.labels)} if pod.labels else None
        return [{**c, "labelSelector": selector} for c in self.default_constraints if selector is not None]

    # --- filter -----------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        try:
            constraints = constraints_of(pod, self._raw_constraints(pod), DO_NOT_SCHEDULE)
        except (errors.StatusError, ValueError, TypeError) as exc:
            return unresolvable(f"invalid topology spread constraints: {exc}", plugin=NAME)
        if not constraints:
            return SKIP
        affinity = RequiredNodeAffinity(pod)
        s = _PreFilterState(constraints, affinity, [{} for _ in constraints])
        for node in self.handle.cache.node_list():
            self._count_node(s, pod, node, affinity, 1)
        state.data[_STATE] = s
        return None

    def _count_node(
        self, s: _PreFilterState, pod: PodInfo, node: NodeInfo, affinity: RequiredNodeAffinity, sign: int
    ) -> None:
        labels = node.labels
        if any(c.topology_key not in labels for c in s.constraints):
            return
        for i, c in enumerate(s.constraints):
            if not _included(c, pod, node, affinity):
                continue
            value = labels[c.topology_key]
            counts = s.counts[i]
            counts[value] = counts.get(value, 0) + sign * count_matching(node, c.selector, pod.namespace)

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        self._update(state, pod, added, node, 1)

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        self._update(state, pod, removed, node, -1)

    def _update(self, state: CycleState, pod: PodInfo, other: PodInfo, node: NodeInfo, sign: int) -> None:
        s = state.data.get(_STATE)
        if not isinstance(s, _PreFilterState) or other.namespace != pod.namespace or other.terminating:
            return
        affinity = s.affinity
        if any(c.topology_key not in node.labels for c in s.constraints):
            return
        for i, c in enumerate(s.constraints):
            if _included(c, pod, node, affinity) and c.selector.matches(other.labels):
                value = node.labels[c.topology_key]
                s.counts[i][value] = s.counts[i].get(value, 0) + sign

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s = state.data.get(_STATE)
        if not isinstance(s, _PreFilterState):
            return error("PodTopologySpread: no PreFilter state", plugin=NAME)
        for i, c in enumerate(s.constraints):
            value = node.labels.get(c.topology_key)
            if value is None:
                return _LABEL_FAILED
            self_match = 1 if c.selector.matches(pod.labels) else 0
            skew = s.counts[i].get(value, 0) + self_match - s.min_match(i)
            if skew > c.max_skew:
                return _FAILED
        return None

    # --- score ------------------------------------------------------------------------------
    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        try:
            constraints = constraints_of(pod, self._raw_constraints(pod), SCHEDULE_ANYWAY)
        except (errors.StatusError, ValueError, TypeError):
            return SKIP
        if not constraints or not nodes:
            return SKIP
        affinity = RequiredNodeAffinity(pod)
        ignored: set[str] = set()
        counts: list[dict[str, int] | None] = [None if c.topology_key == HOSTNAME else {} for c in constraints]
        sizes = [0] * len(constraints)
        for node in nodes:
            if any(c.topology_key not in node.labels for c in constraints):
                ignored.add(node.name)
                continue
            for i, c in enumerate(constraints):
                domain = counts[i]
                if domain is not None:
                    value = node.labels[c.topology_key]
                    if value not in domain:
                        domain[value] = 0
                        sizes[i] += 1
        for i, c in enumerate(constraints):
            if c.topology_key == HOSTNAME:
                sizes[i] = len(nodes) - len(ignored)
        weights = [math.log(size + 2) for size in sizes]
        for node in self.handle.cache.node_list():
            if any(c.topology_key not in node.labels for c in constraints):
                continue
            for i, c in enumerate(constraints):
                domain = counts[i]
                if domain is None or not _included(c, pod, node, affinity):
                    continue
                value = node.labels[c.topology_key]
                if value in domain:
                    domain[value] += count_matching(node, c.selector, pod.namespace)
        state.data[_SCORE_STATE] = (constraints, counts, weights, ignored)
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        prepared = state.data.get(_SCORE_STATE)
        if prepared is None:
            return 0
        constraints, counts, weights, ignored = prepared
        if node.name in ignored:
            return 0
        total = 0.0
        for i, c in enumerate(constraints):
            value = node.labels.get(c.topology_key)
            if value is None:
                continue
            domain = counts[i]
            n = count_matching(node, c.selector, pod.namespace) if domain is None else domain.get(value, 0)
            total += n * weights[i] + (c.max_skew - 1)
        return round(total)

    def normalize_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        prepared = state.data.get(_SCORE_STATE)
        if prepared is None:
            return
        ignored = prepared[3]
        valid = [s for node, s in zip(nodes, scores, strict=True) if node.name not in ignored]
        low, high = min(valid, default=0), max(valid, default=0)
        for i, node in enumerate(nodes):
            if node.name in ignored:
                scores[i] = 0
            elif high == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (high + low - scores[i]) // high


def _included(c: Constraint, pod: PodInfo, node: NodeInfo, affinity: RequiredNodeAffinity) -> bool:
    if c.honor_affinity and not affinity.matches(node):
        return False
    return not (c.honor_taints and untolerated_taint(node.hard_taints, pod.tolerations) is not None)


_FAILED = unschedulable(ERR_CONSTRAINTS, plugin=NAME)
_LABEL_FAILED = unresolvable(ERR_LABEL, plugin=NAME)

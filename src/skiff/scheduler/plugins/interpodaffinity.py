"""InterPodAffinity: place pods near (affinity) or away from (anti-affinity) other pods.

A term names pods (label selector, namespaces) and a topology key (a node
label such as `kubernetes.io/hostname` or `topology.kubernetes.io/zone`); two
nodes are "together" when they share that label's value. Required terms:

- the pod's affinity: every term must be matched by some pod in the node's
  domain (except for the first pod of a group that matches its own terms);
- the pod's anti-affinity: no pod matching a term may be in the node's domain;
- other pods' anti-affinity: the node must not be in the domain of a pod whose
  anti-affinity term matches the new pod (symmetry).

PreFilter counts matches per (topology key, value) once per pod — over every
pod for the new pod's own terms, and only over pods with anti-affinity for
the others' — so the per-node filter is a few dictionary lookups. PreFilter
answers SKIP when neither the pod nor any placed pod has such terms, which
keeps ordinary pods off this path entirely. Preferred terms (both the new
pod's and the placed pods') are scored the same way and min-max normalized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
from skiff.scheduler.podinfo import AffinityTerm, PodInfo, WeightedAffinityTerm

NAME = "InterPodAffinity"
ERR_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
DEFAULT_HARD_POD_AFFINITY_WEIGHT = 1
_STATE = "InterPodAffinity/prefilter"
_SCORE_STATE = "InterPodAffinity/prescore"

Pair = tuple[str, str]
NsLabels = Mapping[str, Mapping[str, str]]


@dataclass
class _PreFilterState:
    pod: PodInfo
    ns_labels: NsLabels
    existing_anti: dict[Pair, int] = field(default_factory=dict)  # placed pods' anti-affinity vs this pod
    affinity: dict[Pair, int] = field(default_factory=dict)  # placed pods matching all of this pod's terms
    anti: dict[Pair, int] = field(default_factory=dict)  # placed pods matching this pod's anti-affinity terms

    def clone(self) -> _PreFilterState:
        return _PreFilterState(self.pod, self.ns_labels, dict(self.existing_anti), dict(self.affinity), dict(self.anti))


def _bump(counts: dict[Pair, int], node: NodeInfo, key: str, delta: int) -> None:
    value = node.labels.get(key)
    if value is None:
        return
    pair = (key, value)
    n = counts.get(pair, 0) + delta
    if n:
        counts[pair] = n
    else:
        counts.pop(pair, None)


def _matches_all(terms: tuple[AffinityTerm, ...], pod: PodInfo, ns_labels: NsLabels) -> bool:
    return bool(terms) and all(t.matches(pod, ns_labels) for t in terms)


class InterPodAffinity(PreFilterPlugin, PreFilterExtensions, FilterPlugin, PreScorePlugin, ScorePlugin):
    name = NAME
    normalizes = True

    def __init__(self, handle: Handle, *, hard_pod_affinity_weight: int = DEFAULT_HARD_POD_AFFINITY_WEIGHT,
                 ignore_preferred_of_existing: bool = False) -> None:  # fmt: skip
        self.handle = handle
        self.hard_weight = hard_pod_affinity_weight
        self.ignore_existing_preferred = ignore_preferred_of_existing

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> InterPodAffinity:
        weight = args.get("hardPodAffinityWeight", DEFAULT_HARD_POD_AFFINITY_WEIGHT)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ValueError(f"hardPodAffinityWeight: Invalid value: {weight!r}: not in valid range [0, 100]")
        ignore = bool(args.get("ignorePreferredTermsOfExistingPods", False))
        return cls(handle, hard_pod_affinity_weight=weight, ignore_preferred_of_existing=ignore)

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (
            ClusterEvent(ASSIGNED_POD, ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_POD_LABEL),
            ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL),
        )

    # --- filter -----------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        if pod.parse_error:
            return unresolvable(pod.parse_error, plugin=NAME)
        cache = self.handle.cache
        if not pod.required_affinity and not pod.required_anti_affinity and not cache.nodes_with_required_anti_affinity:
            return SKIP
        ns_labels = self.handle.namespace_labels()
        s = _PreFilterState(pod, ns_labels)
        for node in cache.infos_with_required_anti_affinity():
            for existing in node.pods.values():
                for term in existing.required_anti_affinity:
                    if term.matches(pod, ns_labels):
                        _bump(s.existing_anti, node, term.topology_key, 1)
        if pod.required_affinity or pod.required_anti_affinity:
            for node in cache.node_list():
                for existing in node.pods.values():
                    self._count_incoming(s, existing, node, 1)
        state.data[_STATE] = s
        return None

    def _count_incoming(self, s: _PreFilterState, existing: PodInfo, node: NodeInfo, delta: int) -> None:
        pod, ns_labels = s.pod, s.ns_labels
        if _matches_all(pod.required_affinity, existing, ns_labels):
            for term in pod.required_affinity:
                _bump(s.affinity, node, term.topology_key, delta)
        for term in pod.required_anti_affinity:
            if term.matches(existing, ns_labels):
                _bump(s.anti, node, term.topology_key, delta)

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        self._update(state, added, node, 1)

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        self._update(state, removed, node, -1)

    def _update(self, state: CycleState, other: PodInfo, node: NodeInfo, delta: int) -> None:
        s = state.data.get(_STATE)
        if not isinstance(s, _PreFilterState):
            return
        for term in other.required_anti_affinity:
            if term.matches(s.pod, s.ns_labels):
                _bump(s.existing_anti, node, term.topology_key, delta)
        self._count_incoming(s, other, node, delta)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s = state.data.get(_STATE)
        if not isinstance(s, _PreFilterState):
            return error("InterPodAffinity: no PreFilter state", plugin=NAME)
        if not self._satisfies_affinity(s, node):
            return _AFFINITY_FAILED
        if s.anti:
            for term in pod.required_anti_affinity:
                value = node.labels.get(term.topology_key)
                if value is not None and s.anti.get((term.topology_key, value), 0) > 0:
                    return _ANTI_FAILED
        if s.existing_anti:
            for pair in node.labels.items():
                if s.existing_anti.get(pair, 0) > 0:
                    return _EXISTING_FAILED
        return None

    def _satisfies_affinity(self, s: _PreFilterState, node: NodeInfo) -> bool:
        pods_exist = True
        for term in s.pod.required_affinity:
            value = node.labels.get(term.topology_key)
            if value is None:
                return False  # every topology key must be on the node
            if s.affinity.get((term.topology_key, value), 0) <= 0:
                pods_exist = False
        if pods_exist:
            return True
        # the first pod of a group that has affinity to itself may go anywhere with the topology
        return not s.affinity and _matches_all(s.pod.required_affinity, s.pod, s.ns_labels)

    # --- score ------------------------------------------------------------------------------
    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if not nodes:
            return SKIP
        has_constraints = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        if self.ignore_existing_preferred and not has_constraints:
            return SKIP
        cache = self.handle.cache
        if not has_constraints and not cache.nodes_with_affinity:
            return SKIP
        ns_labels = self.handle.namespace_labels()
        topology: dict[str, dict[str, int]] = {}
        sources = cache.node_list() if has_constraints else list(cache.infos_with_affinity())
        for node in sources:
            if not node.labels:
                continue
            pods = node.pods.values()
            for existing in pods:
                if not has_constraints and not existing.has_affinity:
                    continue
                self._score_existing(topology, pod, existing, node, ns_labels)
        if not topology:
            return SKIP
        state.data[_SCORE_STATE] = topology
        return None

    def _score_existing(
        self, topology: dict[str, dict[str, int]], pod: PodInfo, existing: PodInfo, node: NodeInfo, ns: NsLabels
    ) -> None:
        def add(terms: Iterable[WeightedAffinityTerm], target: PodInfo, sign: int) -> None:
            for wt in terms:
                if wt.term.matches(target, ns):
                    _add_score(topology, node, wt.term.topology_key, wt.weight * sign)

        add(pod.preferred_affinity, existing, 1)
        add(pod.preferred_anti_affinity, existing, -1)
        if self.hard_weight > 0:
            for term in existing.required_affinity:
                if term.matches(pod, ns):
                    _add_score(topology, node, term.topology_key, self.hard_weight)
        add(existing.preferred_affinity, pod, 1)
        add(existing.preferred_anti_affinity, pod, -1)

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        topology = state.data.get(_SCORE_STATE) or {}
        total = 0
        for key, values in topology.items():
            value = node.labels.get(key)
            if value is not None:
                total += values.get(value, 0)
        return total

    def normalize_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        if not state.data.get(_SCORE_STATE) or not scores:
            return
        low, high = min(scores), max(scores)
        spread = high - low
        for i, s in enumerate(scores):
            scores[i] = int(MAX_NODE_SCORE * ((s - low) / spread)) if spread > 0 else 0


def _add_score(topology: dict[str, dict[str, int]], node: NodeInfo, key: str, delta: int) -> None:
    value = node.labels.get(key)
    if value is None:
        return
    values = topology.setdefault(key, {})
    values[value] = values.get(value, 0) + delta


_AFFINITY_FAILED = unresolvable(ERR_AFFINITY, plugin=NAME)
_ANTI_FAILED = unschedulable(ERR_ANTI_AFFINITY, plugin=NAME)
_EXISTING_FAILED = unschedulable(ERR_EXISTING_ANTI_AFFINITY, plugin=NAME)

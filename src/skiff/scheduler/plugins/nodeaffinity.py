"""NodeAffinity: `spec.nodeSelector` and `affinity.nodeAffinity`, required and preferred.

Required terms are ORed, the expressions inside a term ANDed; operators In,
NotIn, Exists, DoesNotExist, Gt, Lt on labels and In/NotIn on the node's
`metadata.name` (matchFields). A term that cannot be parsed matches nothing,
as in Kubernetes. When every required term pins node names, PreFilter narrows
the candidates to those nodes, so a pod for one node does not look at 5,000.
Preferred terms add their weight to the nodes they match (normalized to 0-100).

The compiled matchers (`RequiredNodeAffinity`, `NodeSelectorTerm`) are also
what PodTopologySpread uses to decide which nodes count for spreading.
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
    PreFilterPlugin,
    PreScorePlugin,
    ScorePlugin,
    Status,
    default_normalize,
    unresolvable,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo

NAME = "NodeAffinity"
ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_CONFLICT = "pod affinity terms conflict"
_STATE = "NodeAffinity/prefilter"
_SCORE_STATE = "NodeAffinity/prescore"
OBJECT_NAME_FIELD = "metadata.name"


class _Requirement:
    __slots__ = ("key", "number", "op", "values")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.key = str(raw.get("key") or "")
        self.op = str(raw.get("operator") or "")
        self.values = frozenset(str(v) for v in raw.get("values") or [])
        self.number = 0
        if self.op in ("In", "NotIn") and not self.values:
            raise ValueError(f"{self.op} needs values")
        if self.op in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"{self.op} takes no values")
        if self.op in ("Gt", "Lt"):
            if len(self.values) != 1:
                raise ValueError(f"{self.op} needs exactly one value")
            self.number = int(next(iter(self.values)))
        elif self.op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"{self.op!r} is not a valid node selector operator")

    def matches(self, value: str | None) -> bool:
        op = self.op
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        if value is None:
            return False
        try:
            have = int(value)
        except ValueError:
            return False
        return have > self.number if op == "Gt" else have < self.number


class NodeSelectorTerm:
    """One term: label expressions and `metadata.name` field expressions, all of which must hold."""

    __slots__ = ("fields", "labels", "valid")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.valid = True
        self.labels: tuple[_Requirement, ...] = ()
        self.fields: tuple[_Requirement, ...] = ()
        try:
            self.labels = tuple(_Requirement(r) for r in raw.get("matchExpressions") or [])
            fields = tuple(_Requirement(r) for r in raw.get("matchFields") or [])
            if any(f.key != OBJECT_NAME_FIELD or f.op not in ("In", "NotIn") for f in fields):
                raise ValueError("matchFields supports only metadata.name with In/NotIn")
            self.fields = fields
        except (ValueError, TypeError, AttributeError):
            self.valid = False
        if not self.labels and not self.fields:
            self.valid = False  # an empty term matches no objects

    def matches(self, node: NodeInfo) -> bool:
        if not self.valid:
            return False
        labels = node.labels
        for r in self.labels:
            if not r.matches(labels.get(r.key)):
                return False
        for r in self.fields:
            if not r.matches(node.name):
                return False
        return True

    def pinned_names(self) -> set[str] | None:
        """The node names this term allows if it pins them (`metadata.name In [...]`), else None."""
        names: set[str] | None = None
        for r in self.fields:
            if r.op == "In":
                names = set(r.values) if names is None else names & r.values
        return names


class RequiredNodeAffinity:
    """A pod's hard node constraints: nodeSelector labels AND (any required term)."""

    __slots__ = ("selector", "terms")

    def __init__(self, pod: PodInfo, added: Mapping[str, Any] | None = None) -> None:
        self.selector: dict[str, str] = {str(k): str(v) for k, v in (pod.spec.get("nodeSelector") or {}).items()}
        affinity = (pod.spec.get("affinity") or {}).get("nodeAffinity") or {}
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        self.terms: list[tuple[NodeSelectorTerm, ...]] = []  # each group ORed inside, groups ANDed
        if required is not None:
            self.terms.append(tuple(NodeSelectorTerm(t) for t in required.get("nodeSelectorTerms") or []))
        added_required = (added or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        if added_required is not None:
            self.terms.append(tuple(NodeSelectorTerm(t) for t in added_required.get("nodeSelectorTerms") or []))

    @property
    def empty(self) -> bool:
        return not self.selector and not self.terms

    def matches(self, node: NodeInfo) -> bool:
        labels = node.labels
        for k, v in self.selector.items():
            if labels.get(k) != v:
                return False
        return all(any(t.matches(node) for t in group) for group in self.terms)


def preferred_terms(pod: PodInfo, added: Mapping[str, Any] | None = None) -> list[tuple[NodeSelectorTerm, int]]:
    out = []
    sources: list[Iterable[Any]] = [
        ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution"
        )
        or [],
        (added or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or [],
    ]
    for source in sources:
        for p in source:
            weight = p.get("weight") or 0
            if isinstance(weight, int) and weight:
                out.append((NodeSelectorTerm(p.get("preference") or {}), weight))
    return out


class NodeAffinity(PreFilterPlugin, FilterPlugin, PreScorePlugin, ScorePlugin):
    name = NAME
    normalizes = True

    def __init__(self, added_affinity: Mapping[str, Any] | None = None) -> None:
        self.added_affinity = added_affinity

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> NodeAffinity:
        added = args.get("addedAffinity")
        if added is not None and not isinstance(added, Mapping):
            raise ValueError("NodeAffinity args.addedAffinity must be an object")
        return cls(added)

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL),)

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        required = RequiredNodeAffinity(pod, self.added_affinity)
        if required.empty:
            return SKIP
        state.data[_STATE] = required
        if len(required.terms) >= 1:
            names: set[str] | None = None
            for term in required.terms[0]:
                pinned = term.pinned_names()
                if pinned is None:
                    return None  # this term allows any node
                names = pinned if names is None else names | pinned
            if names is not None:
                if not names:
                    return unresolvable(ERR_REASON_CONFLICT, plugin=NAME)
                state.restrict_nodes(names, NAME)
        return None

    def _required(self, state: CycleState, pod: PodInfo) -> RequiredNodeAffinity:
        required = state.data.get(_STATE)
        if not isinstance(required, RequiredNodeAffinity):
            required = RequiredNodeAffinity(pod, self.added_affinity)
        return required

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if self._required(state, pod).matches(node):
            return None
        return _FAILED

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        matches = self._required(state, pod).matches
        out = []
        for node in nodes:
            if matches(node):
                out.append(node)
            else:
                failed[node.name] = _FAILED
        return out

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        terms = preferred_terms(pod, self.added_affinity)
        if not terms:
            return SKIP
        state.data[_SCORE_STATE] = terms
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        terms = state.data.get(_SCORE_STATE)
        if terms is None:
            terms = preferred_terms(pod, self.added_affinity)
        return sum(weight for term, weight in terms if term.matches(node))

    def normalize_scores(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], scores: list[int]) -> None:
        default_normalize(scores)


_FAILED = unresolvable(ERR_REASON_POD, plugin=NAME)

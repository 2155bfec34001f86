"""NodeResourcesFit: does the pod's request fit in what the node has left, and how full would it be?

Filter: the node's allocatable minus what its pods (bound and assumed) request
must cover the pod's request, for cpu, memory, ephemeral-storage and every
extended resource (`nvidia.com/gpu`…), and the node must have room for one
more pod. Each shortfall is one reason ("Insufficient cpu"), which is what
the FailedScheduling message counts.

Score, by the configured strategy over weighted resources:

- `LeastAllocated` (the default): the emptier the node, the better — pods spread;
- `MostAllocated`: the fuller the better — bin packing, leaving whole nodes free;
- `RequestedToCapacityRatio`: a piecewise-linear function of utilization.

Scoring counts a container without requests as 100m cpu / 200Mi memory
(Kubernetes' non-zero defaults), so request-less pods still spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from skiff.scheduler.framework import (
    ASSIGNED_POD,
    MAX_NODE_SCORE,
    NODE,
    ActionType,
    ClusterEvent,
    CycleState,
    FilterPlugin,
    Handle,
    PreFilterPlugin,
    ScorePlugin,
    Status,
    unresolvable,
    unschedulable,
)
from skiff.scheduler.nodeinfo import NodeInfo, keep, memo_key, recall, remember
from skiff.scheduler.podinfo import CPU, EPHEMERAL_STORAGE, MEMORY, PodInfo

NAME = "NodeResourcesFit"
LEAST_ALLOCATED, MOST_ALLOCATED, REQUESTED_TO_CAPACITY_RATIO = (
    "LeastAllocated",
    "MostAllocated",
    "RequestedToCapacityRatio",
)
STRATEGIES = (LEAST_ALLOCATED, MOST_ALLOCATED, REQUESTED_TO_CAPACITY_RATIO)
DEFAULT_RESOURCES: tuple[tuple[str, int], ...] = ((CPU, 1), (MEMORY, 1))
MAX_UTILIZATION = 100
MAX_CUSTOM_PRIORITY_SCORE = 10
TOO_MANY_PODS = "Too many pods"

Scorer = Callable[[list[int], list[int]], int]  # (requested per resource, allocatable per resource) -> score


def _go_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as Go's."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def least_allocated_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_allocated_score(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


def weighted_scorer(per_resource: Callable[[int, int], int], weights: list[int]) -> Scorer:
    def score(requested: list[int], allocatable: list[int]) -> int:
        total = weight_sum = 0
        for req, alloc, weight in zip(requested, allocatable, weights, strict=True):
            if alloc == 0:
                continue
            total += per_resource(req, alloc) * weight
            weight_sum += weight
        return total // weight_sum if weight_sum else 0

    return score


def broken_linear(shape: list[tuple[int, int]]) -> Callable[[int], int]:
    """Kubernetes `helper.BuildBrokenLinearFunction` over (utilization, score) points."""

    def fn(p: int) -> int:
        for i, (utilization, score) in enumerate(shape):
            if p <= utilization:
                if i == 0:
                    return shape[0][1]
                u0, s0 = shape[i - 1]
                return s0 + _go_div((score - s0) * (p - u0), utilization - u0)
        return shape[-1][1]

    return fn


def ratio_scorer(shape: list[tuple[int, int]], weights: list[int]) -> Scorer:
    raw = broken_linear([(u, s * (MAX_NODE_SCORE // MAX_CUSTOM_PRIORITY_SCORE)) for u, s in shape])

    def per_resource(requested: int, capacity: int) -> int:
        if capacity == 0 or requested > capacity:
            return raw(MAX_UTILIZATION)
        return raw(requested * MAX_UTILIZATION // capacity)

    def score(requested: list[int], allocatable: list[int]) -> int:
        total = weight_sum = 0
        for req, alloc, weight in zip(requested, allocatable, weights, strict=True):
            if alloc == 0:
                continue
            s = per_resource(req, alloc)
            if s > 0:
                total += s * weight
                weight_sum += weight
        return round(total / weight_sum) if weight_sum else 0

    return score


def node_amounts(node: NodeInfo, resource: str, pod_request: int, *, non_zero: bool) -> tuple[int, int]:
    """(allocatable, requested including the pod) of one resource, as Kubernetes scoring counts them."""
    if resource == CPU:
        return node.alloc_milli_cpu, (node.nz_milli_cpu if non_zero else node.req_milli_cpu) + pod_request
    if resource == MEMORY:
        return node.alloc_memory, (node.nz_memory if non_zero else node.req_memory) + pod_request
    if resource == EPHEMERAL_STORAGE:
        return node.alloc_ephemeral, node.req_ephemeral + pod_request
    if pod_request == 0:
        return 0, 0  # an extended resource the pod does not ask for: not scored
    if resource in node.alloc_scalar:
        return node.alloc_scalar[resource], node.req_scalar.get(resource, 0) + pod_request
    return 0, 0


def pod_amount(pod: PodInfo, resource: str, *, non_zero: bool) -> int:
    return (pod.non_zero if non_zero else pod.requests).get(resource)


def parse_resources(raw: Any, where: str) -> list[tuple[str, int]]:
    if raw is None:
        return list(DEFAULT_RESOURCES)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: must be a non-empty list of {{name, weight}}")
    out = []
    for i, r in enumerate(raw):
        if not isinstance(r, Mapping) or not isinstance(r.get("name"), str) or not r["name"]:
            raise ValueError(f"{where}[{i}].name: Required value")
        weight = r.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
            raise ValueError(f"{where}[{i}].weight: Invalid value: {weight!r}: resource weight of {r['name']} "
                             "not in valid range [1, 100]")  # fmt: skip
        out.append((r["name"], weight))
    return out


class NodeResourcesFit(PreFilterPlugin, FilterPlugin, ScorePlugin):
    name = NAME

    def __init__(
        self,
        *,
        strategy: str = LEAST_ALLOCATED,
        resources: Iterable[tuple[str, int]] = DEFAULT_RESOURCES,
        shape: Iterable[tuple[int, int]] = (),
        ignored_resources: Iterable[str] = (),
        ignored_groups: Iterable[str] = (),
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f'scoringStrategy.type: Unsupported value: "{strategy}": supported values: '
                             + ", ".join(f'"{s}"' for s in STRATEGIES))  # fmt: skip
        self.strategy = strategy
        self.resources = list(resources)
        self.names = [name for name, _ in self.resources]
        self.weights = [weight for _, weight in self.resources]
        self.ignored = frozenset(ignored_resources)
        self.ignored_groups = frozenset(ignored_groups)
        if strategy == REQUESTED_TO_CAPACITY_RATIO:
            points = sorted(shape)
            if not points:
                raise ValueError("scoringStrategy.requestedToCapacityRatio.shape: Required value")
            self.scorer = ratio_scorer(points, self.weights)
        else:
            per = least_allocated_score if strategy == LEAST_ALLOCATED else most_allocated_score
            self.scorer = weighted_scorer(per, self.weights)
        # the common configuration gets a loop with no per-resource indirection
        self._fast = strategy != REQUESTED_TO_CAPACITY_RATIO and self.names == [CPU, MEMORY]

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> NodeResourcesFit:
        strategy_raw = args.get("scoringStrategy") or {}
        if not isinstance(strategy_raw, Mapping):
            raise ValueError("NodeResourcesFit args.scoringStrategy must be an object")
        strategy = strategy_raw.get("type") or LEAST_ALLOCATED
        resources = parse_resources(strategy_raw.get("resources"), "scoringStrategy.resources")
        shape: list[tuple[int, int]] = []
        if strategy == REQUESTED_TO_CAPACITY_RATIO:
            ratio = strategy_raw.get("requestedToCapacityRatio") or {}
            for i, point in enumerate(ratio.get("shape") or []):
                u, s = point.get("utilization"), point.get("score")
                if not isinstance(u, int) or not 0 <= u <= 100:
                    raise ValueError(f"requestedToCapacityRatio.shape[{i}].utilization: not in valid range [0, 100]")
                if not isinstance(s, int) or not 0 <= s <= MAX_CUSTOM_PRIORITY_SCORE:
                    raise ValueError(f"requestedToCapacityRatio.shape[{i}].score: not in valid range [0, 10]")
                shape.append((u, s))
        ignored = args.get("ignoredResources") or []
        groups = args.get("ignoredResourceGroups") or []
        return cls(
            strategy=str(strategy), resources=resources, shape=shape, ignored_resources=ignored, ignored_groups=groups
        )

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (
            ClusterEvent(ASSIGNED_POD, ActionType.DELETE | ActionType.UPDATE_POD_SCALE_DOWN),
            ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE),
        )

    # --- filter -----------------------------------------------------------------------------
    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None  # the pod's requests were computed once, in its PodInfo

    def _ignored(self, resource: str) -> bool:
        if resource in self.ignored:
            return True
        return "/" in resource and resource.split("/", 1)[0] in self.ignored_groups

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        reasons: list[str] = []
        unresolved = False
        if len(node.pods) + 1 > node.alloc_pods:
            reasons.append(TOO_MANY_PODS)
            unresolved = node.alloc_pods < 1
        req = pod.requests
        if not req.is_zero():
            checks = (
                (CPU, req.milli_cpu, node.alloc_milli_cpu, node.req_milli_cpu),
                (MEMORY, req.memory, node.alloc_memory, node.req_memory),
                (EPHEMERAL_STORAGE, req.ephemeral_storage, node.alloc_ephemeral, node.req_ephemeral),
            )
            for name, want, alloc, used in checks:
                if want > 0 and want > alloc - used:
                    reasons.append(f"Insufficient {name}")
                    unresolved = unresolved or want > alloc
            for name, want in req.scalar.items():
                if want <= 0 or self._ignored(name):
                    continue
                alloc = node.alloc_scalar.get(name, 0)
                if want > alloc - node.req_scalar.get(name, 0):
                    reasons.append(f"Insufficient {name}")
                    unresolved = unresolved or want > alloc
        if not reasons:
            return None
        if unresolved:
            return unresolvable(*reasons, plugin=NAME)
        return unschedulable(*reasons, plugin=NAME)

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], failed: dict[str, Status]
    ) -> list[NodeInfo]:
        req = pod.requests
        if req.scalar:
            return super().filter_nodes(state, pod, nodes, failed)
        cpu, mem, eph = req.milli_cpu, req.memory, req.ephemeral_storage
        key = memo_key(self, "filter", cpu, mem, eph)
        span = state.span
        known, todo = recall(span, key, nodes)
        for i in todo:  # few: the nodes changed since
            node = nodes[i]
            fresh = _FITS
            if (
                len(node.pods) >= node.alloc_pods
                or (cpu and cpu > node.alloc_milli_cpu - node.req_milli_cpu)
                or (mem and mem > node.alloc_memory - node.req_memory)
                or (eph and eph > node.alloc_ephemeral - node.req_ephemeral)
            ):
                fresh = self.filter(state, pod, node) or _FITS
            keep(span, key, node, fresh)
            known[i] = fresh
        if known.count(_FITS) == len(nodes):
            return nodes  # the common case: every node fits
        out = []
        for node, status in zip(nodes, known, strict=True):
            if status is _FITS:
                out.append(node)
            elif status is not None:  # (never None here: every unknown was filled in above)
                failed[node.name] = status
        return out

    # --- score ------------------------------------------------------------------------------
    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        requested, allocatable = [], []
        for name in self.names:
            alloc, req = node_amounts(node, name, pod_amount(pod, name, non_zero=True), non_zero=True)
            allocatable.append(alloc)
            requested.append(req)
        return self.scorer(requested, allocatable)

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        if not self._fast:
            key = memo_key(self, "score", *(pod_amount(pod, name, non_zero=True) for name in self.names))
            out = []
            for node in nodes:
                score = node.memo.get(key)
                if score is None:
                    score = self.score(state, pod, node)
                    remember(node, key, score)
                out.append(score)
            return out
        pod_cpu, pod_mem = pod.non_zero.milli_cpu, pod.non_zero.memory
        key = memo_key(self, "score", pod_cpu, pod_mem)
        span = state.span
        out, todo = recall(span, key, nodes)
        if not todo:
            return cast(list[int], out)  # every node remembered its score
        w_cpu, w_mem = self.weights
        least = self.strategy == LEAST_ALLOCATED
        for i in todo:  # few: the nodes changed since
            node = nodes[i]
            total = weight_sum = 0
            cap = node.alloc_milli_cpu
            if cap:
                req = node.nz_milli_cpu + pod_cpu
                if least:
                    total += (0 if req > cap else (cap - req) * 100 // cap) * w_cpu
                else:
                    total += (min(req, cap) * 100 // cap) * w_cpu
                weight_sum = w_cpu
            cap = node.alloc_memory
            if cap:
                req = node.nz_memory + pod_mem
                if least:
                    total += (0 if req > cap else (cap - req) * 100 // cap) * w_mem
                else:
                    total += (min(req, cap) * 100 // cap) * w_mem
                weight_sum += w_mem
            score = total // weight_sum if weight_sum else 0
            keep(span, key, node, score)
            out[i] = score
        return cast(list[int], out)


_FITS = unschedulable("fits")  # a memo marker for "passed"; never returned

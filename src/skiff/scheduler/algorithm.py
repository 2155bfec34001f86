"""Choosing a node for one pod: filter enough nodes, score them, pick the best.

Kubernetes' `schedulePod`, with its two economies, which are what make a
large cluster affordable:

- **Look at only part of the cluster.** Filtering stops once
  `numFeasibleNodesToFind` nodes fit: all of them below 100 nodes; above,
  `percentageOfNodesToScore` of them, which by default adapts to the size
  (50% - nodes/125, at least 5%, at least 100 nodes: 10% of 5,000). The
  next pod starts where this one stopped, so over many pods every node is
  looked at. When nothing fits, every node has been looked at, so the
  reasons in the message cover them all.
- **Skip what does not apply.** Plugins whose PreFilter/PreScore answered
  SKIP are left out (see `runtime`).

Filters run plugin by plugin over a batch of nodes rather than node by node
(the same result: a node's status is the first plugin that rejects it), so
each plugin's loop stays tight; batches are sized from how many nodes have
fit so far, to look at about as many nodes as the node-by-node loop would.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from skiff.scheduler.cache import SchedulerCache
from skiff.scheduler.framework import NO_NODES_AVAILABLE, CycleState, Diagnosis, FitError, Status, unresolvable
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo
from skiff.scheduler.runtime import Framework

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
DEFAULT_PERCENTAGE_BASE = 50


class NoNodesAvailable(Exception):
    def __str__(self) -> str:
        return NO_NODES_AVAILABLE


class SchedulingError(Exception):
    """A plugin failed (an ERROR status, not a "does not fit")."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.message or status.code.name)
        self.status = status


@dataclass(frozen=True)
class ScheduleResult:
    node: str
    evaluated: int  # nodes filtered
    feasible: int  # of which fit


def num_feasible_nodes_to_find(percentage: int, num_all: int) -> int:
    """Kubernetes `numFeasibleNodesToFind` (percentage 0: adaptive)."""
    if num_all < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all
    if percentage <= 0:
        percentage = max(DEFAULT_PERCENTAGE_BASE - num_all // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all * min(percentage, 100) // 100, MIN_FEASIBLE_NODES_TO_FIND)


def _rotated(nodes: list[NodeInfo], start: int, count: int) -> list[NodeInfo]:
    n = len(nodes)
    start %= n
    end = start + count
    if end <= n:
        return nodes[start:end]
    return nodes[start:] + nodes[: end - n]


class Algorithm:
    """Schedules pods one at a time against the cache; remembers where the last search stopped."""

    def __init__(self, cache: SchedulerCache, *, percentage_of_nodes_to_score: int = 0,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        self.cache = cache
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self.rng = rng or random.Random()
        self.next_start = 0

    def schedule(self, fwk: Framework, state: CycleState, pod: PodInfo) -> ScheduleResult:
        """The chosen node; raises FitError (fits nowhere), NoNodesAvailable or SchedulingError."""
        nodes = self.cache.node_list()
        if not nodes:
            raise NoNodesAvailable()
        diagnosis = Diagnosis()
        status = fwk.run_pre_filter(state, pod)
        if status is not None:
            if not status.rejected:
                raise SchedulingError(status)
            diagnosis.pre_filter_msg = status.message
            diagnosis.absent_status = status
            if status.plugin:
                diagnosis.unschedulable_plugins.add(status.plugin)
            raise FitError(pod, len(nodes), diagnosis)

        candidates = nodes
        if state.node_names is not None:
            candidates = [n for n in (self.cache.get(name) for name in sorted(state.node_names)) if n is not None]
            plugins = ", ".join(state.restricted_by)
            diagnosis.absent_status = unresolvable(f"node(s) didn't satisfy plugin(s) [{plugins}]")
            diagnosis.unschedulable_plugins.update(state.restricted_by)

        nominated = str((pod.pod.get("status") or {}).get("nominatedNodeName") or "")
        if nominated:
            node = self.cache.get(nominated)
            if node is not None and self.cache.has_nominations:
                node = self._with_nominated(pod, node)
            if node is not None and (state.node_names is None or nominated in state.node_names):
                if fwk.run_filters(state, pod, node) is None:
                    return ScheduleResult(nominated, 1, 1)

        try:
            return self._place(fwk, state, pod, candidates, nodes, diagnosis)
        finally:
            state.span = None

    def _place(
        self,
        fwk: Framework,
        state: CycleState,
        pod: PodInfo,
        candidates: list[NodeInfo],
        nodes: list[NodeInfo],
        diagnosis: Diagnosis,
    ) -> ScheduleResult:
        """Filter (a share of) the candidates, then score the feasible ones and pick one."""
        feasible = self._find_feasible(fwk, state, pod, candidates, nodes, diagnosis.node_statuses)
        if not feasible:
            for st in diagnosis.node_statuses.values():
                if st.plugin:
                    diagnosis.unschedulable_plugins.add(st.plugin)
            raise FitError(pod, len(nodes), diagnosis)
        evaluated = len(feasible) + len(diagnosis.node_statuses)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        status = fwk.run_pre_score(state, pod, feasible)
        if status is not None:
            raise SchedulingError(status)
        scores = fwk.run_score(state, pod, feasible)
        return ScheduleResult(self._select(feasible, scores).name, evaluated, len(feasible))

    def _find_feasible(
        self,
        fwk: Framework,
        state: CycleState,
        pod: PodInfo,
        candidates: list[NodeInfo],
        all_nodes: list[NodeInfo],
        failed: dict[str, Status],
    ) -> list[NodeInfo]:
        n = len(candidates)
        if n == 0:
            return []
        percentage = fwk.percentage_of_nodes_to_score
        if percentage is None:
            percentage = self.percentage_of_nodes_to_score
        wanted = num_feasible_nodes_to_find(percentage, n)
        start = self.next_start % n
        filters = fwk.active_filters(state)
        if not filters:
            self.next_start = (self.next_start + wanted) % len(all_nodes)
            return _rotated(candidates, start, wanted)
        feasible: list[NodeInfo] = []
        processed = 0
        batch: list[NodeInfo] = []
        before_batch = 0
        # a batch is a plain slice of the node list (positions for the plugins' columns) unless the
        # candidates were narrowed or nominated pods are counted in
        columns = self.cache.columns
        sliced = candidates is all_nodes and columns.nodes is all_nodes and not self.cache.has_nominations
        all_passed = True
        try:
            while len(feasible) < wanted and processed < n:
                missing = wanted - len(feasible)
                if processed == 0:
                    take = wanted
                else:
                    rate = len(feasible) / processed
                    take = int(missing / max(rate, 0.05)) + 8
                take = min(take, n - processed)
                batch = _rotated(candidates, start + processed, take)
                if self.cache.has_nominations:
                    batch = [self._with_nominated(pod, node) for node in batch]
                survivors = batch
                for plugin in filters:
                    whole = sliced and len(survivors) == len(batch)  # filters drop nodes, never reorder them
                    state.span = (columns, (start + processed) % n, len(batch)) if whole else None
                    survivors = plugin.filter_nodes(state, pod, survivors, failed)
                    if not survivors:
                        break
                all_passed = all_passed and len(survivors) == len(batch)
                before_batch = processed
                processed += take
                feasible.extend(survivors)
        finally:
            state.span = None
        if len(feasible) > wanted:
            feasible = feasible[:wanted]
            processed = before_batch + batch.index(feasible[-1]) + 1
        if sliced and all_passed and not failed:  # the scores of a plain slice too
            state.span = (columns, start, len(feasible))
        self.next_start = (self.next_start + processed) % len(all_nodes)
        return feasible

    def _with_nominated(self, pod: PodInfo, node: NodeInfo) -> NodeInfo:
        """The node as it will be once the pods nominated to it (by preemption) that matter at least as much
        as `pod` are placed: the room preemption freed for them is not given away. Resources and ports
        only; their pod (anti-)affinity terms are not counted (Kubernetes evaluates both ways)."""
        waiting = [p for p in self.cache.nominated_on(node.name) if p.key != pod.key and p.priority >= pod.priority]
        if not waiting:
            return node
        what_if = node.clone()
        for nominated in waiting:
            what_if.add_pod(nominated.assumed_on(node.name))
        return what_if

    def _select(self, nodes: list[NodeInfo], scores: list[int]) -> NodeInfo:
        """The highest score; ties broken uniformly at random (as Kubernetes' reservoir sampling does)."""
        best = max(scores)
        ties = list(itertools.compress(range(len(scores)), map(best.__eq__, scores)))  # no Python-level loop
        return nodes[ties[0] if len(ties) == 1 else self.rng.choice(ties)]

"""Choosing a node: sampling part of a large cluster, the FitError message, assumed pods counting at once."""

from __future__ import annotations

import random

import pytest

from skiff.scheduler.algorithm import Algorithm, NoNodesAvailable, num_feasible_nodes_to_find
from skiff.scheduler.cache import SchedulerCache
from skiff.scheduler.config import PluginRef, PluginSet, Profile
from skiff.scheduler.framework import CycleState, Diagnosis, FitError, unresolvable, unschedulable
from tests.unit.scheduler_objects import cache_with, framework, node_obj, pod


@pytest.mark.parametrize(
    ("percentage", "nodes", "expected"),
    [(0, 50, 50), (0, 100, 100), (0, 1000, 420), (0, 1500, 570), (0, 5000, 500), (0, 10000, 500),
     (10, 5000, 500), (100, 5000, 5000), (1, 5000, 100), (30, 99, 99)],
    ids=["small", "100", "1k-adaptive", "1.5k-adaptive", "5k-adaptive", "10k-floor-5%", "10%", "all", "min-100",
         "below-100-all"],
)  # fmt: skip
def test_num_feasible_nodes_to_find(percentage: int, nodes: int, expected: int) -> None:
    assert num_feasible_nodes_to_find(percentage, nodes) == expected


def _fit_error(statuses: dict[str, tuple[str, ...]], total: int, **diag: object) -> str:
    d = Diagnosis(node_statuses={n: unschedulable(*r) for n, r in statuses.items()})
    for k, v in diag.items():
        setattr(d, k, v)
    return str(FitError(pod(), total, d))


def test_fit_error_counts_reasons_sorted_like_kubernetes() -> None:
    statuses = {
        "a": ("Insufficient cpu",),
        "b": ("Insufficient cpu", "Insufficient memory"),
        "c": ("node(s) had untolerated taint {node.kubernetes.io/unreachable: }",),
    }
    assert _fit_error(statuses, 3) == (
        "0/3 nodes are available: 1 Insufficient memory, "
        "1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu."
    )


def test_fit_error_sorts_as_strings() -> None:
    statuses = {f"n{i}": ("Insufficient cpu",) for i in range(10)} | {"x": ("Too many pods",), "y": ("Too many pods",)}
    assert _fit_error(statuses, 12) == "0/12 nodes are available: 10 Insufficient cpu, 2 Too many pods."


def test_fit_error_with_pre_filter_and_post_filter_messages() -> None:
    post = "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    msg = _fit_error({}, 3, pre_filter_msg="pod affinity terms conflict", post_filter_msg=post)
    assert msg == (
        "0/3 nodes are available: pod affinity terms conflict. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )


def test_fit_error_counts_absent_nodes() -> None:
    absent = unresolvable("node(s) didn't satisfy plugin(s) [NodeAffinity]")
    assert _fit_error({"a": ("Insufficient cpu",)}, 4, absent_status=absent) == (
        "0/4 nodes are available: 1 Insufficient cpu, 3 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    )


def test_no_nodes() -> None:
    fwk, _ = framework(cache=SchedulerCache())
    with pytest.raises(NoNodesAvailable, match="no nodes available to schedule pods"):
        Algorithm(fwk.cache).schedule(fwk, CycleState(), pod())


def test_picks_the_best_node_and_breaks_ties_at_random() -> None:
    cache = cache_with([node_obj("a"), node_obj("b"), node_obj("c", cpu="8", memory="16Gi")])
    fwk, _ = framework(cache=cache)
    algo = Algorithm(cache, rng=random.Random(1))
    assert algo.schedule(fwk, CycleState(), pod(cpu="1", memory="1Gi")).node == "c"
    even = cache_with([node_obj(f"n{i}") for i in range(10)])
    fwk, _ = framework(cache=even)
    algo = Algorithm(even, rng=random.Random(7))
    chosen = {algo.schedule(fwk, CycleState(), pod(cpu="1")).node for _ in range(50)}
    assert len(chosen) > 3  # equal nodes: spread at random, not always the first


def test_assumed_pods_count_at_once() -> None:
    cache = cache_with([node_obj("a", cpu="4"), node_obj("b", cpu="4")])
    fwk, _ = framework(cache=cache)
    algo = Algorithm(cache)
    first = algo.schedule(fwk, CycleState(), pod("p1", cpu="3"))
    cache.assume_pod(pod("p1", cpu="3"), first.node)
    second = algo.schedule(fwk, CycleState(), pod("p2", cpu="3"))
    assert {first.node, second.node} == {"a", "b"}
    cache.assume_pod(pod("p2", cpu="3"), second.node)
    with pytest.raises(FitError) as info:
        algo.schedule(fwk, CycleState(), pod("p3", cpu="3"))
    assert str(info.value) == "0/2 nodes are available: 2 Insufficient cpu."
    cache.forget_pod("default/p1")
    assert algo.schedule(fwk, CycleState(), pod("p3", cpu="3")).node == first.node


def test_samples_part_of_a_large_cluster_and_rotates() -> None:
    cache = cache_with([node_obj(f"n{i:04d}") for i in range(1000)])
    fwk, _ = framework(cache=cache)
    algo = Algorithm(cache)
    result = algo.schedule(fwk, CycleState(), pod(cpu="1"))
    assert result.evaluated == 420 and result.feasible == 420
    assert algo.next_start == 420
    algo.schedule(fwk, CycleState(), pod(cpu="1"))
    assert algo.next_start == 840
    algo.schedule(fwk, CycleState(), pod(cpu="1"))
    assert algo.next_start == 260  # wrapped around


def test_finds_the_one_fitting_node_among_many() -> None:
    nodes = [node_obj(f"n{i:04d}", cpu="1") for i in range(500)] + [node_obj("big", cpu="64")]
    cache = cache_with(nodes)
    fwk, _ = framework(cache=cache)
    assert Algorithm(cache).schedule(fwk, CycleState(), pod(cpu="8")).node == "big"


def test_fit_error_covers_every_node() -> None:
    nodes = [node_obj(f"n{i:04d}", cpu="1") for i in range(300)]
    nodes += [node_obj(f"t{i}", taints=[{"key": "k", "effect": "NoSchedule"}]) for i in range(7)]
    cache = cache_with(nodes)
    fwk, _ = framework(cache=cache)
    with pytest.raises(FitError) as info:
        Algorithm(cache).schedule(fwk, CycleState(), pod(cpu="2"))
    assert str(info.value) == (
        "0/307 nodes are available: 300 Insufficient cpu, 7 node(s) had untolerated taint {k: }."
    )
    assert info.value.diagnosis.unschedulable_plugins == {"NodeResourcesFit", "TaintToleration"}


def test_pinned_node_names_only_look_at_those_nodes() -> None:
    cache = cache_with([node_obj(f"n{i}") for i in range(5)])
    fwk, _ = framework(cache=cache)
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}}  # fmt: skip
    assert Algorithm(cache).schedule(fwk, CycleState(), pod(spec=spec)).node == "n3"
    with pytest.raises(FitError) as info:
        Algorithm(cache).schedule(fwk, CycleState(), pod(spec=spec, cpu="100"))
    assert str(info.value) == (
        "0/5 nodes are available: 1 Insufficient cpu, 4 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    )


def test_most_allocated_profile_packs() -> None:
    profile = Profile(plugin_args={"NodeResourcesFit": {"scoringStrategy": {"type": "MostAllocated"}}})
    cache = cache_with([node_obj(f"n{i}") for i in range(4)])
    fwk, _ = framework(profile, cache=cache)
    algo = Algorithm(cache)
    placed = []
    for i in range(4):
        p = pod(f"p{i}", cpu="1", memory="1Gi")
        node = algo.schedule(fwk, CycleState(), p).node
        cache.assume_pod(p, node)
        placed.append(node)
    assert len(set(placed)) == 1


def test_least_allocated_profile_spreads() -> None:
    cache = cache_with([node_obj(f"n{i}") for i in range(4)])
    fwk, _ = framework(cache=cache)
    algo = Algorithm(cache)
    placed = []
    for i in range(4):
        p = pod(f"p{i}", cpu="1", memory="1Gi")
        node = algo.schedule(fwk, CycleState(), p).node
        cache.assume_pod(p, node)
        placed.append(node)
    assert len(set(placed)) == 4


def test_no_filter_plugins_takes_the_first_nodes() -> None:
    everything_off = Profile(plugins={"multiPoint": PluginSet(disabled=frozenset({"*"})),
                                      "bind": PluginSet(enabled=(PluginRef("DefaultBinder"),))})  # fmt: skip
    cache = cache_with([node_obj(f"n{i}", cpu="1") for i in range(3)])
    fwk, _ = framework(everything_off, cache=cache)
    assert fwk.filter == [] and fwk.score == []
    assert Algorithm(cache).schedule(fwk, CycleState(), pod(cpu="100")).node in {"n0", "n1", "n2"}


def test_room_freed_by_preemption_is_kept_for_the_nominated_pod() -> None:
    cache = cache_with([node_obj("n", cpu="4")])
    fwk, _ = framework(cache=cache)
    algo = Algorithm(cache)
    cache.nominate(pod("preemptor", cpu="3", priority=10), "n")
    with pytest.raises(FitError, match="1 Insufficient cpu"):
        algo.schedule(fwk, CycleState(), pod("low", cpu="2", priority=5))
    with pytest.raises(FitError):
        algo.schedule(fwk, CycleState(), pod("same", cpu="2", priority=10))
    assert algo.schedule(fwk, CycleState(), pod("vip", cpu="2", priority=20)).node == "n"
    assert algo.schedule(fwk, CycleState(), pod("preemptor", cpu="3", priority=10)).node == "n"
    cache.nominate(pod("preemptor"), None)
    assert not cache.has_nominations
    assert algo.schedule(fwk, CycleState(), pod("low", cpu="2", priority=5)).node == "n"


def test_answers_read_by_slice_place_pods_as_answers_read_per_node() -> None:
    """The plugins' columns (a batch that is a slice of the node list) and their per-node memo agree, through
    pods assumed and forgotten, a node resized and a node added (the list rebuilt)."""

    def run(columns: bool) -> list[str]:
        nodes = [node_obj(f"n{i:03d}", cpu=str(1 + i % 3), memory=f"{2 + i % 5}Gi", pods="2") for i in range(240)]
        cache = cache_with(nodes)
        if not columns:
            cache.columns.reset = lambda nodes: None  # type: ignore[method-assign]  # never aligned: memo only
        fwk, _ = framework(cache=cache)
        algo = Algorithm(cache, rng=random.Random(7))
        placed: list[str] = []
        for i in range(900):
            if i == 300:
                cache.update_node(node_obj("n001", cpu="8", memory="16Gi", pods="20"))
            if i == 500:
                cache.add_node(node_obj("late", cpu="16", memory="64Gi", pods="50"))
            if i % 7 == 3 and placed:
                cache.forget_pod(f"default/p{i - 3}")
            shape = {"cpu": "300m", "memory": "700Mi"} if i % 2 else {"cpu": "100m", "memory": "1Gi"}
            p = pod(f"p{i}", **shape)
            try:
                result = algo.schedule(fwk, CycleState(), p)
            except FitError:
                placed.append("-")
                continue
            cache.assume_pod(p, result.node)
            placed.append(result.node)
        for info in cache.node_list():
            assert info.req_milli_cpu <= info.alloc_milli_cpu and info.req_memory <= info.alloc_memory
            assert len(info.pods) <= info.alloc_pods
        return placed

    by_slice = run(columns=True)
    assert "-" in by_slice and by_slice.count("-") < len(by_slice)  # the cluster filled up on the way
    assert by_slice == run(columns=False)

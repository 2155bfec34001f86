"""Each scheduler plugin's Filter and Score on hand-built nodes and pods (pure logic, no server)."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.scheduler.config import Profile
from skiff.scheduler.framework import Code, CycleState, Status
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.plugins.balancedallocation import BalancedAllocation
from skiff.scheduler.plugins.imagelocality import normalized_image_name
from skiff.scheduler.plugins.nodeaffinity import NodeAffinity
from skiff.scheduler.plugins.nodename import NodeName
from skiff.scheduler.plugins.nodeports import NodePorts
from skiff.scheduler.plugins.noderesources import NodeResourcesFit
from skiff.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from skiff.scheduler.plugins.tainttoleration import TaintToleration
from skiff.scheduler.podinfo import PodInfo, pod_requests
from tests.unit.scheduler_objects import cache_with, framework, node, node_obj, pod, pod_obj

Obj = dict[str, Any]
GI = 2**30


def run_filter(plugin: Any, p: PodInfo, n: NodeInfo, state: CycleState | None = None) -> Status | None:
    state = state or CycleState()
    pre = getattr(plugin, "pre_filter", None)
    if pre is not None:
        status = pre(state, p)
        if status is not None and status.code == Code.SKIP:
            return None
        if status is not None:
            return status
    single = plugin.filter(state, p, n)
    failed: dict[str, Status] = {}
    batch = plugin.filter_nodes(state, p, [n], failed)
    assert (single is None) == (batch == [n]), "filter and filter_nodes disagree"
    if single is not None:
        assert failed[n.name].reasons == single.reasons
    return single


# --- pod requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cpu", "memory"),
    [
        ({"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}, 250, 64 * 2**20),
        ({"containers": [{"resources": {"requests": {"cpu": "1"}}}, {"resources": {"requests": {"cpu": "500m"}}}]},
         1500, 0),
        (
            {
                "containers": [{"resources": {"requests": {"cpu": "1"}}}],
                "initContainers": [
                    {"resources": {"requests": {"cpu": "2"}}},
                    {"resources": {"requests": {"cpu": "1"}}},
                ],
            },
            2000,
            0,
        ),
        (
            {
                "containers": [{"resources": {"requests": {"cpu": "1"}}}],
                "initContainers": [
                    {"restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                    {"resources": {"requests": {"cpu": "1"}}},
                ],
            },
            1500,
            0,
        ),
        ({"containers": [{"resources": {"requests": {"cpu": "1"}}}], "overhead": {"cpu": "100m", "memory": "1Ki"}},
         1100, 1024),
        ({"containers": [{}]}, 0, 0),
    ],
    ids=["one-container", "sum-of-containers", "max-of-init", "sidecar-adds", "overhead", "no-requests"],
)  # fmt: skip
def test_pod_requests(spec: Obj, cpu: int, memory: int) -> None:
    r = pod_requests(spec)
    assert (r.milli_cpu, r.memory) == (cpu, memory)


def test_non_zero_requests_for_scoring() -> None:
    r = pod_requests({"containers": [{}, {"resources": {"requests": {"cpu": "1"}}}]}, non_zero=True)
    assert r.milli_cpu == 1100
    assert r.memory == 2 * 200 * 2**20


# --- NodeResourcesFit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_kw", "node_kw", "on_node", "reasons", "code"),
    [
        ({"cpu": "1", "memory": "1Gi"}, {}, [], None, None),
        ({"cpu": "3"}, {}, [{"cpu": "2"}], ("Insufficient cpu",), Code.UNSCHEDULABLE),
        ({"memory": "5Gi"}, {}, [{"memory": "4Gi"}], ("Insufficient memory",), Code.UNSCHEDULABLE),
        ({"cpu": "3", "memory": "5Gi"}, {}, [{"cpu": "2", "memory": "4Gi"}],
         ("Insufficient cpu", "Insufficient memory"), Code.UNSCHEDULABLE),
        ({"cpu": "5"}, {}, [], ("Insufficient cpu",), Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        ({}, {"pods": "1"}, [{}], ("Too many pods",), Code.UNSCHEDULABLE),
        ({"cpu": "100m"}, {"cpu": "1"}, [{"cpu": "1"}], ("Insufficient cpu",), Code.UNSCHEDULABLE),
        ({}, {"cpu": "1"}, [{"cpu": "1"}], None, None),
        ({"extra": {"nvidia.com/gpu": "1"}}, {}, [], ("Insufficient nvidia.com/gpu",),
         Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        ({"extra": {"nvidia.com/gpu": "2"}}, {"extra": {"nvidia.com/gpu": "4"}}, [{"extra": {"nvidia.com/gpu": "3"}}],
         ("Insufficient nvidia.com/gpu",), Code.UNSCHEDULABLE),
        ({"extra": {"nvidia.com/gpu": "1"}}, {"extra": {"nvidia.com/gpu": "4"}}, [{"extra": {"nvidia.com/gpu": "3"}}],
         None, None),
        ({"extra": {"ephemeral-storage": "2Gi"}}, {"extra": {"ephemeral-storage": "1Gi"}}, [],
         ("Insufficient ephemeral-storage",), Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
    ],
    ids=[
        "fits", "insufficient-cpu", "insufficient-memory", "both", "bigger-than-node", "too-many-pods",
        "full-node", "request-less-pod-fits-full-node", "extended-absent", "extended-used-up", "extended-fits",
        "ephemeral-storage",
    ],
)  # fmt: skip
def test_fit_filter(
    pod_kw: Obj, node_kw: Obj, on_node: list[Obj], reasons: tuple[str, ...] | None, code: Code | None
) -> None:
    existing = [pod(f"e{i}", **kw) for i, kw in enumerate(on_node)]
    status = run_filter(NodeResourcesFit(), pod("new", **pod_kw), node(pods_on=existing, **node_kw))
    if reasons is None:
        assert status is None
    else:
        assert status is not None
        assert status.reasons == reasons
        assert status.code == code


def test_fit_ignored_extended_resources() -> None:
    plugin = NodeResourcesFit.new({"ignoredResources": ["example.com/foo"]}, None)  # type: ignore[arg-type]
    assert run_filter(plugin, pod(extra={"example.com/foo": "1"}), node()) is None
    grouped = NodeResourcesFit.new({"ignoredResourceGroups": ["example.com"]}, None)  # type: ignore[arg-type]
    assert run_filter(grouped, pod(extra={"example.com/bar": "1"}), node()) is None


def _fit(strategy: str, resources: list[Obj] | None = None, shape: list[Obj] | None = None) -> NodeResourcesFit:
    args: Obj = {"scoringStrategy": {"type": strategy}}
    if resources is not None:
        args["scoringStrategy"]["resources"] = resources
    if shape is not None:
        args["scoringStrategy"]["requestedToCapacityRatio"] = {"shape": shape}
    return NodeResourcesFit.new(args, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("strategy", "resources", "pod_kw", "on_node", "expected"),
    [
        ("LeastAllocated", None, {"cpu": "1", "memory": "2Gi"}, [], 75),
        ("LeastAllocated", None, {"cpu": "1", "memory": "2Gi"}, [{"cpu": "2", "memory": "4Gi"}], 25),
        ("LeastAllocated", None, {}, [], 97),  # 100m / 200Mi non-zero defaults
        ("LeastAllocated", None, {"cpu": "5"}, [], 48),  # cpu over capacity scores 0, memory 97
        ("MostAllocated", None, {"cpu": "1", "memory": "2Gi"}, [], 25),
        ("MostAllocated", None, {"cpu": "1", "memory": "2Gi"}, [{"cpu": "2", "memory": "4Gi"}], 75),
        ("MostAllocated", None, {"cpu": "5", "memory": "2Gi"}, [], 62),  # cpu capped at 100
        ("LeastAllocated", [{"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}],
         {"cpu": "1", "memory": "4Gi"}, [], 68),
        ("LeastAllocated", [{"name": "cpu", "weight": 1}], {"cpu": "1", "memory": "4Gi"}, [], 75),
        ("MostAllocated", [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1},
                           {"name": "nvidia.com/gpu", "weight": 2}],
         {"cpu": "1", "memory": "2Gi", "extra": {"nvidia.com/gpu": "1"}}, [], 37),
    ],
    ids=[
        "least-empty", "least-half-full", "least-request-less", "least-over-capacity", "most-empty",
        "most-half-full", "most-over-capacity", "least-weighted", "least-cpu-only", "most-with-gpu",
    ],
)  # fmt: skip
def test_fit_score(strategy: str, resources: list[Obj] | None, pod_kw: Obj, on_node: list[Obj], expected: int) -> None:
    plugin = _fit(strategy, resources)
    existing = [pod(f"e{i}", **kw) for i, kw in enumerate(on_node)]
    n = node(extra={"nvidia.com/gpu": "2"}, pods_on=existing)
    p = pod("new", **pod_kw)
    state = CycleState()
    assert plugin.score(state, p, n) == expected
    assert plugin.score_nodes(state, p, [n]) == [expected]


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [("0", 0), ("1", 25), ("2", 50), ("3", 70), ("4", 90)],
    ids=["0%", "25%", "50%", "75%", "100%"],
)
def test_fit_score_requested_to_capacity_ratio(cpu: str, expected: int) -> None:
    shape = [{"utilization": 0, "score": 0}, {"utilization": 50, "score": 5}, {"utilization": 100, "score": 9}]
    plugin = _fit("RequestedToCapacityRatio", [{"name": "cpu", "weight": 1}], shape)
    p = pod(cpu=cpu) if cpu != "0" else pod(cpu="0")
    n = node()
    # the non-zero default applies only when no cpu request is given at all
    assert plugin.score(CycleState(), p, n) == expected


def test_fit_spreads_and_packs() -> None:
    empty, busy = node("empty"), node("busy", pods_on=[pod("e", cpu="2", memory="2Gi")])
    p = pod("new", cpu="500m", memory="512Mi")
    least, most = _fit("LeastAllocated"), _fit("MostAllocated")
    s_least = least.score_nodes(CycleState(), p, [empty, busy])
    s_most = most.score_nodes(CycleState(), p, [empty, busy])
    assert s_least[0] > s_least[1]
    assert s_most[1] > s_most[0]


def test_batch_answers_follow_the_nodes_that_changed_since_they_were_remembered() -> None:
    """Filter and scores per node are remembered per pod shape; a node that took a pod is asked again."""
    nodes = [node(f"n{i}", cpu="1", memory="4Gi") for i in range(6)]
    fit, balanced = _fit("LeastAllocated"), BalancedAllocation()
    p = pod("new", cpu="600m", memory="1Gi")

    def answers() -> tuple[list[str], dict[str, list[str]], list[int], list[int]]:
        failed: dict[str, Status] = {}
        fits = [n.name for n in fit.filter_nodes(CycleState(), p, nodes, failed)]
        reasons = {name: list(status.reasons) for name, status in failed.items()}
        return fits, reasons, fit.score_nodes(CycleState(), p, nodes), balanced.score_nodes(CycleState(), p, nodes)

    fits, reasons, scores, balance = answers()
    assert fits == [f"n{i}" for i in range(6)] and not reasons and len(set(scores)) == 1
    for i in (1, 4):
        nodes[i].add_pod(pod(f"took-{i}", cpu="500m", memory="3Gi").assumed_on(f"n{i}"))
    fits, reasons, scores, balance = answers()
    assert fits == ["n0", "n2", "n3", "n5"]
    assert reasons == {"n1": ["Insufficient cpu"], "n4": ["Insufficient cpu"]}
    assert scores == [fit.score(CycleState(), p, n) for n in nodes] and scores[1] < scores[0]
    assert balance == [balanced.score(CycleState(), p, n) for n in nodes] and balance[1] != balance[0]
    assert answers() == (fits, reasons, scores, balance)  # all remembered now: the same answers


@pytest.mark.parametrize(
    "args",
    [
        {"scoringStrategy": {"type": "Nope"}},
        {"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu", "weight": 0}]}},
        {"scoringStrategy": {"type": "MostAllocated", "resources": [{"weight": 1}]}},
        {"scoringStrategy": {"type": "RequestedToCapacityRatio"}},
    ],
    ids=["unknown-strategy", "zero-weight", "no-name", "ratio-without-shape"],
)
def test_fit_bad_args(args: Obj) -> None:
    with pytest.raises(ValueError):
        NodeResourcesFit.new(args, None)  # type: ignore[arg-type]


# --- NodeResourcesBalancedAllocation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_kw", "on_node", "expected"),
    [
        ({"cpu": "1", "memory": "4Gi"}, [], 87),  # 25% vs 50%
        ({"cpu": "2", "memory": "4Gi"}, [], 100),  # 50% vs 50%
        ({"cpu": "1", "memory": "1Gi"}, [{"cpu": "3"}], 56),  # 100% vs 12.5%
    ],
    ids=["uneven", "even", "cpu-full"],
)
def test_balanced_allocation(pod_kw: Obj, on_node: list[Obj], expected: int) -> None:
    plugin = BalancedAllocation()
    n = node(pods_on=[pod(f"e{i}", **kw) for i, kw in enumerate(on_node)])
    p = pod("new", **pod_kw)
    assert plugin.pre_score(CycleState(), p, [n]) is None
    assert plugin.score(CycleState(), p, n) == expected
    assert plugin.score_nodes(CycleState(), p, [n]) == [expected]


def test_balanced_allocation_skips_best_effort() -> None:
    status = BalancedAllocation().pre_score(CycleState(), pod(), [node()])
    assert status is not None and status.code == Code.SKIP


# --- NodeName, NodeUnschedulable ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_name", "fits"), [("", True), ("n", True), ("other", False)], ids=["unset", "same", "other"]
)
def test_node_name(node_name: str, fits: bool) -> None:
    status = run_filter(NodeName(), pod(node_name=node_name), node("n"))
    assert (status is None) == fits
    if not fits:
        assert status is not None and status.reasons == ("node(s) didn't match the requested node name",)


@pytest.mark.parametrize(
    ("unschedulable", "tolerations", "fits"),
    [
        (False, [], True),
        (True, [], False),
        (True, [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}], True),
        (True, [{"operator": "Exists"}], True),
        (True, [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoExecute"}], False),
    ],
    ids=["schedulable", "cordoned", "tolerated", "tolerate-everything", "wrong-effect"],
)
def test_node_unschedulable(unschedulable: bool, tolerations: list[Obj], fits: bool) -> None:
    status = run_filter(NodeUnschedulable(), pod(spec={"tolerations": tolerations}), node(unschedulable=unschedulable))
    assert (status is None) == fits
    if not fits:
        assert status is not None
        assert status.reasons == ("node(s) were unschedulable",)
        assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


# --- TaintToleration ------------------------------------------------------------------------------

UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("taints", "tolerations", "reason"),
    [
        ([], [], None),
        ([UNREACHABLE], [], "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"),
        ([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}], [],
         "node(s) had untolerated taint {dedicated: gpu}"),
        ([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}], [],
         "node(s) had untolerated taint {dedicated: gpu}"),
        ([{"key": "dedicated", "value": "gpu", "effect": "PreferNoSchedule"}], [], None),
        ([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
         [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}], None),
        ([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
         [{"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}],
         "node(s) had untolerated taint {dedicated: gpu}"),
        ([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}], [{"key": "dedicated", "operator": "Exists"}],
         None),
        ([UNREACHABLE], [{"operator": "Exists"}], None),
        ([UNREACHABLE],
         [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
           "tolerationSeconds": 300}],
         "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"),
        ([{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}],
         [{"key": "a", "operator": "Exists"}], "node(s) had untolerated taint {b: }"),
    ],
    ids=[
        "no-taints", "unreachable", "with-value", "no-execute", "prefer-ignored", "tolerated-equal",
        "wrong-value", "tolerated-exists", "tolerate-everything", "noexecute-toleration-not-enough",
        "first-untolerated",
    ],
)  # fmt: skip
def test_taint_toleration_filter(taints: list[Obj], tolerations: list[Obj], reason: str | None) -> None:
    status = run_filter(TaintToleration(), pod(spec={"tolerations": tolerations}), node(taints=taints))
    if reason is None:
        assert status is None
    else:
        assert status is not None
        assert status.reasons == (reason,)
        assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_taint_toleration_score_prefers_fewer_prefer_no_schedule_taints() -> None:
    prefer = [{"key": "x", "effect": "PreferNoSchedule"}, {"key": "y", "effect": "PreferNoSchedule"}]
    nodes = [node_obj("clean"), node_obj("one", taints=prefer[:1]), node_obj("two", taints=prefer)]
    fwk, _ = framework(cache=cache_with(nodes))
    plugin = fwk.plugins["TaintToleration"]
    assert isinstance(plugin, TaintToleration)
    infos = fwk.cache.node_list()
    by_name = {n.name: n for n in infos}
    ordered = [by_name["clean"], by_name["one"], by_name["two"]]
    p = pod()
    state = CycleState()
    assert plugin.pre_score(state, p, ordered) is None
    scores = plugin.score_nodes(state, p, ordered)
    assert scores == [0, 1, 2]
    plugin.normalize_scores(state, p, ordered, scores)
    assert scores == [100, 50, 0]
    tolerant = pod(spec={"tolerations": [{"key": "x", "operator": "Exists"}]})
    state = CycleState()
    assert plugin.pre_score(state, tolerant, ordered) is None
    assert plugin.score_nodes(state, tolerant, ordered) == [0, 0, 1]


def test_taint_toleration_score_skipped_without_prefer_taints() -> None:
    fwk, _ = framework(cache=cache_with([node_obj("a"), node_obj("b")]))
    status = fwk.plugins["TaintToleration"].pre_score(CycleState(), pod(), fwk.cache.node_list())  # type: ignore[attr-defined]
    assert status is not None and status.code == Code.SKIP


# --- NodeAffinity ---------------------------------------------------------------------------------


def _required(*terms: Obj) -> Obj:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}}  # fmt: skip


def _expr(key: str, op: str, *values: str) -> Obj:
    return {"matchExpressions": [{"key": key, "operator": op, **({"values": list(values)} if values else {})}]}


@pytest.mark.parametrize(
    ("spec", "labels", "fits"),
    [
        ({"nodeSelector": {"disk": "ssd"}}, {"disk": "ssd"}, True),
        ({"nodeSelector": {"disk": "ssd"}}, {"disk": "hdd"}, False),
        ({"nodeSelector": {"disk": "ssd", "zone": "a"}}, {"disk": "ssd"}, False),
        (_required(_expr("zone", "In", "a", "b")), {"zone": "b"}, True),
        (_required(_expr("zone", "In", "a", "b")), {"zone": "c"}, False),
        (_required(_expr("zone", "NotIn", "a")), {"zone": "c"}, True),
        (_required(_expr("zone", "NotIn", "a")), {}, True),
        (_required(_expr("gpu", "Exists")), {"gpu": ""}, True),
        (_required(_expr("gpu", "Exists")), {}, False),
        (_required(_expr("gpu", "DoesNotExist")), {}, True),
        (_required(_expr("cores", "Gt", "8")), {"cores": "16"}, True),
        (_required(_expr("cores", "Gt", "8")), {"cores": "8"}, False),
        (_required(_expr("cores", "Lt", "8")), {"cores": "4"}, True),
        (_required(_expr("cores", "Gt", "8")), {"cores": "many"}, False),
        (_required(_expr("cores", "Gt", "eight")), {"cores": "16"}, False),
        (_required(_expr("zone", "In", "a"), _expr("zone", "In", "b")), {"zone": "b"}, True),
        (_required({}), {"zone": "b"}, False),
        (_required({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}), {}, True),
        (_required({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n"]}]}), {}, False),
        ({"nodeSelector": {"disk": "ssd"}, **_required(_expr("zone", "In", "a"))}, {"disk": "ssd", "zone": "a"},
         True),
        ({"nodeSelector": {"disk": "ssd"}, **_required(_expr("zone", "In", "a"))}, {"disk": "hdd", "zone": "a"},
         False),
    ],
    ids=[
        "selector-match", "selector-mismatch", "selector-all-keys", "in", "not-in-values", "notin", "notin-absent",
        "exists", "exists-absent", "does-not-exist", "gt", "gt-equal", "lt", "gt-not-a-number", "gt-bad-value",
        "terms-ored", "empty-term-matches-nothing", "match-fields-in", "match-fields-notin", "selector-and-affinity",
        "selector-and-affinity-mismatch",
    ],
)  # fmt: skip
def test_node_affinity_filter(spec: Obj, labels: dict[str, str], fits: bool) -> None:
    status = run_filter(NodeAffinity(), pod(spec=spec), node("n", labels=labels))
    assert (status is None) == fits
    if not fits:
        assert status is not None
        assert status.reasons == ("node(s) didn't match Pod's node affinity/selector",)
        assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_node_affinity_pre_filter_pins_node_names() -> None:
    plugin = NodeAffinity()
    state = CycleState()
    spec = _required(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]},
    )
    assert plugin.pre_filter(state, pod(spec=spec)) is None
    assert state.node_names == {"a", "b", "c"}
    assert state.restricted_by == ["NodeAffinity"]
    mixed = CycleState()
    spec = _required({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]},
                     _expr("zone", "In", "x"))  # fmt: skip
    assert plugin.pre_filter(mixed, pod(spec=spec)) is None
    assert mixed.node_names is None


def test_node_affinity_pre_filter_skips_pods_without_constraints() -> None:
    status = NodeAffinity().pre_filter(CycleState(), pod())
    assert status is not None and status.code == Code.SKIP


def test_node_affinity_preferred_score() -> None:
    spec = {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 80, "preference": _expr("zone", "In", "a")},
        {"weight": 20, "preference": _expr("disk", "In", "ssd")},
    ]}}}  # fmt: skip
    plugin = NodeAffinity()
    nodes = [node("both", labels={"zone": "a", "disk": "ssd"}), node("zone", labels={"zone": "a"}),
             node("disk", labels={"disk": "ssd"}), node("none")]  # fmt: skip
    p = pod(spec=spec)
    state = CycleState()
    assert plugin.pre_score(state, p, nodes) is None
    scores = plugin.score_nodes(state, p, nodes)
    assert scores == [100, 80, 20, 0]
    plugin.normalize_scores(state, p, nodes, scores)
    assert scores == [100, 80, 20, 0]


def test_node_affinity_added_affinity() -> None:
    plugin = NodeAffinity.new({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [_expr("pool", "In", "batch")]}}}, None)  # type: ignore[arg-type]  # fmt: skip
    assert run_filter(plugin, pod(), node(labels={"pool": "batch"})) is None
    assert run_filter(plugin, pod(), node(labels={"pool": "web"})) is not None


# --- NodePorts ------------------------------------------------------------------------------------


def _ports(*ports: tuple[int, str, str]) -> list[Obj]:
    return [{"name": "c", "image": "x", "ports": [
        {"containerPort": 80, "hostPort": port, "protocol": proto, **({"hostIP": ip} if ip else {})}
        for port, proto, ip in ports]}]  # fmt: skip


@pytest.mark.parametrize(
    ("used", "wanted", "fits"),
    [
        ([], [(8080, "TCP", "")], True),
        ([(8080, "TCP", "")], [(8080, "TCP", "")], False),
        ([(8080, "TCP", "")], [(8080, "UDP", "")], True),
        ([(8080, "TCP", "")], [(8081, "TCP", "")], True),
        ([(8080, "TCP", "10.0.0.1")], [(8080, "TCP", "10.0.0.2")], True),
        ([(8080, "TCP", "10.0.0.1")], [(8080, "TCP", "")], False),
        ([(8080, "TCP", "")], [(8080, "TCP", "10.0.0.2")], False),
    ],
    ids=["free", "taken", "other-protocol", "other-port", "other-ips", "any-ip-vs-specific", "specific-vs-any-ip"],
)
def test_node_ports(used: list[tuple[int, str, str]], wanted: list[tuple[int, str, str]], fits: bool) -> None:
    existing = [pod("e", containers=_ports(*used))] if used else []
    status = run_filter(NodePorts(), pod("new", containers=_ports(*wanted)), node(pods_on=existing))
    assert (status is None) == fits
    if not fits:
        assert status is not None
        assert status.reasons == ("node(s) didn't have free ports for the requested pod ports",)


def test_node_ports_skipped_without_host_ports() -> None:
    status = NodePorts().pre_filter(CycleState(), pod())
    assert status is not None and status.code == Code.SKIP


# --- InterPodAffinity -----------------------------------------------------------------------------

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"


def _term(labels: dict[str, str], key: str) -> Obj:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key}


def _pod_affinity(kind: str, *terms: Obj, preferred: bool = False) -> Obj:
    if preferred:
        body = {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": t} for t in terms]}  # fmt: skip
    else:
        body = {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}
    return {"affinity": {kind: body}}


def _zoned_cache(placed: list[tuple[str, PodInfo]]) -> Any:
    nodes = [node_obj("a1", labels={ZONE: "a"}), node_obj("a2", labels={ZONE: "a"}),
             node_obj("b1", labels={ZONE: "b"}), node_obj("nozone")]  # fmt: skip
    cache = cache_with(nodes)
    for node_name, p in placed:
        cache.add_pod(p.assumed_on(node_name))
    return cache


def _filter_all(fwk: Any, plugin_name: str, p: PodInfo) -> dict[str, Status | None]:
    plugin = fwk.plugins[plugin_name]
    state = CycleState()
    status = plugin.pre_filter(state, p)
    if status is not None and status.code == Code.SKIP:
        return {n.name: None for n in fwk.cache.node_list()}
    assert status is None, status
    out: dict[str, Status | None] = {}
    for n in fwk.cache.node_list():
        out[n.name] = plugin.filter(state, p, n)
    return out


def _fitting(result: dict[str, Status | None]) -> set[str]:
    return {name for name, st in result.items() if st is None}


@pytest.mark.parametrize(
    ("placed", "spec", "labels", "fitting"),
    [
        ([("a1", pod("db", labels={"app": "db"}))], _pod_affinity("podAffinity", _term({"app": "db"}, ZONE)),
         {"app": "web"}, {"a1", "a2"}),
        ([("a1", pod("db", labels={"app": "db"}))], _pod_affinity("podAffinity", _term({"app": "db"}, HOST)),
         {"app": "web"}, {"a1"}),
        ([], _pod_affinity("podAffinity", _term({"app": "db"}, ZONE)), {"app": "web"}, set()),
        ([], _pod_affinity("podAffinity", _term({"app": "web"}, ZONE)), {"app": "web"}, {"a1", "a2", "b1"}),
        ([("a1", pod("w", labels={"app": "web"}))], _pod_affinity("podAntiAffinity", _term({"app": "web"}, HOST)),
         {"app": "web"}, {"a2", "b1", "nozone"}),
        ([("a1", pod("w", labels={"app": "web"}))], _pod_affinity("podAntiAffinity", _term({"app": "web"}, ZONE)),
         {"app": "web"}, {"b1", "nozone"}),
        ([("a1", pod("w", labels={"app": "web"}, spec=_pod_affinity(
            "podAntiAffinity", _term({"app": "web"}, ZONE))))], {}, {"app": "web"}, {"b1", "nozone"}),
        ([("a1", pod("w", labels={"app": "web"}, spec=_pod_affinity(
            "podAntiAffinity", _term({"app": "web"}, ZONE))))], {}, {"app": "other"}, {"a1", "a2", "b1", "nozone"}),
        ([("a1", pod("w", namespace="other", labels={"app": "web"}))],
         _pod_affinity("podAntiAffinity", _term({"app": "web"}, HOST)), {"app": "web"}, {"a1", "a2", "b1", "nozone"}),
    ],
    ids=[
        "affinity-zone", "affinity-host", "affinity-no-match", "first-of-group", "anti-affinity-host",
        "anti-affinity-zone", "existing-anti-affinity", "existing-anti-affinity-other-labels",
        "other-namespace-ignored",
    ],
)  # fmt: skip
def test_inter_pod_affinity_filter(
    placed: list[tuple[str, PodInfo]], spec: Obj, labels: dict[str, str], fitting: set[str]
) -> None:
    fwk, _ = framework(cache=_zoned_cache(placed))
    result = _filter_all(fwk, "InterPodAffinity", pod("new", labels=labels, spec=spec))
    assert _fitting(result) == fitting


def test_inter_pod_affinity_reasons() -> None:
    placed = [
        ("a1", pod("w", labels={"app": "web"}, spec=_pod_affinity("podAntiAffinity", _term({"app": "web"}, HOST))))
    ]
    fwk, _ = framework(cache=_zoned_cache(placed))
    result = _filter_all(fwk, "InterPodAffinity", pod("new", labels={"app": "web"}))
    status = result["a1"]
    assert status is not None and status.reasons == ("node(s) didn't satisfy existing pods anti-affinity rules",)
    result = _filter_all(
        fwk, "InterPodAffinity", pod("x", spec=_pod_affinity("podAntiAffinity", _term({"app": "web"}, HOST)))
    )
    status = result["a1"]
    assert status is not None and status.reasons == ("node(s) didn't match pod anti-affinity rules",)
    result = _filter_all(
        fwk, "InterPodAffinity", pod("y", spec=_pod_affinity("podAffinity", _term({"app": "db"}, HOST)))
    )
    status = result["a1"]
    assert status is not None and status.reasons == ("node(s) didn't match pod affinity rules",)
    assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_inter_pod_affinity_skips_when_nothing_has_terms() -> None:
    fwk, _ = framework(cache=_zoned_cache([("a1", pod("w", labels={"app": "web"}))]))
    status = fwk.plugins["InterPodAffinity"].pre_filter(CycleState(), pod())  # type: ignore[attr-defined]
    assert status is not None and status.code == Code.SKIP


def test_inter_pod_affinity_preferred_score() -> None:
    placed = [("a1", pod("db", labels={"app": "db"}))]
    fwk, _ = framework(cache=_zoned_cache(placed))
    plugin = fwk.plugins["InterPodAffinity"]
    nodes = fwk.cache.node_list()
    near = pod("near", spec=_pod_affinity("podAffinity", _term({"app": "db"}, ZONE), preferred=True))
    state = CycleState()
    assert plugin.pre_score(state, near, nodes) is None  # type: ignore[attr-defined]
    scores = plugin.score_nodes(state, near, nodes)  # type: ignore[attr-defined]
    plugin.normalize_scores(state, near, nodes, scores)  # type: ignore[attr-defined]
    by_name = dict(zip([n.name for n in nodes], scores, strict=True))
    assert by_name == {"a1": 100, "a2": 100, "b1": 0, "nozone": 0}
    away = pod("away", spec=_pod_affinity("podAntiAffinity", _term({"app": "db"}, ZONE), preferred=True))
    state = CycleState()
    assert plugin.pre_score(state, away, nodes) is None  # type: ignore[attr-defined]
    scores = plugin.score_nodes(state, away, nodes)  # type: ignore[attr-defined]
    plugin.normalize_scores(state, away, nodes, scores)  # type: ignore[attr-defined]
    by_name = dict(zip([n.name for n in nodes], scores, strict=True))
    assert by_name == {"a1": 0, "a2": 0, "b1": 100, "nozone": 100}


# --- PodTopologySpread ----------------------------------------------------------------------------


def _spread(key: str, *, skew: int = 1, when: str = "DoNotSchedule", **extra: Any) -> Obj:
    return {"topologySpreadConstraints": [{"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
                                           "labelSelector": {"matchLabels": {"app": "web"}}, **extra}]}  # fmt: skip


def _web(name: str) -> PodInfo:
    return pod(name, labels={"app": "web"})


@pytest.mark.parametrize(
    ("placed", "spec", "fitting"),
    [
        ([], _spread(ZONE), {"a1", "a2", "b1"}),
        ([("a1", _web("w1"))], _spread(ZONE), {"b1"}),
        ([("a1", _web("w1")), ("b1", _web("w2"))], _spread(ZONE), {"a1", "a2", "b1"}),
        ([("a1", _web("w1"))], _spread(ZONE, skew=2), {"a1", "a2", "b1"}),
        ([("a1", _web("w1")), ("a2", _web("w2"))], _spread(HOST), {"b1", "nozone"}),
        ([("a1", _web("w1"))], _spread(ZONE, minDomains=3), {"b1"}),
        ([("a1", _web("w1")), ("b1", _web("w2"))], _spread(ZONE, minDomains=3), set()),
        ([("a1", pod("other", labels={"app": "db"}))], _spread(ZONE), {"a1", "a2", "b1"}),
        ([("a1", _web("w1"))], {**_spread(ZONE), "nodeSelector": {ZONE: "a"}}, {"a1", "a2", "b1"}),
    ],
    ids=[
        "empty", "one-in-a", "balanced", "skew-2", "per-host", "min-domains", "min-domains-forces-new-domain",
        "non-matching-pods-ignored", "node-affinity-policy-honor",
    ],
)  # fmt: skip
def test_topology_spread_filter(placed: list[tuple[str, PodInfo]], spec: Obj, fitting: set[str]) -> None:
    fwk, _ = framework(cache=_zoned_cache(placed))
    result = _filter_all(fwk, "PodTopologySpread", pod("new", labels={"app": "web"}, spec=spec))
    assert _fitting(result) == fitting
    if "nozone" not in fitting and HOST not in str(spec):
        status = result["nozone"]
        assert status is not None
        assert status.reasons == ("node(s) didn't match pod topology spread constraints (missing required label)",)


def test_topology_spread_score_prefers_emptier_domains() -> None:
    placed = [("a1", _web("w1")), ("a2", _web("w2")), ("b1", _web("w3"))]
    fwk, _ = framework(cache=_zoned_cache(placed))
    plugin = fwk.plugins["PodTopologySpread"]
    nodes = [n for n in fwk.cache.node_list() if n.name != "nozone"]
    p = pod("new", labels={"app": "web"}, spec=_spread(ZONE, when="ScheduleAnyway"))
    state = CycleState()
    assert plugin.pre_score(state, p, nodes) is None  # type: ignore[attr-defined]
    scores = plugin.score_nodes(state, p, nodes)  # type: ignore[attr-defined]
    plugin.normalize_scores(state, p, nodes, scores)  # type: ignore[attr-defined]
    by_name = dict(zip([n.name for n in nodes], scores, strict=True))
    assert by_name["b1"] > by_name["a1"] == by_name["a2"]


# --- ImageLocality --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "normalized"),
    [("nginx", "nginx:latest"), ("nginx:1.25", "nginx:1.25"), ("reg:5000/app", "reg:5000/app:latest"),
     ("app@sha256:abc", "app@sha256:abc")],
    ids=["bare", "tagged", "registry-port", "digest"],
)  # fmt: skip
def test_image_names(name: str, normalized: str) -> None:
    assert normalized_image_name(name) == normalized


def test_image_locality_prefers_nodes_with_the_image() -> None:
    images = [{"names": ["nginx:1.25"], "sizeBytes": 500 * 2**20}]
    fwk, _ = framework(cache=cache_with([node_obj("has", images=images), node_obj("lacks")]))
    plugin = fwk.plugins["ImageLocality"]
    nodes = fwk.cache.node_list()
    p = pod()
    state = CycleState()
    assert plugin.pre_score(state, p, nodes) is None  # type: ignore[attr-defined]
    scores = dict(zip([n.name for n in nodes], plugin.score_nodes(state, p, nodes), strict=True))  # type: ignore[attr-defined]
    assert scores["has"] > scores["lacks"] == 0
    status = plugin.pre_score(CycleState(), pod(containers=[{"name": "c", "image": "redis"}]), nodes)  # type: ignore[attr-defined]
    assert status is not None and status.code == Code.SKIP


# --- DefaultPreemption ----------------------------------------------------------------------------


def test_preemption_picks_lowest_priority_victims() -> None:
    placed = [
        ("a1", pod("low", cpu="3", priority=1)),
        ("a2", pod("mid", cpu="3", priority=5)),
        ("b1", pod("high", cpu="3", priority=100)),
    ]
    fwk, services = framework(cache=_zoned_cache(placed))
    p = pod("vip", cpu="2", priority=10)
    state = CycleState()
    assert fwk.run_pre_filter(state, p) is None
    failed = {n.name: st for n in fwk.cache.node_list() if (st := fwk.run_filters(state, p, n)) is not None}
    assert set(failed) == {"a1", "a2", "b1"}
    result, status = fwk.run_post_filter(state, p, failed)
    assert status is None
    assert result is not None and result.nominated_node == "a1"
    services.close()


def test_preemption_explains_when_nothing_helps() -> None:
    fwk, services = framework(cache=_zoned_cache([("a1", pod("e", cpu="3", priority=50))]))
    p = pod("p", cpu="3", priority=10)
    state = CycleState()
    assert fwk.run_pre_filter(state, p) is None
    failed = {n.name: st for n in fwk.cache.node_list() if (st := fwk.run_filters(state, p, n)) is not None}
    assert set(failed) == {"a1"}
    _result, status = fwk.run_post_filter(state, p, failed)
    assert status is not None
    assert status.message == "preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod."
    never = pod("n", cpu="3", priority=100, spec={"preemptionPolicy": "Never"})
    _result, status = fwk.run_post_filter(CycleState(), never, failed)
    assert status is not None and status.message == "preemption: not eligible due to preemptionPolicy=Never."
    services.close()


def test_default_profile_plugins() -> None:
    fwk, _ = framework(Profile())
    assert [p.name for p in fwk.filter] == [
        "NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts", "NodeResourcesFit",
        "VolumeBinding", "PodTopologySpread", "InterPodAffinity",
    ]  # fmt: skip
    assert [(p.name, w) for p, w in fwk.score] == [
        ("TaintToleration", 3), ("NodeAffinity", 2), ("NodeResourcesFit", 1), ("PodTopologySpread", 2),
        ("InterPodAffinity", 2), ("NodeResourcesBalancedAllocation", 1), ("ImageLocality", 1),
    ]  # fmt: skip
    assert [p.name for p in fwk.post_filter] == ["DefaultPreemption"]
    assert [p.name for p in fwk.bind] == ["DefaultBinder"]


def test_pod_info_parses_once() -> None:
    info = PodInfo(pod_obj("x", cpu="250m", memory="64Mi", labels={"a": "b"}, priority=7))
    assert (info.key, info.requests.milli_cpu, info.requests.memory, info.priority) == ("default/x", 250, 2**26, 7)
    assumed = info.assumed_on("n1")
    assert assumed.node_name == "n1" and info.node_name == ""
    assert assumed.pod is info.pod


def test_remembered_results_follow_node_changes() -> None:
    """The resource plugins remember per node and pod shape; any change to the node forgets."""
    fit, balanced = NodeResourcesFit(), BalancedAllocation()
    n = node(cpu="2", memory="4Gi")
    p = pod("new", cpu="1", memory="1Gi")
    state = CycleState()
    assert fit.score_nodes(state, p, [n]) == [fit.score(state, p, n)] == [62]
    assert balanced.score_nodes(state, p, [n]) == [balanced.score(state, p, n)] == [87]
    assert fit.filter_nodes(state, p, [n], {}) == [n]
    n.add_pod(pod("e", cpu="1", memory="3584Mi").assumed_on(n.name))
    assert fit.score_nodes(state, p, [n]) == [fit.score(state, p, n)] == [0]
    assert balanced.score_nodes(state, p, [n]) == [balanced.score(state, p, n)] == [100]
    failed: dict[str, Status] = {}
    assert fit.filter_nodes(state, p, [n], failed) == []
    assert failed[n.name].reasons == ("Insufficient memory",)
    n.remove_pod(pod("e"))
    assert fit.filter_nodes(state, p, [n], {}) == [n]
    assert fit.score_nodes(state, p, [n]) == [62]

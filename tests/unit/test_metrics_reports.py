"""Usage reports: what a simulated node sends (skiff.node.metrics) and how the apiserver keeps it."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api import errors
from skiff.apiserver.metrics_store import MetricsStore
from skiff.node import metrics as nm

Obj = dict[str, Any]


def sim_pod(name: str, annotations: dict[str, str] | None = None, containers: tuple[str, ...] = ("app",)) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "annotations": annotations or {}},
        "spec": {"nodeName": "n1", "containers": [{"name": c} for c in containers]},
        "status": {"phase": "Running"},
    }


# --- the node side ------------------------------------------------------------------------------


def test_one_value_applies_to_every_container() -> None:
    usage = nm.simulated_pod_usage(
        sim_pod("p", {nm.CPU_USAGE: "400m", nm.MEMORY_USAGE: "200Mi"}, containers=("app", "log"))
    )
    assert usage.uid == "uid-p"
    assert usage.containers == {"app": {"cpu": "400m", "memory": "200Mi"}, "log": {"cpu": "400m", "memory": "200Mi"}}


def test_a_json_map_by_container_and_defaults_for_the_rest() -> None:
    usage = nm.simulated_pod_usage(sim_pod("p", {nm.CPU_USAGE: '{"app": "1", "nope": "2"}'}, containers=("app", "log")))
    assert usage.containers == {
        "app": {"cpu": "1", "memory": "16Mi"},
        "log": {"cpu": "5m", "memory": "16Mi"},
    }


@pytest.mark.parametrize("bad", ["lots", "{not json", '["400m"]', '{"app": "x"}', ""], ids=repr)
def test_a_bad_annotation_means_the_default(bad: str) -> None:
    usage = nm.simulated_pod_usage(sim_pod("p", {nm.CPU_USAGE: bad}))
    assert usage.containers == {"app": dict(nm.DEFAULT_CONTAINER_USAGE)}


def test_node_usage_is_the_sum_plus_a_base() -> None:
    pods = [nm.PodUsage("ns", "a", {"c": {"cpu": "400m", "memory": "200Mi"}, "d": {"cpu": "100m", "memory": "1Mi"}})]
    assert nm.node_usage(pods, base={"cpu": "100m", "memory": "512Mi"}) == {
        "cpu": "600000000n",
        "memory": "713Mi",
    }


def test_only_running_pods_have_usage() -> None:
    pending = sim_pod("p")
    pending["status"]["phase"] = "Pending"
    deleting = sim_pod("q")
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert [nm.running(p) for p in (sim_pod("r"), pending, deleting)] == [True, False, False]


# --- the apiserver side -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(pods: list[Obj], **kw: Any) -> Obj:
    return {"window": "10s", "usage": {"cpu": "1", "memory": "1Gi"}, "pods": pods, **kw}


def pod_entry(name: str, cpu: str = "100m") -> Obj:
    return {"namespace": "ns", "name": name, "containers": [{"name": "c", "usage": {"cpu": cpu, "memory": "1Mi"}}]}


def test_reports_expire_after_three_windows() -> None:
    clock = FakeClock()
    store = MetricsStore(clock=clock)
    store.report("n1", report([pod_entry("a")]))
    clock.now += 29
    assert store.node("n1") is not None and store.pod("ns", "a") is not None
    clock.now += 2
    assert store.node("n1") is None and store.pod("ns", "a") is None


def test_a_report_replaces_the_nodes_pods_and_a_pod_can_move() -> None:
    store = MetricsStore(clock=FakeClock())
    store.report("n1", report([pod_entry("a"), pod_entry("b")]))
    store.report("n2", report([pod_entry("b", "300m")]))
    store.report("n1", report([pod_entry("a", "200m")]))
    a, b = store.pod("ns", "a"), store.pod("ns", "b")
    assert a is not None and a.containers[0][1]["cpu"] == "200m"
    assert b is not None and b.node == "n2"
    store.report("n2", report([]))
    assert store.pod("ns", "b") is None and store.pod("ns", "a") is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        (report([], window="soon"), "window: Invalid value"),
        (report([], timestamp="yesterday"), "timestamp: Invalid value"),
        (report([pod_entry("a", "fast")]), "pods[0].containers[0].usage.cpu: Invalid value"),
        (report([pod_entry("a", "-1")]), "must not be negative"),
        (report([{"name": "a"}]), "pods[0]: namespace and name are required"),
    ],
    ids=["not-object", "window", "timestamp", "quantity", "negative", "no-namespace"],
)
def test_bad_reports_change_nothing(body: Any, message: str) -> None:
    store = MetricsStore(clock=FakeClock())
    store.report("n1", report([pod_entry("keep")]))
    with pytest.raises(errors.BadRequest) as err:
        store.report("n1", body)
    assert message in err.value.message
    assert store.pod("ns", "keep") is not None

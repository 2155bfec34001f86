"""The pure parts of the Job, DaemonSet, StatefulSet and history code: eligibility, pinning, indexes, hashes."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.controllers.daemonset import (
    max_unavailable,
    node_affinity_matches,
    pin_to_node,
    rolling_limits,
    should_run,
    target_node,
    tolerates,
    with_daemon_tolerations,
)
from skiff.controllers.history import revision_hash, template_patch
from skiff.controllers.job import format_indexes, parse_indexes
from skiff.controllers.statefulset import claim_name, ordinal_of, revision_template
from skiff.controllers.workloads import Expectations, OwnWrites, set_condition

Obj = dict[str, Any]


def node(name: str, labels: dict[str, str] | None = None, taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


# --- DaemonSet eligibility ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        ({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
         {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
        ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),  # Equal, any effect
        ({"key": "k", "value": "x"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
        ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
        ({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"}, True),  # empty key + Exists: all
        ({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, {"key": "k", "effect": "NoExecute"}, False),
    ],
)  # fmt: skip
def test_tolerates(toleration: Obj, taint: Obj, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def test_should_run_follows_selector_affinity_and_taints() -> None:
    spec = with_daemon_tolerations({"nodeSelector": {"disk": "ssd"}})
    assert should_run(spec, node("a", {"disk": "ssd"})) == (True, True)
    assert should_run(spec, node("b", {"disk": "hdd"})) == (False, False)
    no_schedule = [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    assert should_run(spec, node("c", {"disk": "ssd"}, no_schedule)) == (False, True)  # a running one may stay
    no_execute = [{"key": "dedicated", "value": "x", "effect": "NoExecute"}]
    assert should_run(spec, node("d", {"disk": "ssd"}, no_execute)) == (False, False)  # evicted
    # the daemon tolerations let it run where nodes are in trouble
    troubled = [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]  # fmt: skip
    assert should_run(spec, node("e", {"disk": "ssd"}, troubled)) == (True, True)
    assert should_run({"nodeName": "a"}, node("b")) == (False, False)


def test_daemon_tolerations_added_once() -> None:
    spec = with_daemon_tolerations({"tolerations": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute",
                                                     "operator": "Exists", "tolerationSeconds": 5}]})  # fmt: skip
    keys = [(t["key"], t["effect"]) for t in spec["tolerations"]]
    assert len(keys) == len(set(keys)) == 6
    assert spec["tolerations"][0]["tolerationSeconds"] == 5  # the user's own stays as written
    assert ("node.kubernetes.io/network-unavailable", "NoSchedule") in [
        (t["key"], t["effect"]) for t in with_daemon_tolerations({"hostNetwork": True})["tolerations"]
    ]


@pytest.mark.parametrize(
    ("expr", "labels", "expected"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "a"}, True),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "gpu", "operator": "Exists"}, {"gpu": ""}, True),
        ({"key": "gpu", "operator": "DoesNotExist"}, {"gpu": ""}, False),
        ({"key": "cores", "operator": "Gt", "values": ["4"]}, {"cores": "8"}, True),
        ({"key": "cores", "operator": "Lt", "values": ["4"]}, {"cores": "8"}, False),
        ({"key": "cores", "operator": "Gt", "values": ["4"]}, {"cores": "many"}, False),
    ],
)
def test_required_node_affinity(expr: Obj, labels: dict[str, str], expected: bool) -> None:
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}}  # fmt: skip
    assert node_affinity_matches(spec, node("n", labels)) is expected


def test_pin_to_node_replaces_required_terms_and_keeps_preferred() -> None:
    spec: Obj = {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}}}  # fmt: skip
    pin_to_node(spec, "node-7")
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}]}  # fmt: skip
    assert spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert target_node({"spec": spec}) == "node-7"
    assert target_node({"spec": {**spec, "nodeName": "bound"}}) == "bound"
    assert target_node({"spec": {}}) is None


@pytest.mark.parametrize(("raw", "desired", "expected"), [(1, 10, 1), (3, 10, 3), ("25%", 10, 3), ("0%", 10, 1)])
def test_max_unavailable(raw: object, desired: int, expected: int) -> None:
    ds = {"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": raw}}}}
    assert max_unavailable(ds, desired) == expected


@pytest.mark.parametrize(
    ("rolling", "desired", "expected"),
    [({}, 10, (0, 1)), ({"maxSurge": 1, "maxUnavailable": 0}, 10, (1, 0)), ({"maxSurge": "10%"}, 15, (2, 1)),
     ({"maxSurge": 0, "maxUnavailable": 0}, 5, (0, 1))],
)  # fmt: skip
def test_rolling_limits(rolling: Obj, desired: int, expected: tuple[int, int]) -> None:
    assert rolling_limits({"spec": {"updateStrategy": {"rollingUpdate": rolling}}}, desired) == expected


# --- Job indexes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "indexes"),
    [("", set()), ("0", {0}), ("0-2", {0, 1, 2}), ("0-2,5,7-8", {0, 1, 2, 5, 7, 8})],
)
def test_completed_indexes_round_trip(text: str, indexes: set[int]) -> None:
    assert parse_indexes(text) == indexes
    assert format_indexes(indexes) == text


# --- StatefulSet identity -------------------------------------------------------------------------
def test_ordinals_and_claim_names() -> None:
    assert ordinal_of("web", {"metadata": {"name": "web-12"}}) == 12
    assert ordinal_of("web", {"metadata": {"name": "web-01"}}) is None  # not a name the set would give
    assert ordinal_of("web", {"metadata": {"name": "web-x"}}) is None
    assert ordinal_of("web", {"metadata": {"name": "webby-1"}}) is None
    assert claim_name({"metadata": {"name": "www"}}, "web", 2) == "www-web-2"


# --- history --------------------------------------------------------------------------------------
def test_revision_data_hash_and_template() -> None:
    owner = {"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}}
    data = template_patch(owner)
    assert data["spec"]["template"]["$patch"] == "replace"
    assert revision_template({"data": data}) == owner["spec"]["template"]
    first = revision_hash(data)
    assert first == revision_hash(template_patch(owner))  # stable
    assert first != revision_hash(data, collision_count=1)
    assert len(first) == 10 and all(ch in "bcdfghjklmnpqrstvwxz2456789" for ch in first)


# --- bookkeeping ----------------------------------------------------------------------------------
def test_expectations() -> None:
    clock = [0.0]
    exp = Expectations(timeout=10, clock=lambda: clock[0])
    assert exp.satisfied("ns/a")
    exp.expect("ns/a", adds=2, deletes=["ns/p1"])
    assert not exp.satisfied("ns/a")
    exp.created("ns/a")
    exp.created("ns/a")
    assert not exp.satisfied("ns/a")
    exp.deleted("ns/a", "ns/p1")
    assert exp.satisfied("ns/a")
    exp.expect("ns/b", adds=1)
    clock[0] = 11
    assert exp.satisfied("ns/b")  # a lost event does not wedge the controller


def test_own_writes() -> None:
    clock = [0.0]
    writes = OwnWrites(timeout=5, clock=lambda: clock[0])
    writes.wrote("ns/j", {"metadata": {"resourceVersion": "7"}})
    assert writes.pending("ns/j")
    writes.seen("ns/j", {"metadata": {"resourceVersion": "6"}})
    assert writes.pending("ns/j")
    writes.seen("ns/j", {"metadata": {"resourceVersion": "7"}})
    assert not writes.pending("ns/j")
    writes.wrote("ns/j", {"metadata": {"resourceVersion": "9"}})
    clock[0] = 6
    assert not writes.pending("ns/j")


def test_set_condition_moves_transition_time_only_on_change() -> None:
    from datetime import UTC, datetime

    status: Obj = {}
    t1, t2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    assert set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", t1)
    assert not set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", t2)
    assert set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", t2)
    assert status["conditions"][0]["lastTransitionTime"] == "2024-01-02T00:00:00Z"


def test_next_available_waits_for_min_ready_seconds() -> None:
    from datetime import UTC, datetime

    from skiff.controllers.workloads import next_available

    at = datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)

    def pod(ready_since: str | None) -> Obj:
        conditions = [] if ready_since is None else [
            {"type": "Ready", "status": "True", "lastTransitionTime": ready_since}]  # fmt: skip
        return {"status": {"conditions": conditions}}

    pods = [pod("2024-01-01T00:00:00Z"), pod("2024-01-01T00:00:08Z"), pod(None)]
    assert next_available(pods, 5, at) == pytest.approx(3.1)  # the second is available at :13
    assert next_available(pods, 0, at) is None
    assert next_available([pod("2024-01-01T00:00:00Z")], 5, at) is None  # available already


def test_own_writes_seen_before_the_response() -> None:
    writes = OwnWrites()
    writes.seen("ns/j", {"metadata": {"resourceVersion": "11"}})  # the watch was faster than the PUT's answer
    writes.wrote("ns/j", {"metadata": {"resourceVersion": "11"}})
    assert not writes.pending("ns/j")
    writes.forget("ns/j")
    writes.wrote("ns/j", {"metadata": {"resourceVersion": "11"}})
    assert writes.pending("ns/j")


# --- Job podFailurePolicy ------------------------------------------------------------------------
def failed_pod(exit_code: int, container: str = "main", conditions: list[Obj] | None = None) -> Obj:
    return {
        "metadata": {"namespace": "ns", "name": "p"},
        "status": {
            "phase": "Failed",
            "conditions": conditions or [],
            "containerStatuses": [{"name": container, "state": {"terminated": {"exitCode": exit_code}}}],
        },
    }


@pytest.mark.parametrize(
    ("rules", "pod", "action"),
    [
        ([{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}], failed_pod(42), "FailJob"),
        ([{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}], failed_pod(1), None),
        ([{"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}}], failed_pod(3), "Ignore"),
        ([{"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1]}}], failed_pod(0), None),
        ([{"action": "Count", "onExitCodes": {"containerName": "side", "operator": "In", "values": [1]}}],
         failed_pod(1), None),
        ([{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
          {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}}],
         failed_pod(1, conditions=[{"type": "DisruptionTarget", "status": "True"}]), "Ignore"),  # first rule wins
    ],
)  # fmt: skip
def test_pod_failure_policy(rules: list[Obj], pod: Obj, action: str | None) -> None:
    from skiff.controllers.job import match_pod_failure_policy

    found, message = match_pod_failure_policy({"rules": rules}, pod)
    assert found == action
    if found == "FailJob":
        assert message == "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"

"""The simulated kubelet's pod status state machine (skiff.node.simulated_pods), on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skiff.node.simulated import PodIPs, SimNode
from skiff.node.simulated_pods import Placement, next_status, restart_backoff, script_of

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PLACE = Placement(host_ip="198.18.0.2", pod_ip="10.128.0.2")


def pod(annotations: dict[str, str] | None = None, restart: str = "Always", init: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": restart, "containers": [{"name": "app", "image": "img:1"}]}
    if init:
        spec["initContainers"] = [{"name": "setup", "image": "init:1"}]
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations or {}},
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort",
                   "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "x"}]},
    }


def step(p: dict[str, Any], at: datetime) -> tuple[dict[str, Any], float | None]:
    status, wake = next_status(p, PLACE, at)
    p["status"] = status
    return status, wake


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_plain_pod_runs_ready_and_stays_put() -> None:
    p = pod(init=True)
    status, wake = step(p, T0)
    assert wake is None
    assert status["phase"] == "Running" and status["podIP"] == PLACE.pod_ip and status["hostIP"] == PLACE.host_ip
    assert status["startTime"] == "2026-01-01T12:00:00Z"
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    assert all(c["status"] == "True" for c in status["conditions"])
    assert cond(status, "PodScheduled")["lastTransitionTime"] == "x"  # kept from the binding
    (cs,) = status["containerStatuses"]
    assert cs["ready"] and cs["started"] and cs["state"] == {"running": {"startedAt": "2026-01-01T12:00:00Z"}}
    assert cs["containerID"].startswith("simulated://") and cs["imageID"].startswith("img:1@sha256:")
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    again, _ = next_status(p, PLACE, T0 + timedelta(minutes=5))
    assert again == status  # nothing changes: no write


@pytest.mark.parametrize(("restart", "phase"), [("Never", "Succeeded"), ("OnFailure", "Succeeded")])
def test_complete_after_succeeds(restart: str, phase: str) -> None:
    p = pod({"sim.skiff.dev/complete-after": "2s"}, restart)
    _, wake = step(p, T0)
    assert wake == 2.0
    status, wake = step(p, T0 + timedelta(seconds=2))
    assert status["phase"] == phase and wake is None
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert cond(status, "Ready") ["reason"] == "PodCompleted"
    assert next_status(p, PLACE, T0 + timedelta(hours=1)) == (status, None)  # terminal


def test_fail_after_with_never_fails() -> None:
    p = pod({"sim.skiff.dev/fail-after": "1s"}, "Never")
    step(p, T0)
    status, _ = step(p, T0 + timedelta(seconds=1))
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    assert cond(status, "Ready")["reason"] == "PodFailed"


def test_fail_after_with_always_crash_loops_with_backoff() -> None:
    p = pod({"sim.skiff.dev/fail-after": "1s"})
    step(p, T0)
    status, wake = step(p, T0 + timedelta(seconds=1))
    cs = status["containerStatuses"][0]
    assert status["phase"] == "Running" and cs["restartCount"] == 1 and wake == 10.0
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off 10s restarting failed container=app pod=p_ns(u1)" == cs["state"]["waiting"]["message"]
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cond(status, "Ready")["status"] == "False"
    status, wake = step(p, T0 + timedelta(seconds=11))  # back-off over: runs again
    assert "running" in status["containerStatuses"][0]["state"] and wake == 1.0
    status, wake = step(p, T0 + timedelta(seconds=12))  # and fails again: the back-off doubles
    assert status["containerStatuses"][0]["restartCount"] == 2 and wake == 20.0


def test_not_ready_annotation() -> None:
    status, _ = step(pod({"sim.skiff.dev/not-ready": "true"}), T0)
    assert status["phase"] == "Running"
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "ContainersReady")["message"] == "containers with unready status: [app]"
    assert status["containerStatuses"][0]["started"] and not status["containerStatuses"][0]["ready"]


def test_conditions_written_by_others_are_kept_and_transition_times_stable() -> None:
    p = pod()
    status, _ = step(p, T0)
    status["conditions"].append({"type": "DisruptionTarget", "status": "True"})
    later, _ = next_status(p, PLACE, T0 + timedelta(seconds=30))
    assert cond(later, "DisruptionTarget")["status"] == "True"
    assert cond(later, "Ready")["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_scripts_and_backoff() -> None:
    assert script_of(pod({"sim.skiff.dev/complete-after": "1m30s"})).exit_after == 90.0
    assert script_of(pod({"sim.skiff.dev/fail-after": "nonsense"})).exit_after is None
    assert [restart_backoff(n) for n in (1, 2, 3, 6, 10)] == [10.0, 20.0, 40.0, 300.0, 300.0]


def test_node_addresses_and_pod_ips() -> None:
    a, b = SimNode.make("sim", 0), SimNode.make("sim", 1)
    assert a.name == "sim-0" and a.ip != b.ip and a.pod_cidr != b.pod_cidr
    assert a.ip.startswith("198.1") and a.pod_cidr.startswith("10.") and a.pod_cidr.endswith(".0/24")
    ips = PodIPs(a.pod_cidr)
    first, second = ips.get("u1"), ips.get("u2")
    assert first != second and ips.get("u1") == first
    ips.release("u1")
    assert ips.get("u3") != second
    ips.claim("u4", second)
    assert ips.get("u4") == second

"""Pod status from observed containers: phases, conditions, container states as the kubelet writes them."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.node.agent.podstatus import Attempt, Observation, compute_status

NOW = "2026-01-01T00:00:00Z"


def pod(restart: str = "Always", init: int = 0, containers: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {
            "restartPolicy": restart,
            "initContainers": [{"name": f"i{n}", "image": "busybox"} for n in range(init)],
            "containers": [{"name": f"c{n}", "image": "busybox"} for n in range(containers)],
        },
    }


def run(name: str, attempt: int = 0, **kw: Any) -> Attempt:
    return Attempt(id=f"{name}-{attempt}", name=name, attempt=attempt, state="running", started_at=100.0,
                   image="busybox", image_id="busybox@sha256:1", **kw)  # fmt: skip


def done(name: str, code: int, attempt: int = 0, reason: str = "") -> Attempt:
    return Attempt(id=f"{name}-{attempt}", name=name, attempt=attempt, state="exited", exit_code=code,
                   reason=reason, started_at=100.0, finished_at=101.0)  # fmt: skip


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_nothing_started_yet_is_pending_container_creating() -> None:
    status = compute_status(pod(), Observation(sandbox_ready=True, pod_ip="10.0.0.2", host_ip="h"), now=NOW)
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["podIP"] == "10.0.0.2" and status["podIPs"] == [{"ip": "10.0.0.2"}] and status["hostIP"] == "h"
    assert cond(status, "PodReadyToStartContainers")["status"] == "True"
    assert cond(status, "Ready") == {"type": "Ready", "status": "False", "lastProbeTime": None,
                                     "reason": "ContainersNotReady", "lastTransitionTime": NOW,
                                     "message": "containers with unready status: [c0]"}  # fmt: skip


def test_running_is_ready() -> None:
    status = compute_status(pod(), Observation(attempts=[run("c0")], sandbox_ready=True), now=NOW)
    cs = status["containerStatuses"][0]
    assert status["phase"] == "Running"
    assert cs["state"] == {"running": {"startedAt": "1970-01-01T00:01:40Z"}}
    assert cs["ready"] and cs["started"] and cs["containerID"] == "runc://c0-0"
    assert cs["imageID"] == "busybox@sha256:1" and cs["restartCount"] == 0 and cs["lastState"] == {}
    assert all(c["status"] == "True" for c in status["conditions"])


def test_crash_loop_shows_waiting_with_last_termination() -> None:
    msg = "back-off 10s restarting failed container=c0 pod=p_ns(u)"
    obs = Observation(attempts=[done("c0", 1, attempt=0), done("c0", 2, attempt=1)],
                      waiting={"c0": ("CrashLoopBackOff", msg)}, sandbox_ready=True)  # fmt: skip
    status = compute_status(pod(), obs, now=NOW)
    cs = status["containerStatuses"][0]
    assert status["phase"] == "Running"  # restartPolicy Always: the pod keeps running
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
    assert cs["lastState"]["terminated"]["exitCode"] == 2 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert cs["restartCount"] == 1 and not cs["ready"]


def test_restarted_container_shows_previous_as_last_state() -> None:
    obs = Observation(attempts=[done("c0", 137, 0, "OOMKilled"), run("c0", 1)], sandbox_ready=True)
    cs = compute_status(pod(), obs, now=NOW)["containerStatuses"][0]
    assert "running" in cs["state"] and cs["restartCount"] == 1
    assert cs["lastState"]["terminated"]["reason"] == "OOMKilled"


@pytest.mark.parametrize(
    ("restart", "codes", "phase"),
    [("Never", [0], "Succeeded"), ("Never", [1], "Failed"), ("OnFailure", [0], "Succeeded"),
     ("Never", [0, 1], "Failed"), ("Always", [0], "Running")],
)  # fmt: skip
def test_terminal_phases(restart: str, codes: list[int], phase: str) -> None:
    attempts = [done(f"c{n}", code) for n, code in enumerate(codes)]
    status = compute_status(pod(restart, containers=len(codes)), Observation(attempts=attempts), now=NOW)
    assert status["phase"] == phase
    if phase in ("Succeeded", "Failed"):
        assert cond(status, "Ready")["reason"] == "PodCompleted"
        assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == (
            "Completed" if codes[0] == 0 else "Error"
        )


def test_init_containers_gate_the_pod() -> None:
    obs = Observation(attempts=[done("i0", 0), run("i1")], sandbox_ready=True)
    status = compute_status(pod(init=2), obs, now=NOW)
    assert status["phase"] == "Pending"
    assert cond(status, "Initialized")["message"] == "containers with incomplete status: [i1]"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    inits = status["initContainerStatuses"]
    assert inits[0]["state"]["terminated"]["reason"] == "Completed" and inits[0]["ready"]
    assert "running" in inits[1]["state"]


def test_failed_init_container_with_restart_never_fails_the_pod() -> None:
    status = compute_status(pod("Never", init=1), Observation(attempts=[done("i0", 1)]), now=NOW)
    assert status["phase"] == "Failed"
    assert cond(status, "Initialized")["status"] == "False"


def test_image_pull_errors_carry_the_message() -> None:
    obs = Observation(waiting={"c0": ("ErrImagePull", "manifest unknown")}, sandbox_ready=True)
    cs = compute_status(pod(), obs, now=NOW)["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}
    assert cs["imageID"] == "" and cs["restartCount"] == 0


def test_transition_times_move_only_on_change() -> None:
    p = pod()
    first = compute_status(p, Observation(attempts=[run("c0")], sandbox_ready=True), now="T1")
    p["status"] = first
    second = compute_status(p, Observation(attempts=[run("c0")], sandbox_ready=True), now="T2")
    assert {c["lastTransitionTime"] for c in second["conditions"]} == {"T1"}
    third = compute_status(p, Observation(attempts=[done("c0", 1)], waiting={"c0": ("CrashLoopBackOff", "m")},
                                          sandbox_ready=True), now="T3")  # fmt: skip
    assert cond(third, "Ready")["lastTransitionTime"] == "T3"
    assert cond(third, "Initialized")["lastTransitionTime"] == "T1"
    assert third["startTime"] == first["startTime"] == "T1"


def test_conditions_of_others_are_kept() -> None:
    p = pod()
    p["status"] = {"conditions": [{"type": "example.com/gate", "status": "True"}], "qosClass": "BestEffort"}
    status = compute_status(p, Observation(), now=NOW)
    assert {"type": "example.com/gate", "status": "True"} in status["conditions"]
    assert status["qosClass"] == "BestEffort"


def test_readiness_gates_hold_ready_back() -> None:
    p = pod()
    p["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/db"}]
    p["status"] = {"conditions": [{"type": "example.com/db", "status": "False"}]}
    status = compute_status(p, Observation(attempts=[run("c0")], sandbox_ready=True), now=NOW)
    assert cond(status, "ContainersReady")["status"] == "True"
    ready = cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    assert ready["message"] == (
        'corresponding condition of pod readiness gate "example.com/lb" does not exist., '
        'the status of pod readiness gate "example.com/db" is not "True", but False'
    )
    p["status"]["conditions"] = [
        {"type": "example.com/db", "status": "True"},
        {"type": "example.com/lb", "status": "True"},
    ]
    assert (
        cond(compute_status(p, Observation(attempts=[run("c0")], sandbox_ready=True), now=NOW), "Ready")["status"]
        == "True"
    )


def test_a_pod_reason_and_message() -> None:
    obs = Observation(attempts=[done("c0", 137)], terminal="Failed", reason="DeadlineExceeded", message="late")
    status = compute_status(pod(), obs, now=NOW)
    assert (status["phase"], status["reason"], status["message"]) == ("Failed", "DeadlineExceeded", "late")

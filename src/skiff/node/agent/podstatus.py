"""A pod's status from what the agent observed: pure logic, as the kubelet's `generateAPIPodStatus`.

Inputs are plain values: the containers the runtime has for the pod (every attempt of every
container), what the last sync could not do per container (a waiting reason and message such
as `ErrImagePull` or `CrashLoopBackOff`), the sandbox's IP and the node's. Output is the
`status` dict the agent patches: phase (`getPhase`), conditions (PodReadyToStartContainers,
Initialized, ContainersReady, Ready — held back by readinessGates —, PodScheduled), IPs,
startTime, and the container statuses with state, lastState, restartCount, ready, started (as
the probes say, see `prober.py`), image, imageID and containerID `runc://<id>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

RUNNING, EXITED, CREATED = "running", "exited", "created"
KUBELET_CONDITIONS = frozenset({"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"})


@dataclass(frozen=True)
class Attempt:
    """One container the runtime ran (or made) for a pod; `attempt` is its restart count."""

    id: str
    name: str
    attempt: int
    state: str  # running, exited, created, unknown
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    image: str = ""
    image_id: str = ""


@dataclass(frozen=True)
class Observation:
    """All that the status of one pod is computed from."""

    attempts: Sequence[Attempt] = ()
    waiting: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # container -> (reason, message)
    sandbox_ready: bool = False
    pod_ip: str = ""
    host_ip: str = ""
    start_time: str = ""
    terminal: str = ""  # a phase already reached and final: Succeeded or Failed
    reason: str = ""  # the pod's, e.g. DeadlineExceeded
    message: str = ""
    probes: Mapping[str, tuple[bool, bool]] = field(default_factory=dict)  # container ID -> (started, ready)


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def latest(attempts: Iterable[Attempt], name: str) -> list[Attempt]:
    """A container's attempts, newest first."""
    return sorted((a for a in attempts if a.name == name), key=lambda a: a.attempt, reverse=True)


def terminated(a: Attempt) -> Obj:
    out: Obj = {
        "exitCode": a.exit_code if a.exit_code is not None else 0,
        "reason": a.reason or ("Completed" if not a.exit_code else "Error"),
        "startedAt": rfc3339(a.started_at),
        "finishedAt": rfc3339(a.finished_at),
    }
    if a.id:  # a start that failed has no container
        out["containerID"] = f"runc://{a.id}"
    if a.message:
        out["message"] = a.message
    return out


def container_status(spec: Obj, attempts: Sequence[Attempt], waiting: tuple[str, str] | None, default_wait: str,
                     probes: Mapping[str, tuple[bool, bool]] | None = None) -> Obj:  # fmt: skip
    """One entry of containerStatuses; `attempts` newest first; `default_wait` when nothing ran yet; `probes`
    the (started, ready) of containers that have startup or readiness probes, by container ID."""
    name = spec.get("name", "")
    status: Obj = {"name": name, "image": spec.get("image", ""), "imageID": "", "ready": False,
                   "started": False, "restartCount": 0, "state": {}, "lastState": {}}  # fmt: skip
    last = attempts[0] if attempts else None
    if last is not None:
        status["restartCount"] = last.attempt
        status["imageID"] = last.image_id
        if last.id:
            status["containerID"] = f"runc://{last.id}"
    previous = attempts[1] if len(attempts) > 1 else None
    if last is not None and last.state == RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(last.started_at)}}
        status["started"], status["ready"] = (probes or {}).get(last.id, (True, True))
        if previous is not None and previous.state == EXITED:
            status["lastState"] = {"terminated": terminated(previous)}
    elif last is not None and last.state == EXITED and waiting is None:
        status["state"] = {"terminated": terminated(last)}
        if previous is not None and previous.state == EXITED:
            status["lastState"] = {"terminated": terminated(previous)}
    else:
        reason, message = waiting or (default_wait, "")
        status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if last is not None and last.state == EXITED:
            status["lastState"] = {"terminated": terminated(last)}
        elif previous is not None and previous.state == EXITED:
            status["lastState"] = {"terminated": terminated(previous)}
    return status


def init_progress(spec: Obj, obs: Observation) -> tuple[bool, bool, list[str]]:
    """(initialized, failed, names not done) of the pod's init containers."""
    restart = spec.get("restartPolicy", "Always")
    pending: list[str] = []
    failed = False
    for c in spec.get("initContainers") or []:
        attempts = latest(obs.attempts, c["name"])
        last = attempts[0] if attempts else None
        if last is not None and last.state == EXITED and last.exit_code == 0:
            continue
        pending.append(c["name"])
        if last is not None and last.state == EXITED and restart == "Never":
            failed = True
    return not pending, failed, pending


def phase(spec: Obj, statuses: Sequence[Obj], obs: Observation) -> str:
    """The kubelet's `getPhase`."""
    if obs.terminal:
        return obs.terminal
    initialized, init_failed, _ = init_progress(spec, obs)
    restart = spec.get("restartPolicy", "Always")
    if init_failed:
        return "Failed"
    running = waiting = stopped = succeeded = 0
    for st in statuses:
        state = st.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"].get("exitCode") == 0
        elif "terminated" in (st.get("lastState") or {}):
            stopped += 1
        else:
            waiting += 1
    if not initialized or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(type_: str, ok: bool, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": type_, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def gate_messages(spec: Obj, current: Iterable[Obj]) -> list[str]:
    """Why the pod's readinessGates hold Ready back (the kubelet's messages), empty when they do not."""
    have = {c.get("type"): c.get("status") for c in current}
    out = []
    for gate in spec.get("readinessGates") or []:
        kind = gate.get("conditionType", "")
        if kind not in have:
            out.append(f'corresponding condition of pod readiness gate "{kind}" does not exist.')
        elif have[kind] != "True":
            out.append(f'the status of pod readiness gate "{kind}" is not "True", but {have[kind]}')
    return out


def conditions(
    spec: Obj, statuses: Sequence[Obj], pod_phase: str, obs: Observation, current: Iterable[Obj] = ()
) -> list[Obj]:
    initialized, _, pending = init_progress(spec, obs)
    if pod_phase in ("Succeeded", "Failed"):
        initialized = initialized or pod_phase == "Succeeded"
    unready = [s["name"] for s in statuses if not s.get("ready")]
    completed = pod_phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if completed else "ContainersNotReady"
    ready_msg = "" if completed else f"containers with unready status: [{' '.join(unready)}]"
    containers_ready = not unready and not completed
    ready = _condition("Ready", containers_ready, ready_reason, ready_msg)
    gates = gate_messages(spec, current) if containers_ready else []
    if gates:
        ready = _condition("Ready", False, "ReadinessGatesNotReady", ", ".join(gates))
    return [
        _condition("PodReadyToStartContainers", obs.sandbox_ready and not completed),
        _condition("Initialized", initialized, "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(pending)}]"),
        ready,
        _condition("ContainersReady", not unready and not completed, ready_reason, ready_msg),
        _condition("PodScheduled", True),
    ]  # fmt: skip


def keep_transitions(new: list[Obj], old: Iterable[Obj], now: str) -> list[Obj]:
    """lastTransitionTime moves only when a condition's status changes; other conditions are kept."""
    before = {c.get("type"): c for c in old}
    out = []
    for cond in new:
        prev = before.pop(cond["type"], None)
        same = prev is not None and prev.get("status") == cond["status"]
        cond["lastTransitionTime"] = (prev or {}).get("lastTransitionTime") if same else now
        if cond["lastTransitionTime"] is None:
            cond["lastTransitionTime"] = now
        out.append(cond)
    out.extend(before.values())  # readiness gates and others the agent does not own
    return out


def compute_status(pod: Obj, obs: Observation, *, now: str) -> Obj:
    """The pod's whole `status` (the fields the kubelet owns), from `obs`; `now` as RFC 3339."""
    spec = pod.get("spec") or {}
    old = pod.get("status") or {}
    initialized, _, _ = init_progress(spec, obs)
    init_statuses = [
        container_status(c, latest(obs.attempts, c["name"]), obs.waiting.get(c["name"]), "PodInitializing")
        for c in spec.get("initContainers") or []
    ]
    for st in init_statuses:  # an init container that finished is not "ready" but has done its part
        st["ready"] = "terminated" in st["state"] and st["state"]["terminated"].get("exitCode") == 0
    default_wait = "ContainerCreating" if initialized else "PodInitializing"
    statuses = [
        container_status(c, latest(obs.attempts, c["name"]), obs.waiting.get(c["name"]), default_wait, obs.probes)
        for c in spec.get("containers") or []
    ]
    pod_phase = phase(spec, statuses, obs)
    status: Obj = {
        "phase": pod_phase,
        "conditions": keep_transitions(
            conditions(spec, statuses, pod_phase, obs, old.get("conditions") or []), old.get("conditions") or [], now
        ),
        "hostIP": obs.host_ip,
        "hostIPs": [{"ip": obs.host_ip}] if obs.host_ip else [],
        "startTime": old.get("startTime") or obs.start_time or now,
        "containerStatuses": statuses,
    }
    if obs.pod_ip:
        status["podIP"] = obs.pod_ip
        status["podIPs"] = [{"ip": obs.pod_ip}]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    if obs.reason:
        status["reason"], status["message"] = obs.reason, obs.message
    if old.get("qosClass"):
        status["qosClass"] = old["qosClass"]
    return status

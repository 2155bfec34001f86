"""What a simulated node reports for a pod: the kubelet's status, without containers.

A simulated node (see `skiff.node.simulated`) never runs anything, yet the
rest of the cluster must see what a kubelet would report: phase Running, the
PodScheduled/Initialized/ContainersReady/Ready conditions, an IP, container
statuses with ids and start times. Annotations let a test script a pod's
life, so that Jobs can complete and controllers can be seen healing:

- `sim.skiff.dev/complete-after: "2s"`: every container exits 0 after that
  long (restartPolicy Never/OnFailure: the pod Succeeds);
- `sim.skiff.dev/fail-after: "2s"`: every container exits 1 after that long
  (Never: the pod Fails; OnFailure/Always: restartCount goes up and the
  container waits in CrashLoopBackOff with the kubelet's back-off, 10 s
  doubling to 5 min, then runs again);
- `sim.skiff.dev/not-ready: "true"`: Running but never Ready.

`next_status` is a pure function of the pod and the clock: the state machine
reads its state back from `pod.status` (no memory in the simulator), so a
restarted simulator carries on where the last one stopped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from skiff.api.durations import parse_duration

Obj = dict[str, Any]

COMPLETE_AFTER = "sim.skiff.dev/complete-after"
FAIL_AFTER = "sim.skiff.dev/fail-after"
NOT_READY = "sim.skiff.dev/not-ready"
BACKOFF_INITIAL = 10.0  # kubelet's container restart back-off
BACKOFF_MAX = 300.0
TERMINAL_PHASES = ("Succeeded", "Failed")


def fmt_time(t: datetime) -> str:
    """A meta/v1 Time (seconds precision, UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def restart_backoff(restarts: int) -> float:
    """The kubelet's wait before restarting a container that exited `restarts` times (10 s doubling, ≤ 5 min)."""
    return float(min(BACKOFF_INITIAL * 2.0 ** max(restarts - 1, 0), BACKOFF_MAX))


@dataclass(frozen=True)
class Script:
    """What the pod's annotations ask of its containers."""

    exit_after: float | None = None  # seconds a container runs before exiting
    exit_code: int = 0
    not_ready: bool = False


def script_of(pod: Obj) -> Script:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    not_ready = str(annotations.get(NOT_READY, "")).lower() == "true"
    for key, code in ((FAIL_AFTER, 1), (COMPLETE_AFTER, 0)):
        if key in annotations:
            try:
                after = max(parse_duration(str(annotations[key])), 0.0)
            except ValueError:
                continue  # an unreadable annotation is ignored, as unknown annotations are
            return Script(exit_after=after, exit_code=code, not_ready=not_ready)
    return Script(not_ready=not_ready)


def image_id(image: str) -> str:
    if "@sha256:" in image:
        return image
    return f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def container_id(pod_uid: str, name: str, restarts: int) -> str:
    return "simulated://" + hashlib.sha256(f"{pod_uid}/{name}/{restarts}".encode()).hexdigest()


def _condition(old: list[Obj], type_: str, status: str, now: str, reason: str | None = None) -> Obj:
    """A pod condition keeping its lastTransitionTime while its status stays the same."""
    prev = next((c for c in old if c.get("type") == type_), None)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
    cond: Obj = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": since or now}
    if reason:
        cond["reason"] = reason
    return cond


@dataclass(frozen=True)
class Placement:
    """Where the pod runs: the node's IP and the pod's IP (the node's for hostNetwork pods)."""

    host_ip: str
    pod_ip: str


def next_status(pod: Obj, placement: Placement, now: datetime) -> tuple[Obj, float | None]:
    """The status the kubelet would report now, and in how many seconds it changes next (None: never)."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    old: Obj = pod.get("status") or {}
    if old.get("phase") in TERMINAL_PHASES:
        return old, None
    uid = str(meta.get("uid", ""))
    script = script_of(pod)
    policy = spec.get("restartPolicy", "Always")
    stamp = fmt_time(now)
    containers = spec.get("containers") or []
    old_statuses = {s.get("name"): s for s in old.get("containerStatuses") or []}
    first = old_statuses.get(containers[0].get("name")) if containers else None

    started = parse_time(old.get("startTime")) if old.get("phase") == "Running" else None
    start_stamp = old.get("startTime") if started else stamp
    restarts = int((first or {}).get("restartCount", 0))
    state: Obj = (first or {}).get("state") or {}
    last_state: Obj = (first or {}).get("lastState") or {}
    running_since = parse_time((state.get("running") or {}).get("startedAt")) if started else None
    phase, wake = "Running", None
    if started is None:  # first report: containers start now
        running_since, state, last_state = now, {"running": {"startedAt": stamp}}, {}
    if running_since is not None and script.exit_after is not None:
        exits_at = running_since + timedelta(seconds=script.exit_after)
        if now >= exits_at:
            terminated = {
                "exitCode": script.exit_code,
                "reason": "Completed" if script.exit_code == 0 else "Error",
                "startedAt": fmt_time(running_since),
                "finishedAt": stamp,
            }
            if policy == "Never" or (policy == "OnFailure" and script.exit_code == 0):
                phase = "Succeeded" if script.exit_code == 0 else "Failed"
                state, running_since = {"terminated": terminated}, None
            else:
                restarts += 1
                last_state, running_since = {"terminated": terminated}, None
                state = {"waiting": {"reason": "CrashLoopBackOff"}}
                wake = restart_backoff(restarts)
        else:
            wake = (exits_at - now).total_seconds()
    elif running_since is None and "waiting" in state:  # in back-off: run again once it is over
        finished = parse_time((last_state.get("terminated") or {}).get("finishedAt")) or now
        resume = finished + timedelta(seconds=restart_backoff(restarts))
        if now >= resume:
            running_since, state = now, {"running": {"startedAt": stamp}}
            wake = script.exit_after
        else:
            wake = (resume - now).total_seconds()

    running = running_since is not None
    ready = running and not script.not_ready
    statuses = []
    for c in containers:
        name = c.get("name", "")
        c_state: Obj = dict(state)
        if "terminated" in c_state:
            c_state = {"terminated": {**c_state["terminated"], "containerID": container_id(uid, name, restarts)}}
        elif "waiting" in c_state:
            back = int(restart_backoff(restarts))
            who = f"{meta.get('name')}_{meta.get('namespace')}({uid})"
            message = f"back-off {back}s restarting failed container={name} pod={who}"
            c_state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        c_last: Obj = {}
        if "terminated" in last_state:
            c_last = {"terminated": {**last_state["terminated"], "containerID": container_id(uid, name, restarts - 1)}}
        statuses.append(
            {
                "name": name,
                "state": c_state,
                "lastState": c_last,
                "ready": ready,
                "restartCount": restarts,
                "image": c.get("image", ""),
                "imageID": image_id(str(c.get("image", ""))),
                "containerID": container_id(uid, name, restarts),
                "started": running,
            }
        )
    init_statuses = [
        {
            "name": c.get("name", ""),
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": start_stamp,
                    "finishedAt": start_stamp,
                    "containerID": container_id(uid, c.get("name", ""), 0),
                }
            },
            "lastState": {},
            "ready": True,
            "restartCount": 0,
            "image": c.get("image", ""),
            "imageID": image_id(str(c.get("image", ""))),
            "containerID": container_id(uid, c.get("name", ""), 0),
            "started": False,
        }
        for c in spec.get("initContainers") or []
    ]

    old_conds: list[Obj] = old.get("conditions") or []
    terminal_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase)
    not_ready_reason = terminal_reason or ("ContainersNotReady" if not ready else None)
    conditions = [
        _condition(old_conds, "PodReadyToStartContainers", "False" if terminal_reason else "True", stamp),
        _condition(old_conds, "Initialized", "True", stamp, terminal_reason),
        _condition(old_conds, "Ready", "True" if ready else "False", stamp, not_ready_reason),
        _condition(old_conds, "ContainersReady", "True" if ready else "False", stamp, not_ready_reason),
        _condition(old_conds, "PodScheduled", "True", stamp),
    ]
    if not ready and not terminal_reason:
        unready = " ".join(c.get("name", "") for c in containers)
        for cond in conditions[2:4]:
            cond["message"] = f"containers with unready status: [{unready}]"
    # conditions written by others (DisruptionTarget, readiness gates...) are kept
    ours = {c["type"] for c in conditions}
    conditions.extend(c for c in old_conds if c.get("type") not in ours)

    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": placement.host_ip,
        "hostIPs": [{"ip": placement.host_ip}],
        "podIP": placement.pod_ip,
        "podIPs": [{"ip": placement.pod_ip}],
        "startTime": start_stamp,
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass", "BestEffort"),
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    return status, wake

"""Container probes as values, and the kubelet's rules for their results: pure logic, no I/O.

A container's `livenessProbe`, `readinessProbe` and `startupProbe` become `ProbeSpec`s with the
API's defaults (period 10 s, timeout 1 s, success threshold 1, failure threshold 3). A `Tracker`
is one prober worker's result: it starts at the kubelet's initial value (liveness Success,
readiness Failure, startup Unknown) and changes only after `successThreshold` successes or
`failureThreshold` failures in a row (a probe that could not run at all counts for neither); a
liveness or startup failure puts the worker on hold until its container is replaced.
`container_probe_state` says, as the kubelet's `UpdatePodStatus`, whether a container counts as
started and ready. `http_target` and `resolve_port` turn an
httpGet or tcpSocket action into where to connect (port by number or by the container's port
name, host defaulting to the pod IP, httpHeaders with the kubelet's User-Agent and Accept).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.node.simulated import KUBELET_VERSION

Obj = dict[str, Any]

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
FIELDS = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}
ACTIONS = ("exec", "httpGet", "tcpSocket", "grpc")
_MINOR = ".".join(KUBELET_VERSION.lstrip("v").split(".")[:2])
PROBE_AGENT = f"kube-probe/{_MINOR}"
LIFECYCLE_AGENT = f"kube-lifecycle/{_MINOR}"


class Result(enum.StrEnum):
    SUCCESS = "Success"
    FAILURE = "Failure"
    UNKNOWN = "Unknown"


class ActionError(Exception):
    """The action cannot even be tried (a port name the container does not declare, no handler...)."""


INITIAL = {LIVENESS: Result.SUCCESS, READINESS: Result.FAILURE, STARTUP: Result.UNKNOWN}


@dataclass(frozen=True, kw_only=True)
class ProbeSpec:
    """One probe of one container, defaults filled in."""

    kind: str  # liveness, readiness, startup
    action: Obj = field(default_factory=dict)  # {"exec": {...}} or {"httpGet": {...}} ...
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: int | None = None  # the probe's terminationGracePeriodSeconds

    @property
    def label(self) -> str:
        """`Liveness`, `Readiness`, `Startup`: how events name the probe."""
        return self.kind.capitalize()


def _number(probe: Obj, key: str, default: float, minimum: float) -> float:
    value = probe.get(key)
    try:
        return max(float(value), minimum) if value is not None else default
    except (TypeError, ValueError):
        return default


def probe_specs(container: Obj) -> list[ProbeSpec]:
    """The container's probes (startup first), with Kubernetes' defaults and minimums."""
    out = []
    for kind in (STARTUP, LIVENESS, READINESS):
        probe = container.get(FIELDS[kind])
        if not isinstance(probe, dict):
            continue
        grace = probe.get("terminationGracePeriodSeconds")
        out.append(ProbeSpec(
            kind=kind,
            action={k: probe[k] for k in ACTIONS if probe.get(k) is not None},
            initial_delay=_number(probe, "initialDelaySeconds", 0.0, 0.0),
            period=_number(probe, "periodSeconds", 10.0, 1.0),
            timeout=_number(probe, "timeoutSeconds", 1.0, 1.0),
            success_threshold=int(_number(probe, "successThreshold", 1, 1)),
            failure_threshold=int(_number(probe, "failureThreshold", 3, 1)),
            termination_grace=int(grace) if isinstance(grace, int) else None,
        ))  # fmt: skip
    return out


class Tracker:
    """The result of one probe worker (the kubelet's worker.go thresholds)."""

    def __init__(self, spec: ProbeSpec, initial: Result | None = None) -> None:
        self.spec = spec
        self.result = initial if initial is not None else INITIAL[spec.kind]
        self.last: Result | None = None
        self.run = 0
        self.on_hold = False

    def observe(self, result: Result) -> bool:
        """Count one probe's outcome; True when the worker's result changed."""
        if self.on_hold or result == Result.UNKNOWN:  # the kubelet's worker throws away a probe that errored
            return False
        if result == self.last:
            self.run += 1
        else:
            self.last, self.run = result, 1
        threshold = self.spec.failure_threshold if result == Result.FAILURE else self.spec.success_threshold
        if self.run < threshold:
            return False
        changed = result != self.result
        self.result = result
        if result == Result.FAILURE and self.spec.kind in (LIVENESS, STARTUP):
            self.on_hold, self.run = True, 0  # until the container is replaced
        return changed


def container_probe_state(
    running: bool, results: Mapping[str, Result], has: Mapping[str, bool] | None = None
) -> tuple[bool, bool]:
    """(started, ready) of a container from its probe results, as the kubelet's UpdatePodStatus.

    `results` holds the current result of each probe the container has (by kind); a container with
    no startup probe is started once it runs, one with no readiness probe is ready once started.
    """
    kinds = has if has is not None else {kind: True for kind in results}
    if not running:
        return False, False
    started = results.get(STARTUP) == Result.SUCCESS if kinds.get(STARTUP) else True
    if not started:
        return False, False
    ready = results.get(READINESS) == Result.SUCCESS if kinds.get(READINESS) else True
    return True, ready


def resolve_port(port: Any, container: Obj) -> int:
    """A port given as a number, a numeric string, or the name of one of the container's ports."""
    if isinstance(port, bool):
        raise ActionError(f"invalid port: {port!r}")
    if isinstance(port, int):
        number = port
    elif isinstance(port, str) and port.isdigit():
        number = int(port)
    elif isinstance(port, str):
        found = [p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == port]
        if not found or not isinstance(found[0], int):
            raise ActionError(f"couldn't find port: {port} in container {container.get('name', '')}")
        number = found[0]
    else:
        raise ActionError(f"invalid port: {port!r}")
    if not 0 < number < 65536:
        raise ActionError(f"invalid port number: {number}")
    return number


@dataclass(frozen=True)
class HttpTarget:
    scheme: str  # http or https
    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def http_target(action: Obj, container: Obj, pod_ip: str, user_agent: str = PROBE_AGENT) -> HttpTarget:
    """Where an httpGet action goes: host (default the pod IP), port, path and headers."""
    host = str(action.get("host") or pod_ip)
    if not host:
        raise ActionError("the pod has no IP yet")
    port = action.get("port")
    number = 80 if port in (None, "") else resolve_port(port, container)
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    scheme = str(action.get("scheme") or "HTTP").lower()
    if scheme not in ("http", "https"):
        raise ActionError(f"unsupported scheme: {action.get('scheme')}")
    given = [(str(h.get("name", "")), str(h.get("value", ""))) for h in action.get("httpHeaders") or []]
    names = {name.lower() for name, _ in given}
    defaults = [(k, v) for k, v in (("User-Agent", user_agent), ("Accept", "*/*")) if k.lower() not in names]
    return HttpTarget(scheme=scheme, host=host, port=number, path=path, headers=(*defaults, *given))


def tcp_target(action: Obj, container: Obj, pod_ip: str) -> tuple[str, int]:
    host = str(action.get("host") or pod_ip)
    if not host:
        raise ActionError("the pod has no IP yet")
    return host, resolve_port(action.get("port"), container)


def pod_ref(pod: Obj) -> str:
    """`name_namespace(uid)`, as the kubelet's format.Pod names a pod in messages."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', '')}({meta.get('uid', '')})"

"""Typed values the runtime's API takes and returns (the agent translates pod specs into these)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NewType

ContainerId = NewType("ContainerId", str)


@dataclass(frozen=True, kw_only=True)
class Mount:
    """A bind mount of a host path or a fresh tmpfs at `destination` in the container."""

    destination: str
    type: Literal["bind", "tmpfs"] = "bind"
    source: str = ""
    readonly: bool = False
    size_bytes: int | None = None  # tmpfs only


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Kubernetes container resources, already parsed: CPU in millicores, memory in bytes."""

    cpu_request_milli: int | None = None
    cpu_limit_milli: int | None = None
    memory_limit_bytes: int | None = None
    pids_limit: int | None = None


@dataclass(frozen=True, kw_only=True)
class SeccompProfile:
    """CRI's SecurityProfile for seccomp: none, the runtime's default, or a node's file (already loaded)."""

    type: Literal["Unconfined", "RuntimeDefault", "Localhost"] = "Unconfined"
    localhost: dict[str, Any] | None = None  # a Localhost profile in the OCI `linux.seccomp` form


@dataclass(frozen=True, kw_only=True)
class ContainerConfig:
    """What one container of a pod runs and with which privileges and limits."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    tty: bool = False
    stdin: bool = False  # keep stdin open for attach (`stdin: true`); closed after the first session if stdin_once
    stdin_once: bool = False
    mounts: list[Mount] = field(default_factory=list)
    readonly_rootfs: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    no_new_privs: bool = False  # allowPrivilegeEscalation: false
    seccomp: SeccompProfile = field(default_factory=SeccompProfile)  # privileged containers run unconfined
    resources: Resources = field(default_factory=Resources)
    oom_score_adj: int | None = None
    attempt: int = 0  # restart count, as CRI's metadata.attempt
    log_path: Path | None = None  # default: in the container's state directory


@dataclass(frozen=True, kw_only=True)
class PortMapping:
    """A hostPort: traffic to host_port on the node goes to container_port on the pod IP."""

    host_port: int
    container_port: int
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    host_ip: str = ""


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """The pod-level part: identity, hostname, DNS, host aliases and host ports."""

    uid: str
    name: str
    namespace: str
    hostname: str = ""
    subdomain: str = ""
    cluster_domain: str = "cluster.local"
    resolv_conf: str = ""
    host_aliases: list[tuple[str, list[str]]] = field(default_factory=list)
    port_mappings: list[PortMapping] = field(default_factory=list)

    @property
    def pod_hostname(self) -> str:
        return (self.hostname or self.name)[:63]


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """A pod's network, IPC and UTS namespaces (bind-mounted files) and its /etc files."""

    uid: str
    name: str
    namespace: str
    ip: str
    netns: Path
    ipc_ns: Path
    uts_ns: Path
    directory: Path
    shm: Path
    etc_hosts: Path
    etc_hostname: Path
    resolv_conf: Path


class ContainerState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class ContainerStatus:
    """A container's state as a CRI ContainerStatus would say it; times are Unix seconds."""

    id: ContainerId
    state: ContainerState
    exit_code: int | None = None
    reason: str = ""  # Completed, Error, OOMKilled
    message: str = ""
    pid: int | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    """A container found on disk (for the agent to reconcile after a restart)."""

    id: ContainerId
    pod_uid: str
    name: str
    attempt: int
    log_path: Path
    state: ContainerState


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes

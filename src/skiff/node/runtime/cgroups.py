"""Where a pod's and a container's cgroups live (v1 and v2), their usage, and removing them.

Paths follow runc's cgroupfs driver: `cgroupsPath` `/<parent>/pod<uid>/<container id>` is the
same relative path in every v1 controller hierarchy (/sys/fs/cgroup/<controller>/...) or one
directory of the v2 unified tree. runc creates the directories and removes the container's at
`runc delete`; the pod's parent directory is removed here at sandbox teardown. Plain file I/O on
cgroupfs: callers on the event loop go through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# "unified": the cgroup2 tree a hybrid host mounts beside the v1 controllers (runc makes a directory there too)
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio",
                  "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc", "systemd", "unified")  # fmt: skip


@dataclass(frozen=True)
class Usage:
    """Cumulative CPU time and the memory working set (usage minus inactive file cache)."""

    cpu_usage_ns: int
    memory_working_set_bytes: int
    memory_usage_bytes: int


def detect_version(root: Path = CGROUP_ROOT) -> int:
    return 2 if (root / "cgroup.controllers").exists() else 1


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


class Cgroups:
    """The cgroup layout under one parent (e.g. `skiff`), on this host's cgroup version."""

    def __init__(self, parent: str = "skiff", *, root: Path = CGROUP_ROOT, version: int | None = None) -> None:
        self.parent = parent.strip("/")
        self.root = root
        self.version = version if version is not None else detect_version(root)

    def pod_path(self, pod_uid: str) -> str:
        return f"/{self.parent}/pod{pod_uid}"

    def container_path(self, pod_uid: str, container_id: str) -> str:
        """The `cgroupsPath` of a container's runc spec."""
        return f"{self.pod_path(pod_uid)}/{container_id}"

    def directories(self, path: str) -> list[Path]:
        """Every directory that holds `path`: one per mounted v1 controller, or the v2 one."""
        rel = path.strip("/")
        if self.version == 2:
            return [self.root / rel]
        return [self.root / c / rel for c in V1_CONTROLLERS if (self.root / c).is_dir()]

    def controller_dir(self, path: str, controller: str) -> Path:
        rel = path.strip("/")
        return self.root / rel if self.version == 2 else self.root / controller / rel

    def usage(self, path: str) -> Usage:
        if self.version == 2:
            d = self.root / path.strip("/")
            cpu = _read_stat(d / "cpu.stat").get("usage_usec", 0) * 1000
            used = _read_int(d / "memory.current") or 0
            inactive = _read_stat(d / "memory.stat").get("inactive_file", 0)
        else:
            cpu = _read_int(self.controller_dir(path, "cpuacct") / "cpuacct.usage") or 0
            mem = self.controller_dir(path, "memory")
            used = _read_int(mem / "memory.usage_in_bytes") or 0
            inactive = _read_stat(mem / "memory.stat").get("total_inactive_file", 0)
        return Usage(cpu_usage_ns=cpu, memory_working_set_bytes=max(0, used - inactive), memory_usage_bytes=used)

    def limit_pids(self, path: str, limit: int) -> None:
        """Set `pids.max` of `path` (a pod's cgroup, as the kubelet's --pod-max-pids): its processes and
        threads together, whichever container they are in. The directory must exist (runc made it)."""
        (self.controller_dir(path, "pids") / "pids.max").write_text(str(limit))

    def oom_kills(self, path: str) -> int:
        if self.version == 2:
            return _read_stat(self.root / path.strip("/") / "memory.events").get("oom_kill", 0)
        return _read_stat(self.controller_dir(path, "memory") / "memory.oom_control").get("oom_kill", 0)

    def exists(self, path: str) -> bool:
        return any(d.is_dir() for d in self.directories(path))

    def remove(self, path: str) -> None:
        """rmdir `path` and everything below it in every hierarchy (cgroups must be empty of tasks)."""
        for top in self.directories(path):
            if not top.is_dir():
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(dirpath)

"""The Node's conditions and images, from this machine: what the kubelet reports in `status`.

Pressure follows the kubelet's default hard eviction thresholds: MemoryPressure when
MemAvailable is under 100 MiB, DiskPressure when the agent's state filesystem has under 10 %
free; PIDPressure when fewer than 5 % of `kernel.pid_max` are left (the kubelet has no default
there; skiff picks one). Reasons and messages are the kubelet's. `status.images` lists the
node's images (names and size), largest first, at most 50 as the kubelet does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.images.model import Image

Obj = dict[str, Any]
MEMORY_THRESHOLD = 100 * 2**20
DISK_FREE_FRACTION = 0.10
PID_FREE_FRACTION = 0.05
MAX_IMAGES = 50

_TEXT = {  # condition -> (reason, message) when under pressure, then when not
    "MemoryPressure": (("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                       ("KubeletHasSufficientMemory", "kubelet has sufficient memory available")),
    "DiskPressure": (("KubeletHasDiskPressure", "kubelet has disk pressure"),
                     ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")),
    "PIDPressure": (("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
                    ("KubeletHasSufficientPID", "kubelet has sufficient PID available")),
}  # fmt: skip


@dataclass(frozen=True)
class Signals:
    memory_available: int
    disk_total: int
    disk_free: int
    pid_max: int
    pids: int


def read_signals(state_dir: Path) -> Signals:
    """This machine's signals (blocking: call in a thread)."""
    available = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    st = os.statvfs(state_dir)
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read().strip())
    pids = sum(1 for name in os.listdir("/proc") if name.isdigit())
    return Signals(available, st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, pid_max, pids)


def pressures(s: Signals) -> dict[str, bool]:
    return {
        "MemoryPressure": s.memory_available < MEMORY_THRESHOLD,
        "DiskPressure": s.disk_total > 0 and s.disk_free < s.disk_total * DISK_FREE_FRACTION,
        "PIDPressure": s.pid_max - s.pids < s.pid_max * PID_FREE_FRACTION,
    }


def conditions(signals: Signals, now: str, previous: Iterable[Obj] = ()) -> list[Obj]:
    """The four conditions; lastTransitionTime moves only where a status changes."""
    before = {c.get("type"): c for c in previous}
    rows: list[tuple[str, str, str, str]] = []
    for type_, pressed in pressures(signals).items():
        reason, message = _TEXT[type_][0 if pressed else 1]
        rows.append((type_, "True" if pressed else "False", reason, message))
    rows.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    out = []
    for type_, status, reason, message in rows:
        prev = before.get(type_)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else None
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": since or now})  # fmt: skip
    return out


def images(stored: Iterable[Image]) -> list[Obj]:
    """`status.images`: names and sizes, largest first, at most 50."""
    ranked = sorted(stored, key=lambda i: i.size, reverse=True)[:MAX_IMAGES]
    return [{"names": list(i.names), "sizeBytes": i.size} for i in ranked]

"""The agent's Node conditions from machine signals (the kubelet's default eviction thresholds) and images."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.images.model import Image, ImageConfig
from skiff.node.agent.node import memory_bytes
from skiff.node.agent.nodestatus import Signals, conditions, images, read_signals

HEALTHY = Signals(memory_available=2 * 2**30, disk_total=100, disk_free=50, pid_max=4_000_000, pids=300)


def by_type(conds: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conds}


def test_a_healthy_machine() -> None:
    assert by_type(conditions(HEALTHY, "T")) == {
        "MemoryPressure": ("False", "KubeletHasSufficientMemory"),
        "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
        "PIDPressure": ("False", "KubeletHasSufficientPID"),
        "Ready": ("True", "KubeletReady"),
    }


@pytest.mark.parametrize(
    ("signals", "condition", "reason"),
    [
        (Signals(99 * 2**20, 100, 50, 4_000_000, 300), "MemoryPressure", "KubeletHasInsufficientMemory"),
        (Signals(2 * 2**30, 100, 9, 4_000_000, 300), "DiskPressure", "KubeletHasDiskPressure"),
        (Signals(2 * 2**30, 100, 50, 1000, 960), "PIDPressure", "KubeletHasInsufficientPID"),
    ],
    ids=["memory", "disk", "pids"],
)
def test_pressure(signals: Signals, condition: str, reason: str) -> None:
    assert by_type(conditions(signals, "T"))[condition] == ("True", reason)


def test_transition_times_move_only_on_change() -> None:
    first = conditions(HEALTHY, "T1")
    second = conditions(Signals(10, 100, 50, 4_000_000, 300), "T2", first)
    times = {c["type"]: (c["lastHeartbeatTime"], c["lastTransitionTime"]) for c in second}
    assert times["MemoryPressure"] == ("T2", "T2") and times["Ready"] == ("T2", "T1")


def test_images_largest_first() -> None:
    stored = [Image(ref=f"r/{n}", digest=f"sha256:{n}", rootfs=Path("/"), config=ImageConfig(), names=(f"r/{n}:1",),
                    size=size) for n, size in (("a", 10), ("b", 30))]  # fmt: skip
    assert images(stored) == [{"names": ["r/b:1"], "sizeBytes": 30}, {"names": ["r/a:1"], "sizeBytes": 10}]


def test_read_signals_and_meminfo(tmp_path: Path) -> None:
    s = read_signals(tmp_path)
    assert s.memory_available > 0 and s.disk_total >= s.disk_free > 0 and s.pid_max >= s.pids > 0
    assert memory_bytes("MemTotal:       16318412 kB\nMemFree: 1 kB\n") == 16318412 * 1024

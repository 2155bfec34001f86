"""The pure parts of examples/etcd-operator/etcd_operator.py: backup schedules and which member pods count as lost.

The module is loaded from its file into a kopf registry of its own, so its handlers never join
the default registry that other kopf tests in the same session use.
"""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import kopf
import pytest

PATH = Path(__file__).resolve().parents[2] / "examples" / "etcd-operator" / "etcd_operator.py"
UTC = datetime.UTC


@pytest.fixture(scope="module")
def op() -> ModuleType:
    previous = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())
    try:
        spec = importlib.util.spec_from_file_location("etcd_operator_under_test", PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        kopf.set_default_registry(previous)


AT = datetime.datetime(2026, 11, 27, 4, 7, 30, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("@every 10s", datetime.datetime(2026, 11, 27, 4, 7, 40, tzinfo=UTC)),
        ("@every 1m30s", datetime.datetime(2026, 11, 27, 4, 9, 0, tzinfo=UTC)),
        ("@every 1h", datetime.datetime(2026, 11, 27, 5, 7, 30, tzinfo=UTC)),
        ("*/15 * * * *", datetime.datetime(2026, 11, 27, 4, 15, tzinfo=UTC)),
        ("@hourly", datetime.datetime(2026, 11, 27, 5, 0, tzinfo=UTC)),
        ("@daily", datetime.datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
        ("30 2,14 * * *", datetime.datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("0 9-17/4 * * 1-5", datetime.datetime(2026, 11, 27, 9, 0, tzinfo=UTC)),
        ("0 0 * * 0", datetime.datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),  # Sunday as 0
        ("0 0 * * 7", datetime.datetime(2026, 11, 29, 0, 0, tzinfo=UTC)),  # and as 7
        ("0 0 1 1 *", datetime.datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ],
    ids=lambda v: str(v),
)
def test_next_run(op: ModuleType, schedule: str, expected: datetime.datetime) -> None:
    assert op.next_run(schedule, AT) == expected


@pytest.mark.parametrize("schedule", ["every day", "* * * *", "@every", "@every 5 minutes", "0 0 31 2 *"])
def test_bad_schedules_are_value_errors(op: ModuleType, schedule: str) -> None:
    with pytest.raises(ValueError, match="schedule"):
        op.next_run(schedule, AT)


def pod(phase: str = "Running", *, deleting: bool = False, waiting: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo-0"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T04:00:00Z"
    status: dict[str, Any] = {"phase": phase}
    if waiting:
        status["containerStatuses"] = [{"name": "etcd", "state": {"waiting": {"reason": waiting}}}]
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    ("member_pod", "lost"),
    [
        (None, True),
        (pod(), False),
        (pod(deleting=True), True),
        (pod("Failed"), True),
        (pod("Pending", waiting="ContainerCreating"), False),
        (pod(waiting="CrashLoopBackOff"), True),
        (pod("Pending", waiting="ImagePullBackOff"), True),
    ],
    ids=["missing", "running", "deleting", "failed", "creating", "crash-looping", "no-image"],
)
def test_which_member_pods_count_as_lost(op: ModuleType, member_pod: dict[str, Any] | None, lost: bool) -> None:
    assert op.failing(member_pod) is lost


def test_member_names_sort_by_number(op: ModuleType) -> None:
    assert sorted(["demo-10", "demo-2", "demo-0"], key=op.member_index) == ["demo-0", "demo-2", "demo-10"]

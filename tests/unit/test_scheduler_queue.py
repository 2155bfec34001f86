"""The scheduling queue: priority order, per-pod backoff, parking unschedulable pods until an event helps."""

from __future__ import annotations

import asyncio

import pytest

from skiff.scheduler.framework import ASSIGNED_POD, NODE, ActionType, ClusterEvent
from skiff.scheduler.queue import SchedulingQueue
from tests.unit.scheduler_objects import pod

pytestmark = pytest.mark.timeout(10)

FIT_EVENTS = (
    ClusterEvent(ASSIGNED_POD, ActionType.DELETE),
    ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE),
)
TAINT_EVENTS = (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),)
NODE_ADD = ClusterEvent(NODE, ActionType.ADD)
NODE_TAINT = ClusterEvent(NODE, ActionType.UPDATE_NODE_TAINT)
NODE_LABEL = ClusterEvent(NODE, ActionType.UPDATE_NODE_LABEL)
POD_DELETE = ClusterEvent(ASSIGNED_POD, ActionType.DELETE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(clock: Clock) -> SchedulingQueue:
    return SchedulingQueue(
        clock=clock,
        plugin_events={"NodeResourcesFit": FIT_EVENTS, "TaintToleration": TAINT_EVENTS},
    )


def pop_keys(queue: SchedulingQueue) -> list[str]:
    out = []
    while (qpi := queue.pop_nowait()) is not None:
        out.append(qpi.key)
        queue.done(qpi.key)
    return out


def test_priority_then_age(queue: SchedulingQueue, clock: Clock) -> None:
    for name, prio in [("a", 0), ("b", 10), ("c", 0), ("d", 10), ("e", -5)]:
        queue.add(pod(name, priority=prio))
        clock.now += 1
    assert pop_keys(queue) == ["default/b", "default/d", "default/a", "default/c", "default/e"]


def test_add_twice_is_one_entry(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    queue.add(pod("a"))
    assert len(queue) == 1
    assert pop_keys(queue) == ["default/a"]


def test_priority_change_resorts(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    clock.now += 1
    queue.add(pod("b"))
    queue.update(pod("b", priority=100))
    assert pop_keys(queue) == ["default/b", "default/a"]


def test_delete(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    queue.add(pod("b"))
    queue.delete("default/a")
    assert pop_keys(queue) == ["default/b"]
    assert len(queue) == 0


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)],
    ids=["1st", "2nd", "3rd", "4th", "capped", "many"],
)
def test_backoff_doubles_up_to_the_cap(queue: SchedulingQueue, attempts: int, seconds: float) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    qpi.attempts = attempts
    assert queue.backoff_duration(qpi) == seconds


def test_error_goes_to_backoff_then_active(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_backoff(qpi)
    assert queue.where("default/a") == "backoff"
    assert queue.pop_nowait() is None
    clock.now += 0.5
    assert queue.flush() == pytest.approx(0.5)
    assert queue.where("default/a") == "backoff"
    clock.now += 0.6
    queue.flush()
    assert queue.where("default/a") == "active"
    again = queue.pop_nowait()
    assert again is qpi and again.attempts == 2


def test_unschedulable_waits_for_a_relevant_event(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_unschedulable(qpi, rejected_by={"NodeResourcesFit"})
    assert queue.where("default/a") == "unschedulable"
    assert queue.move_all_to_active_or_backoff(NODE_TAINT) == 0
    assert queue.move_all_to_active_or_backoff(NODE_LABEL) == 0
    assert queue.where("default/a") == "unschedulable"
    assert queue.move_all_to_active_or_backoff(POD_DELETE) == 1
    assert queue.where("default/a") == "backoff"  # still within its 1 s backoff
    clock.now += 2
    queue.flush()
    assert pop_keys(queue) == ["default/a"]


def test_event_after_backoff_goes_straight_to_active(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_unschedulable(qpi, rejected_by={"TaintToleration"})
    clock.now += 5
    assert queue.move_all_to_active_or_backoff(NODE_TAINT) == 1
    assert queue.where("default/a") == "active"


@pytest.mark.parametrize(
    ("rejected_by", "event", "moves"),
    [
        ({"NodeResourcesFit"}, NODE_ADD, True),
        ({"NodeResourcesFit"}, NODE_TAINT, False),
        ({"TaintToleration"}, NODE_TAINT, True),
        ({"TaintToleration"}, POD_DELETE, False),
        ({"TaintToleration", "NodeResourcesFit"}, POD_DELETE, True),
        ({"SomeUnknownPlugin"}, NODE_LABEL, True),
    ],
    ids=["fit-node-add", "fit-taint", "taint-taint", "taint-pod-delete", "either-plugin", "unknown-plugin-safe"],
)
def test_which_events_move_which_pods(
    queue: SchedulingQueue, rejected_by: set[str], event: ClusterEvent, moves: bool
) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_unschedulable(qpi, rejected_by=rejected_by)
    assert queue.move_all_to_active_or_backoff(event) == (1 if moves else 0)


def test_no_rejecting_plugin_retries_on_backoff(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_unschedulable(qpi, rejected_by=set())
    assert queue.where("default/a") == "backoff"


def test_parked_pod_retried_after_five_minutes(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_unschedulable(qpi, rejected_by={"NodeResourcesFit"})
    clock.now += 299
    assert queue.flush() == pytest.approx(1.0)
    assert queue.where("default/a") == "unschedulable"
    clock.now += 1
    queue.flush()
    assert queue.where("default/a") == "active"


def test_spec_update_moves_parked_pod_but_status_update_does_not(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add_unschedulable(qpi, rejected_by={"NodeResourcesFit"})
    status_only = pod("a")
    status_only.pod["status"] = {"conditions": [{"type": "PodScheduled", "status": "False"}]}
    queue.update(status_only)
    assert queue.where("default/a") == "unschedulable"
    clock.now += 5
    queue.update(pod("a", cpu="100m"))
    assert queue.where("default/a") == "active"


def test_update_while_in_flight_skips_parking(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.update(pod("a", labels={"new": "label"}))
    assert queue.where("default/a") == "in-flight"
    queue.add_unschedulable(qpi, rejected_by={"NodeResourcesFit"})
    assert queue.where("default/a") == "backoff"
    assert qpi.pod.labels == {"new": "label"}


def test_deleted_while_in_flight_is_not_requeued(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.delete("default/a")
    queue.add_unschedulable(qpi, rejected_by={"NodeResourcesFit"})
    assert queue.where("default/a") is None
    assert len(queue) == 0


def test_pod_is_never_handed_out_twice(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    qpi = queue.pop_nowait()
    assert qpi is not None
    queue.add(pod("a"))  # an informer event for the pod being scheduled
    assert queue.pop_nowait() is None
    queue.done("default/a")


async def test_pop_waits_for_a_pod() -> None:
    queue = SchedulingQueue()
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.add(pod("a"))
    qpi = await asyncio.wait_for(waiter, 1)
    assert qpi is not None and qpi.key == "default/a"


async def test_close_ends_pop() -> None:
    queue = SchedulingQueue()
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0.01)
    queue.close()
    assert await asyncio.wait_for(waiter, 1) is None


async def test_timers_move_backoff_pods_on_time() -> None:
    queue = SchedulingQueue(initial_backoff=0.05, max_backoff=0.1)
    timers = asyncio.create_task(queue.run())
    try:
        queue.add(pod("a"))
        qpi = await queue.pop()
        assert qpi is not None
        queue.add_backoff(qpi)
        again = await asyncio.wait_for(queue.pop(), 1)
        assert again is qpi
    finally:
        queue.close()
        await asyncio.wait_for(timers, 1)

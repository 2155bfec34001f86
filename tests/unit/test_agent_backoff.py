"""The node agent's restart back-off: 10 s doubling to 5 min, as the kubelet's flowcontrol.Backoff."""

from __future__ import annotations

import pytest

from skiff.node.agent.backoff import Backoff, crash_loop_message, go_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_restart_is_immediate_then_doubles_to_five_minutes() -> None:
    clock = Clock()
    b = Backoff(clock=clock)
    key = "uid/c"
    assert not b.in_backoff_since(key, clock.now)  # never restarted: restart at once
    delays = []
    for _ in range(8):
        b.next(key, clock.now)
        delays.append(b.get(key))
        clock.now += 1
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]


def test_in_backoff_counts_from_when_the_container_finished() -> None:
    clock = Clock()
    b = Backoff(clock=clock)
    b.next("k", clock.now)
    finished = clock.now + 5
    clock.now = finished + 9.5
    assert b.in_backoff_since("k", finished)
    assert b.remaining("k", finished) == pytest.approx(0.5)
    clock.now = finished + 10.5
    assert not b.in_backoff_since("k", finished)
    assert b.remaining("k", finished) == 0


def test_quiet_for_twice_the_maximum_starts_over() -> None:
    clock = Clock()
    b = Backoff(clock=clock)
    for _ in range(4):
        b.next("k", clock.now)
    assert b.get("k") == 80
    clock.now += 601
    assert not b.in_backoff_since("k", clock.now)
    b.next("k", clock.now)
    assert b.get("k") == 10


def test_forget_prefix_drops_a_pods_keys() -> None:
    b = Backoff()
    b.next("a/x", 0)
    b.next("a/y", 0)
    b.next("b/x", 0)
    b.forget_prefix("a/")
    assert (b.get("a/x"), b.get("a/y"), b.get("b/x")) == (0, 0, 10)


@pytest.mark.parametrize(("seconds", "text"), [(10, "10s"), (40, "40s"), (80, "1m20s"), (160, "2m40s"), (300, "5m0s")])
def test_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_crash_loop_message_is_kubernetes() -> None:
    assert crash_loop_message(20, "app", "web", "default", "u-1") == (
        "back-off 20s restarting failed container=app pod=web_default(u-1)"
    )

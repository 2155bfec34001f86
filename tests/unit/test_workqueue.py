"""The work queue and its rate limiters, on a loop whose clock the test moves by hand.

No test sleeps for real: `clock` replaces the running loop's `time()`, so
`call_at` timers (add_after, rate-limited adds) fire only when the test
advances the clock and lets the loop turn.
"""

from __future__ import annotations

import asyncio

import pytest

from skiff.client.ratelimit import (
    Backoff,
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    default_controller_rate_limiter,
)
from skiff.client.workqueue import ShutDown, WorkQueue

pytestmark = pytest.mark.timeout(10)


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    loop = asyncio.get_running_loop()
    fake = FakeClock(loop.time())
    monkeypatch.setattr(loop, "time", fake)
    return fake


async def turn(n: int = 5) -> None:
    """Let the loop run ready callbacks and due timers a few times."""
    for _ in range(n):
        await asyncio.sleep(0)


async def advance(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await turn()


async def drain(q: WorkQueue[str]) -> list[str]:
    """Everything queued now, in order, without waiting (each marked done)."""
    out = []
    while len(q):
        key = await q.get()
        out.append(key)
        q.done(key)
    return out


# --- basic queue ----------------------------------------------------------------------------------
async def test_adds_of_a_queued_key_are_deduplicated_and_order_is_fifo() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c", "b", "a"]:
        q.add(key)
    assert len(q) == 3
    assert [await q.get(), await q.get(), await q.get()] == ["a", "b", "c"]
    assert len(q) == 0


async def test_a_key_in_processing_is_requeued_only_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # changed again while a worker has it
    q.add("a")
    assert len(q) == 0, "never handed to a second worker while the first has it"
    second = asyncio.create_task(q.get())
    await turn()
    assert not second.done()
    q.done("a")
    await turn()
    assert second.done() and second.result() == "a"
    q.done("a")
    assert len(q) == 0 and q.processing() == set()


async def test_done_without_readd_does_not_requeue() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    key = await q.get()
    q.done(key)
    assert len(q) == 0


async def test_get_waits_for_an_add() -> None:
    q: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await turn()
    assert not any(g.done() for g in getters)
    q.add("x")
    q.add("y")
    await turn()
    done = sorted(g.result() for g in getters if g.done())
    assert done == ["x", "y"]
    q.shutdown()
    await turn()
    assert all(g.done() for g in getters)


async def test_a_cancelled_getter_passes_its_wakeup_on() -> None:
    q: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await turn()
    q.add("x")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    await turn()
    assert first.cancelled()
    assert second.done() and second.result() == "x"


async def test_shutdown_wakes_getters_and_ignores_later_adds() -> None:
    q: WorkQueue[str] = WorkQueue(name="test")
    waiting = [asyncio.create_task(q.get()) for _ in range(2)]
    await turn()
    q.add_after("later", 0.5)
    q.shutdown()
    await turn()
    for task in waiting:
        with pytest.raises(ShutDown):
            task.result()
    q.add("a")
    q.add_rate_limited("b")
    assert len(q) == 0 and q.waiting() == set()
    with pytest.raises(ShutDown):
        await q.get()


async def test_async_iteration_ends_at_shutdown() -> None:
    q: WorkQueue[str] = WorkQueue()
    seen: list[str] = []

    async def worker() -> None:
        async for key in q:
            seen.append(key)
            q.done(key)

    task = asyncio.create_task(worker())
    q.add("a")
    q.add("b")
    await turn()
    q.shutdown()
    await turn()
    assert task.done() and seen == ["a", "b"]


# --- delaying -------------------------------------------------------------------------------------
async def test_add_after_adds_when_the_delay_has_passed(clock: FakeClock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 5.0)
    await turn()
    assert len(q) == 0 and q.waiting() == {"a"}
    await advance(clock, 4.9)
    assert len(q) == 0
    await advance(clock, 0.2)
    assert await drain(q) == ["a"] and q.waiting() == set()


@pytest.mark.parametrize(
    ("first", "second", "due"), [(10.0, 2.0, 2.0), (2.0, 10.0, 2.0)], ids=["later-then-sooner", "sooner-then-later"]
)
async def test_add_after_the_earliest_request_wins(clock: FakeClock, first: float, second: float, due: float) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", first)
    q.add_after("a", second)
    await advance(clock, due - 0.01)
    assert len(q) == 0
    await advance(clock, 0.02)
    assert await drain(q) == ["a"]
    await advance(clock, 20)
    assert len(q) == 0, "one add for the two requests"


async def test_add_after_without_delay_adds_now(clock: FakeClock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 0)
    q.add_after("b", -1)
    assert await drain(q) == ["a", "b"]


async def test_a_delayed_add_of_a_queued_key_is_deduplicated(clock: FakeClock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add_after("a", 1)
    await advance(clock, 1.5)
    assert await drain(q) == ["a"]


# --- rate limiting --------------------------------------------------------------------------------
def test_item_exponential_backoff_doubles_to_a_cap_and_forget_resets() -> None:
    rl = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [rl.when("a") for _ in range(5)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert rl.num_requeues("a") == 5
    assert rl.when("b") == pytest.approx(0.005), "per item"
    for _ in range(100):
        last = rl.when("a")
    assert last == 1000.0
    rl.forget("a")
    assert rl.num_requeues("a") == 0
    assert rl.when("a") == pytest.approx(0.005)


def test_token_bucket_allows_a_burst_then_qps() -> None:
    now = [100.0]
    rl = BucketRateLimiter(qps=10, burst=100, clock=lambda: now[0])
    assert all(rl.when(i) == 0 for i in range(100))
    assert rl.when("x") == pytest.approx(0.1)
    assert rl.when("y") == pytest.approx(0.2)
    now[0] += 1.0  # ten tokens back, two of them already promised
    assert [rl.when(i) for i in range(8)] == [0] * 8
    assert rl.when("z") == pytest.approx(0.1)


def test_default_controller_rate_limiter_is_the_max_of_both() -> None:
    now = [0.0]
    rl = default_controller_rate_limiter(clock=lambda: now[0])
    assert rl.when("a") == pytest.approx(0.005)
    assert rl.when("a") == pytest.approx(0.01)
    for i in range(98):
        rl.when(i)  # the bucket is now empty
    assert rl.when("b") == pytest.approx(0.1), "bucket delay beats b's first 5 ms"
    assert rl.num_requeues("a") == 2
    rl.forget("a")
    assert rl.num_requeues("a") == 0


async def test_add_rate_limited_backs_off_per_key(clock: FakeClock) -> None:
    q: WorkQueue[str] = WorkQueue(rate_limiter=ItemExponentialFailureRateLimiter(0.005, 1000.0))
    expected = [0.005, 0.01, 0.02, 0.04]
    for n, delay in enumerate(expected, start=1):
        q.add_rate_limited("a")
        assert q.num_requeues("a") == n
        await advance(clock, delay * 0.9)
        assert len(q) == 0, f"retry {n} not before {delay}s"
        await advance(clock, delay * 0.2)
        assert await drain(q) == ["a"]
    q.forget("a")
    assert q.num_requeues("a") == 0
    q.add_rate_limited("a")
    await advance(clock, 0.006)
    assert await drain(q) == ["a"]


async def test_rate_limited_retries_cap_at_1000_seconds(clock: FakeClock) -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(30):
        q.rate_limiter.when("a")
    q.add_rate_limited("a")
    await advance(clock, 999)
    assert len(q) == 0
    await advance(clock, 2)
    assert await drain(q) == ["a"]


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, jitter=0.0)
    assert [b.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 1.0
    j = Backoff(1.0, 8.0, jitter=0.5)
    assert all(1.0 <= j.next() / base <= 1.5 for base in (1.0, 2.0, 4.0))

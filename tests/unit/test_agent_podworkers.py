"""Pod workers: one sync at a time per pod, updates coalesced to the latest, DONE ends the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skiff.node.agent import podworkers
from skiff.node.agent.podworkers import DONE, PodWorkers


async def settle(workers: PodWorkers) -> None:
    for _ in range(200):  # at most 2 s
        if not workers.uids():
            return
        await asyncio.sleep(0.01)


def test_updates_coalesce_and_one_sync_runs_at_a_time() -> None:
    seen: list[Any] = []
    running = 0
    gate = asyncio.Event()

    async def sync(uid: str, pod: dict[str, Any] | None) -> float | None:
        nonlocal running
        running += 1
        assert running == 1, "two syncs of one pod at once"
        seen.append(None if pod is None else pod["v"])
        if len(seen) == 1:
            await gate.wait()
        running -= 1
        return DONE if pod is None else None

    async def main() -> None:
        workers = PodWorkers(sync)
        workers.update("u", {"v": 1})
        await asyncio.sleep(0.01)
        for v in (2, 3, 4):  # while the first sync is busy
            workers.update("u", {"v": v})
        gate.set()
        await asyncio.sleep(0.05)
        workers.update("u", None)
        await settle(workers)
        assert "u" not in workers

    asyncio.run(main())
    assert seen == [1, 4, None]


def test_requeue_after_and_retry_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podworkers, "ERROR_RETRY", 0.02)
    calls: list[str] = []

    async def sync(uid: str, pod: dict[str, Any] | None) -> float | None:
        calls.append(uid)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 2:
            return 0.02  # look again soon without an update
        return DONE

    async def main() -> None:
        workers = PodWorkers(sync)
        workers.update("u", {"v": 1})
        await settle(workers)
        assert workers.uids() == []

    asyncio.run(main())
    assert calls == ["u", "u", "u"]


def test_pods_do_not_wait_for_each_other() -> None:
    slow = asyncio.Event()
    done: list[str] = []

    async def sync(uid: str, pod: dict[str, Any] | None) -> float | None:
        if uid == "slow":
            await slow.wait()
        done.append(uid)
        return DONE

    async def main() -> None:
        workers = PodWorkers(sync)
        workers.update("slow", {})
        workers.update("fast", {})
        await asyncio.sleep(0.05)
        assert done == ["fast"]
        slow.set()
        await settle(workers)
        await workers.stop()

    asyncio.run(main())
    assert done == ["fast", "slow"]

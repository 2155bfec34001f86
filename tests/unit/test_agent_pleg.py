"""The relister: one listing for all pods wakes exactly the pods whose containers appeared, changed or went."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from skiff.node.agent.observing import Observer
from skiff.node.agent.pleg import Relister
from skiff.node.agent.podworkers import PodWorkers
from skiff.node.runtime.types import ContainerId, ContainerInfo, ContainerState


class Listing:
    def __init__(self) -> None:
        self.containers: dict[str, tuple[str, ContainerState]] = {}

    async def listing(self, max_age: float = 1.0) -> list[ContainerInfo]:
        return [ContainerInfo(id=ContainerId(cid), pod_uid=uid, name="c", attempt=0, log_path=Path("/dev/null"),
                              state=state) for cid, (uid, state) in self.containers.items()]  # fmt: skip


def test_only_pods_with_changed_containers_are_woken() -> None:
    runtime = Listing()
    woken: list[str] = []
    relister = Relister(cast(Observer, runtime), woken.append)

    async def main() -> None:
        runtime.containers = {"a1": ("a", ContainerState.RUNNING), "b1": ("b", ContainerState.RUNNING)}
        assert await relister.relist() == {"a", "b"}  # first seen
        assert await relister.relist() == set()  # nothing changed: no pod is synced
        runtime.containers["a1"] = ("a", ContainerState.EXITED)
        assert await relister.relist() == {"a"}
        runtime.containers["a2"] = ("a", ContainerState.RUNNING)
        del runtime.containers["b1"]
        assert await relister.relist() == {"a", "b"}  # a restart, a removal

    asyncio.run(main())
    assert woken == ["a", "b", "a", "a", "b"]


def test_wake_skips_pods_being_torn_down() -> None:
    synced: list[str] = []

    async def sync(uid: str, pod: dict[str, Any] | None) -> float | None:
        synced.append(uid)
        return None

    async def main() -> None:
        workers = PodWorkers(sync)
        workers.update("live", {"metadata": {}})
        workers.update("going", {"metadata": {"deletionTimestamp": "2026-11-27T05:00:00Z"}})
        await asyncio.sleep(0.05)
        workers.wake("live")
        workers.wake("going")
        await asyncio.sleep(0.05)
        await workers.stop()

    asyncio.run(main())
    assert sorted(synced) == ["going", "live", "live"]

"""What the runtime has for a pod, as `Attempt`s: the agent's view of its containers (with `pleg.py`).

Every pod worker asks for its pod's containers on each sync: the runtime is asked for that pod's
containers only (`Runtime.statuses(uid)`: its files and /proc, no runc process), so a sync costs the
same with 1 or 100 pods on the node. The relister and the stats reporter share one listing of the
whole node for up to `LIST_TTL` seconds; a worker that creates or removes containers bumps the
generation, and a listing begun before a bump is never served after it.

An exited container's message is what it wrote to its terminationMessagePath (or, with
FallbackToLogsOnError and a failure, the tail of its log).

A container that runc could not even create or start leaves nothing in the runtime; it is kept
here as a synthetic exited attempt (exit code 128, reason `StartError`, as containerd reports
it), so restartPolicy, back-off and restartCount treat it as Kubernetes does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from pathlib import Path

from skiff.node.agent.podstatus import EXITED, Attempt
from skiff.node.agent.starting import image_record, log_path, log_tail, read_termination_message, termination_file
from skiff.node.agent.volumes import pod_dir
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerInfo, ContainerState

LIST_TTL = 1.0


class Observer:
    def __init__(self, runtime: Runtime, state_dir: Path) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self._generation = 0
        self._cache: list[ContainerInfo] | None = None
        self._cache_generation = -1
        self._cache_at = 0.0
        self._lock = asyncio.Lock()
        self._failed: dict[str, Attempt] = {}  # "<uid>/<name>" -> the last start that failed
        self._images: dict[str, dict[str, str]] = {}  # id -> its image record (written before it is created)

    def invalidate(self) -> None:
        """Containers were made or removed: the next listing is a fresh one."""
        self._generation += 1

    async def listing(self, max_age: float = LIST_TTL) -> list[ContainerInfo]:
        """The runtime's containers, from a listing at most `max_age` seconds old (0: a new one)."""
        async with self._lock:
            fresh = time.monotonic() - self._cache_at < max_age
            if self._cache is not None and self._cache_generation == self._generation and fresh:
                return self._cache
            generation = self._generation
            listing = await self.runtime.list()
            self._cache, self._cache_generation, self._cache_at = listing, generation, time.monotonic()
            ids = {info.id for info in listing}
            for gone in [cid for cid in self._images if cid not in ids]:
                del self._images[gone]
            return listing

    async def attempts(self, uid: str, fallback_to_logs: Collection[str] = ()) -> list[Attempt]:
        """Every container of the pod (each attempt), with its current state. A container named in
        `fallback_to_logs` that failed without a termination message gets its log's tail instead."""
        root = pod_dir(self.state_dir, uid)
        out = []
        for info, st in await self.runtime.statuses(uid):
            record = self._images.get(info.id)
            if record is None:
                record = await asyncio.to_thread(_read_json, image_record(root, info.id))
                if record:
                    self._images[info.id] = record
            message = st.message
            if st.state == ContainerState.EXITED:
                written = await asyncio.to_thread(
                    read_termination_message, termination_file(root, info.name, info.attempt)
                )
                message = written or message
                if not written and st.exit_code and info.name in fallback_to_logs:
                    message = await asyncio.to_thread(log_tail, log_path(root, info.name, info.attempt))
            out.append(Attempt(
                id=info.id, name=info.name, attempt=info.attempt, state=str(st.state), exit_code=st.exit_code,
                reason=st.reason, message=message, started_at=st.started_at, finished_at=st.finished_at,
                image=record.get("image", ""), image_id=record.get("imageID", ""),
            ))  # fmt: skip
        real = {(a.name, a.attempt) for a in out}
        for key, failed in self._failed.items():
            if key.startswith(f"{uid}/") and (failed.name, failed.attempt) not in real:
                out.append(failed)
        return out

    def start_failed(self, uid: str, name: str, attempt: int, message: str) -> None:
        now = time.time()
        self._failed[f"{uid}/{name}"] = Attempt(id="", name=name, attempt=attempt, state=EXITED, exit_code=128,
                                                reason="StartError", message=message, started_at=now,
                                                finished_at=now)  # fmt: skip

    def started(self, uid: str, name: str) -> None:
        self._failed.pop(f"{uid}/{name}", None)

    def forget(self, uid: str) -> None:
        for key in [k for k in self._failed if k.startswith(f"{uid}/")]:
            del self._failed[key]


def _read_json(path: Path) -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}

"""One worker task per pod, as the kubelet's podWorkers: updates wake it, it syncs one pod at a time.

The informer hands every version of a pod (or None once it is gone) to `update(uid, pod)`; the
pod's worker keeps only the latest and calls `sync(uid, pod)`, never two syncs of one pod at once
and never blocking other pods (an image pull or a grace period holds only its own worker). A sync
returns when to look again (seconds: the periodic resync, a back-off ending), None to wait for
the next update or `wake` (the relister's events, a probe's change), or `DONE` when the pod is
gone and its worker can end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from skiff.client.tasks import cancel_and_wait

log = logging.getLogger(__name__)
Obj = dict[str, Any]

DONE: Final = -1.0
ERROR_RETRY = 5.0
SyncFn = Callable[[str, Obj | None], Awaitable[float | None]]


class _Worker:
    def __init__(self) -> None:
        self.pod: Obj | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class PodWorkers:
    """Pod uid → worker task calling `sync`."""

    def __init__(self, sync: SyncFn) -> None:
        self.sync = sync
        self._workers: dict[str, _Worker] = {}

    def __contains__(self, uid: str) -> bool:
        return uid in self._workers

    def uids(self) -> list[str]:
        return list(self._workers)

    def update(self, uid: str, pod: Obj | None) -> None:
        """The latest version of the pod (None: deleted); starts the pod's worker if needed."""
        worker = self._workers.get(uid)
        if worker is None:
            worker = self._workers[uid] = _Worker()
            worker.pod = pod
            worker.task = asyncio.create_task(self._run(uid, worker), name=f"pod worker {uid}")
        else:
            worker.pod = pod
        worker.wake.set()

    def wake(self, uid: str) -> None:
        """Sync the pod again now (a probe's result changed, a container started or exited), if it has a
        worker. A pod being torn down is not woken: its sync waits for its containers to stop itself."""
        worker = self._workers.get(uid)
        if worker is None or worker.pod is None or (worker.pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        worker.wake.set()

    async def _run(self, uid: str, worker: _Worker) -> None:
        delay: float | None = 0.0
        try:
            while True:
                if delay is None:
                    await worker.wake.wait()
                elif delay > 0:
                    try:
                        await asyncio.wait_for(worker.wake.wait(), timeout=delay)
                    except TimeoutError:
                        pass
                worker.wake.clear()
                pod = worker.pod
                try:
                    delay = await self.sync(uid, pod)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("syncing pod %s failed; retrying in %.0fs", uid, ERROR_RETRY)
                    delay = ERROR_RETRY
                if delay == DONE and not worker.wake.is_set():
                    return
                if delay == DONE:
                    delay = 0.0
        finally:
            if self._workers.get(uid) is worker:
                del self._workers[uid]

    async def stop(self) -> None:
        """Cancel every worker (the containers keep running; a new agent adopts them)."""
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        await cancel_and_wait(tasks)

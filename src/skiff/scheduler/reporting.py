"""Telling users what the scheduler did: Events and the PodScheduled condition, off the hot path.

`kubectl describe pod` shows "Scheduled … Successfully assigned ns/pod to
node" or "FailedScheduling … 0/3 nodes are available: …", and `kubectl get
pod -o yaml` a `PodScheduled=False` condition with reason Unschedulable.
These writes must never slow scheduling down, so they go through bounded
background queues with a few workers each:

- Events are best-effort, as in Kubernetes (whose event broadcaster drops
  events when its queue of 1,000 is full): when the API server falls behind,
  events are dropped and counted rather than holding up pods.
- Condition updates are kept, latest per pod (a newer failure message for the
  same pod replaces the queued one), and skipped when the pod already says it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from skiff.api import errors
from skiff.client import Client, ServerUnreachable, resources
from skiff.client.events import EventRecorder, now_rfc3339
from skiff.client.tasks import cancel_and_wait, spawn

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "default-scheduler"
MAX_QUEUED_EVENTS = 1000


class EventSink:
    """Best-effort Event recording with a bounded queue (dropped when full) and a few writers."""

    def __init__(self, client: Client, *, component: str = COMPONENT, workers: int = 4,
                 max_queued: int = MAX_QUEUED_EVENTS) -> None:  # fmt: skip
        self.recorder = EventRecorder(client, component=component)
        self.workers = workers
        self._queue: asyncio.Queue[tuple[Obj, str, str, str]] = asyncio.Queue(max_queued)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0
        self.written = 0

    def record(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        try:
            self._queue.put_nowait((involved, type_, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("event queue full: %d events dropped so far", self.dropped)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [spawn(self._work(), name=f"scheduler/events/{i}", logger=log) for i in range(self.workers)]

    async def stop(self, *, grace: float = 2.0) -> None:
        """Write what is queued (for up to `grace` seconds), then stop."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._queue.join()
            await cancel_and_wait(self._tasks)
            self._tasks = []

    async def _work(self) -> None:
        while True:
            involved, type_, reason, message = await self._queue.get()
            try:
                if await self.recorder.record(involved, type=type_, reason=reason, message=message) is not None:
                    self.written += 1
            finally:
                self._queue.task_done()


class ConditionWriter:
    """Writes `PodScheduled=False` (and `nominatedNodeName`) to pods' status, latest wins per pod.

    One write per pod at a time (a newer message waits for the older write, never races it), and
    none for a pod that `current(key)` — the informer's copy — says is bound by the time its turn
    comes: a stale "Unschedulable" must not land on a pod that found a node meanwhile.
    """

    def __init__(self, client: Client, *, current: Callable[[str], Obj | None] | None = None,
                 workers: int = 4) -> None:  # fmt: skip
        self.client = client
        self.current = current
        self.workers = workers
        self._pending: dict[str, tuple[Obj, str, str, str | None]] = {}  # key -> (pod, reason, message, nominated)
        self._writing: set[str] = set()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.written = 0

    def unschedulable(self, pod: Obj, *, reason: str, message: str, nominated: str | None = None) -> None:
        if _says_already(pod, reason, message, nominated):
            return
        meta = pod.get("metadata") or {}
        self._pending[f"{meta.get('namespace')}/{meta.get('name')}"] = (pod, reason, message, nominated)
        self._wakeup.set()

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                spawn(self._work(), name=f"scheduler/conditions/{i}", logger=log) for i in range(self.workers)
            ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _work(self) -> None:
        while True:
            key = next((k for k in self._pending if k not in self._writing), None)
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            pod, reason, message, nominated = self._pending.pop(key)
            latest = self.current(key) if self.current is not None else None
            if latest is not None and (latest.get("spec") or {}).get("nodeName"):
                continue  # bound meanwhile
            self._writing.add(key)
            try:
                await self._write(latest or pod, reason, message, nominated)
            finally:
                self._writing.discard(key)
                if key in self._pending:
                    self._wakeup.set()

    async def _write(self, pod: Obj, reason: str, message: str, nominated: str | None) -> None:
        meta = pod.get("metadata") or {}
        condition: Obj = {
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": _transition_time(pod),
        }
        patch: Obj = {"status": {"conditions": [condition]}}
        if nominated is not None:
            patch["status"]["nominatedNodeName"] = nominated or None
        try:
            await self.client.patch(
                resources.PODS,
                str(meta.get("name")),
                patch,
                namespace=str(meta.get("namespace")),
                patch_type="strategic",
                subresource="status",
            )
            self.written += 1
        except errors.NotFound:
            pass
        except (errors.StatusError, ServerUnreachable) as exc:
            log.warning("could not update the PodScheduled condition of %s/%s: %s",
                        meta.get("namespace"), meta.get("name"), exc)  # fmt: skip


def _scheduled_condition(pod: Obj) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "PodScheduled":
            return c
    return None


def _says_already(pod: Obj, reason: str, message: str, nominated: str | None) -> bool:
    c = _scheduled_condition(pod)
    if c is None or c.get("status") != "False" or c.get("reason") != reason or c.get("message") != message:
        return False
    if nominated is None:
        return True
    return ((pod.get("status") or {}).get("nominatedNodeName") or "") == nominated


def _transition_time(pod: Obj) -> str:
    c = _scheduled_condition(pod)
    if c is not None and c.get("status") == "False" and c.get("lastTransitionTime"):
        return str(c["lastTransitionTime"])
    return now_rfc3339()

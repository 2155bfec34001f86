"""Creating and deleting a workload's pods with the Events Kubernetes records, in slow-start batches.

`workloads` (shared with the Job, DaemonSet and StatefulSet controllers)
builds pods from templates and reads pod state; this module adds what a
controller that creates and deletes many pods needs, as Kubernetes'
`PodControl` and `slowStartBatch` (pkg/controller/controller_utils.go,
replica_set.go) do: each create or delete is recorded as the Event
`kubectl describe` shows (`SuccessfulCreate` "Created pod: web-x2k9p",
`FailedCreate`, `SuccessfulDelete`, `FailedDelete`) — written in the
background, so that recording never doubles the time a batch takes — and
many creations go out in doubling batches (1, 2, 4, ...), so that a create
that fails for all (a quota, a terminating namespace) costs a few requests
rather than five hundred.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors
from skiff.client import Client, EventRecorder, Informer, resources
from skiff.client.cache import IndexFunc
from skiff.client.tasks import spawn
from skiff.controllers.workloads import condition, is_ready, parse_time

Obj = dict[str, Any]
log = logging.getLogger(__name__)

SLOW_START_INITIAL_BATCH = 1
BURST_REPLICAS = 500  # at most this many creations or deletions per sync (Kubernetes' burstReplicas)
_MAX_GENERATE_NAME_PREFIX = 63 - 5  # the server appends five characters


def pods_prefix(owner_name: str) -> str:
    """`<owner>-` for generateName, cut so that the generated name stays a valid 63-character name."""
    prefix = f"{owner_name}-"
    return prefix if len(prefix) <= _MAX_GENERATE_NAME_PREFIX else owner_name[: _MAX_GENERATE_NAME_PREFIX - 1] + "-"


class BackgroundEvents:
    """Records Events without making the caller wait (as client-go's broadcaster does); `flush()` waits."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self._tasks: set[asyncio.Task[object]] = set()

    def record(self, involved: Obj, *, type: str, reason: str, message: str) -> None:
        task: asyncio.Task[object] = spawn(
            self.recorder.record(involved, type=type, reason=reason, message=message),
            name=f"event {reason}",
            logger=log,
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))


class PodControl:
    """Creates and deletes pods on behalf of a controller, recording an Event for each.

    Events are written in the background, so that recording one never doubles the time a batch
    of creations takes.
    """

    def __init__(self, client: Client, recorder: EventRecorder) -> None:
        self.client = client
        self.events = BackgroundEvents(recorder)

    def record(self, owner: Obj, *, type: str, reason: str, message: str) -> None:
        self.events.record(owner, type=type, reason=reason, message=message)

    async def create_pod(self, pod: Obj, owner: Obj) -> Obj:
        """Create `pod` (from `pod_from_template`); record SuccessfulCreate or FailedCreate on `owner`."""
        namespace = pod["metadata"]["namespace"]
        try:
            created = await self.client.create(resources.PODS, pod, namespace=namespace)
        except errors.StatusError as exc:
            if not namespace_terminating(exc):
                self.record(owner, type="Warning", reason="FailedCreate", message=f"Error creating: {exc}")
            raise
        name = created["metadata"]["name"]
        self.record(owner, type="Normal", reason="SuccessfulCreate", message=f"Created pod: {name}")
        return created

    async def delete_pod(self, namespace: str, name: str, owner: Obj) -> bool:
        """Delete one pod; False if it was gone already. Records SuccessfulDelete or FailedDelete."""
        try:
            await self.client.delete(resources.PODS, name, namespace=namespace)
        except errors.NotFound:
            return False
        except errors.StatusError as exc:
            self.record(owner, type="Warning", reason="FailedDelete", message=f"Error deleting: {exc}")
            raise
        self.record(owner, type="Normal", reason="SuccessfulDelete", message=f"Deleted pod: {name}")
        return True


def namespace_terminating(exc: BaseException) -> bool:
    """A create refused because the namespace is being deleted (no Event: every create would fail)."""
    return isinstance(exc, errors.Forbidden) and "being terminated" in str(exc)


async def slow_start_batch(
    count: int, fn: Callable[[], Awaitable[object]], *, initial: int = SLOW_START_INITIAL_BATCH
) -> tuple[int, Exception | None]:
    """Call `fn` `count` times in batches of 1, 2, 4, ... run concurrently; stop after a batch with a failure.

    Returns (how many calls succeeded, the first error of the failing batch or None), like Kubernetes'
    slowStartBatch: calls never attempted are `count - successes - failures`.
    """
    remaining, batch, successes = count, min(count, initial), 0
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(failures)
        for failure in failures:
            if not isinstance(failure, Exception):  # CancelledError and friends are not failures to count
                raise failure
        if failures:
            first = failures[0]
            assert isinstance(first, Exception)
            return successes, first
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


# --- pod readiness over time -------------------------------------------------------------------


def ready_since(pod: Obj) -> datetime | None:
    """When the pod last became Ready (its Ready condition's lastTransitionTime), if it is ready."""
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def seconds_until_available(pod: Obj, min_ready_seconds: int, now: datetime | None = None) -> float | None:
    """For a ready pod not yet available: seconds until it will be; None otherwise."""
    if min_ready_seconds <= 0 or not is_ready(pod):
        return None
    since = ready_since(pod)
    if since is None:
        return None
    left = since.timestamp() + min_ready_seconds - (now or datetime.now(UTC)).timestamp()
    return left if left >= 0 else None


def ensure_index(informer: Informer, name: str, fn: IndexFunc) -> None:
    """Add an index to a shared informer unless a controller sharing it added one of that name already."""
    try:
        informer.add_index(name, fn)
    except ValueError:
        pass  # same name, same meaning: the index names are the shared functions' names

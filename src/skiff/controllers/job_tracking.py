"""The `batch.kubernetes.io/job-tracking` finalizer: a finished pod cannot vanish before its Job counts it.

Every pod of a Job is created with this finalizer (as Kubernetes does), so
counting is exactly-once: the pod's uid is first written into
`status.uncountedTerminatedPods`, then the finalizer is removed here, then
the pod moves into `succeeded`/`failed`. The informer cache lags behind our
own patches, so `FinalizerTracker` remembers the uids it released until the
cache shows them released too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from skiff.api import errors
from skiff.client import Client, Informer, object_key, resources
from skiff.controllers.workloads import meta, uid_of

Obj = dict[str, Any]
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"


def has_finalizer(pod: Obj) -> bool:
    return TRACKING_FINALIZER in (meta(pod).get("finalizers") or [])


class FinalizerTracker:
    """Which pods still hold the tracking finalizer, and its removal."""

    def __init__(self, client: Client, pods: Informer) -> None:
        self.client = client
        self.pods = pods
        self.removed: set[str] = set()  # pod uids whose finalizer we removed; the cache may lag

    def forget(self, uid: str) -> None:
        """The cache caught up with the removal (or the pod is gone)."""
        self.removed.discard(uid)

    def tracked(self, pod: Obj) -> bool:
        """Whether `pod` still holds the tracking finalizer, as far as the latest cache and our writes know."""
        current = self.pods.get(object_key(pod))
        if current is None or uid_of(current) != uid_of(pod):
            return False
        return has_finalizer(current) and uid_of(current) not in self.removed

    async def release(self, pods: list[Obj]) -> None:
        """Remove the finalizer from `pods` (at once, concurrently)."""

        async def remove(pod: Obj) -> None:
            # as Kubernetes: delete just this finalizer (others' stay), only from this incarnation of the pod
            patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER], "uid": uid_of(pod)}}
            try:
                await self.client.patch(
                    resources.PODS, meta(pod)["name"], patch, namespace=meta(pod)["namespace"], patch_type="strategic"
                )
            except (errors.NotFound, errors.Conflict):
                pass  # gone, or another pod of that name now: nothing of ours to release
            self.removed.add(uid_of(pod))

        await asyncio.gather(*(remove(p) for p in pods))

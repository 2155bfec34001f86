"""The Job controller: run pods until enough succeed, give up after too many fail or too long.

Follows Kubernetes' `pkg/controller/job`. This module is the controller:
informers and their handlers, the entry of `reconcile`, the release of pods
that no longer belong to a live job, and the per-job back-off (failed pods
are replaced after 10 s, 20 s, ... up to 10 min, reset by a success). The
rest is one module per concern:

- `job_sync`: one reconcile of one Job — count finished pods exactly once,
  create or delete pods, write status;
- `job_conditions`: the job's fate (backoffLimit, activeDeadlineSeconds,
  completions, suspend) and its conditions;
- `job_tracking`: the `batch.kubernetes.io/job-tracking` finalizer;
- `job_indexes`: Indexed completion mode;
- `job_podfailure`: `podFailurePolicy` rule matching;
- `job_ttl`: `ttlSecondsAfterFinished` (Kubernetes' ttl-after-finished
  controller, folded in here).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skiff.client import Client, Controller, EventRecorder, RequeueAfter, object_key, resources
from skiff.controllers import job_ttl
from skiff.controllers.context import ControllerContext
from skiff.controllers.job_conditions import is_finished
from skiff.controllers.job_indexes import INDEX_KEY, format_indexes, parse_indexes
from skiff.controllers.job_podfailure import match_pod_failure_policy
from skiff.controllers.job_sync import JobSync
from skiff.controllers.job_tracking import TRACKING_FINALIZER, FinalizerTracker, has_finalizer
from skiff.controllers.workloads import (
    Expectations,
    OwnWrites,
    controlled_by,
    ensure_controller_index,
    is_deleting,
    meta,
    owned_pods,
    uid_of,
)

__all__ = [
    "INDEX_KEY",
    "TRACKING_FINALIZER",
    "JobController",
    "JobSync",
    "format_indexes",
    "is_finished",
    "match_pod_failure_policy",
    "new",
    "parse_indexes",
]

Obj = dict[str, Any]
BY_JOB = "by-job-key"
DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 600.0


def new(ctx: ControllerContext) -> Controller:
    base = float(ctx.options.extra.get("job_backoff_seconds", DEFAULT_BACKOFF))
    return JobController(ctx.client, ctx, backoff_base=base)


def _job_key_of_pod(pod: Obj) -> list[str]:
    """`namespace/name` of the pod's controlling Job, for the BY_JOB index."""
    for ref in meta(pod).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job" and ref.get("apiVersion", "").startswith("batch/"):
            return [f"{meta(pod).get('namespace')}/{ref.get('name')}"]
    return []


class JobController(Controller):
    name = "job"
    workers = 5

    def __init__(self, client: Client, ctx: ControllerContext, *, backoff_base: float = DEFAULT_BACKOFF) -> None:
        super().__init__()
        self.client = client
        self.recorder: EventRecorder = ctx.recorder("job-controller")
        self.backoff_base = backoff_base
        self.expectations = Expectations()
        self.backoff: dict[str, tuple[int, datetime]] = {}  # job key -> (failures since last success, last failure)
        self.own_writes = OwnWrites()
        jobs = ctx.informers.informer(resources.JOBS)
        jobs.add_handlers(  # before `watch`: the write is marked seen before the key is enqueued
            on_add=lambda j: self.own_writes.seen(object_key(j), j),
            on_update=lambda _old, j: self.own_writes.seen(object_key(j), j),
        )
        self.jobs = self.watch(jobs)
        self.pods = self.wait_for(ctx.informers.informer(resources.PODS))
        self.tracking = FinalizerTracker(client, self.pods)
        ensure_controller_index(self.pods)
        try:
            self.pods.add_index(BY_JOB, _job_key_of_pod)
        except ValueError:
            pass
        self.pods.add_handlers(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # --- pod events -----------------------------------------------------------------------------
    def _pod_added(self, pod: Obj) -> None:
        for key in _job_key_of_pod(pod):
            self.expectations.created(key)
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if not has_finalizer(new):
            self.tracking.forget(uid_of(new))
        keys = set(_job_key_of_pod(new)) | set(_job_key_of_pod(old))
        for key in keys:
            if is_deleting(new) and not is_deleting(old):
                self.expectations.deleted(key, object_key(new))
            self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        self.tracking.forget(uid_of(pod))
        for key in _job_key_of_pod(pod):
            self.expectations.deleted(key, object_key(pod))
            self.queue.add(key)

    # --- reconcile ------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None:
            self.own_writes.forget(key)
            self.expectations.forget(key)
            self.backoff.pop(key, None)
            await self._release_orphans(key, uid=None)
            return
        if self.own_writes.pending(key):
            # our last status write is not in the cache yet: its watch event enqueues the key; look again
            # soon anyway, so that an event lost to a relist costs a second, not the 30 s of the timeout
            raise RequeueAfter(1.0)
        await self._release_orphans(key, uid=uid_of(job))  # pods of an earlier job of the same name
        if is_finished(job):
            await self.tracking.release([p for p in owned_pods(self.pods, job) if self.tracking.tracked(p)])
            await job_ttl.expire(self.client, job)
            return
        await JobSync(self, key, job).run()

    async def _release_orphans(self, key: str, uid: str | None) -> None:
        """Release the pods of `key` that no live job of that key controls (an earlier job of that name)."""
        orphans = [
            p for p in self.pods.by_index(BY_JOB, key) if self.tracking.tracked(p) and not controlled_by(p, uid or "")
        ]
        await self.tracking.release(orphans)

    def backoff_remaining(self, key: str, at: datetime) -> float:
        record = self.backoff.get(key)
        if record is None or record[0] <= 0:
            return 0.0
        count, last = record
        delay: float = min(self.backoff_base * 2 ** (count - 1), MAX_BACKOFF)
        return max(0.0, delay - (at - last).total_seconds())

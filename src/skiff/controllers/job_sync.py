"""One reconcile of one Job: count finished pods exactly once, create or delete pods, write status.

Follows Kubernetes' `pkg/controller/job` sync. A Job wants `parallelism`
pods running at a time until `completions` of them have succeeded
(NonIndexed), or until each index has one success (Indexed, see
`job_indexes`). Failed pods are replaced after the controller's exponential
back-off; pods are created in slow-start batches (1, 2, 4, ...), at most
500 per reconcile; `suspend` deletes the running pods.

Counting is exactly-once through the tracking finalizer (`job_tracking`):
a finished pod's uid first goes into `status.uncountedTerminatedPods`
(written), then its finalizer is removed, then it moves into
`succeeded`/`failed`. A pod deleted before it finished counts as failed, and
so does every pod still running when the job fails; a `podFailurePolicy`
(`job_podfailure`) may fail the job at once or ignore the pod. Pods the
controller deletes for other reasons (surplus, suspend, success reached)
lose the finalizer first and are not counted (Kubernetes counts those as
failed too). What the counts decide is `job_conditions`.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from skiff.api import errors
from skiff.client import RequeueAfter, object_key, resources
from skiff.controllers import job_conditions
from skiff.controllers.job_indexes import INDEX_KEY, add_index, format_indexes, index_of, parse_indexes
from skiff.controllers.job_podfailure import match_pod_failure_policy
from skiff.controllers.job_tracking import TRACKING_FINALIZER, has_finalizer
from skiff.controllers.podcontrol import BURST_REPLICAS, slow_start_batch
from skiff.controllers.workloads import (
    has_condition,
    is_active,
    is_deleting,
    is_ready,
    is_terminal,
    meta,
    namespace_terminating,
    now,
    owned_pods,
    phase,
    pod_from_template,
    set_condition,
    uid_of,
)

if TYPE_CHECKING:
    from skiff.controllers.job import JobController

Obj = dict[str, Any]
MAX_UNCOUNTED = 500  # pods moved through uncountedTerminatedPods per status write (Kubernetes: 500)


class JobSync:
    """One reconcile of one Job: count finished pods, decide its fate, create or delete pods, write status."""

    def __init__(self, ctl: JobController, key: str, job: Obj) -> None:
        self.ctl = ctl
        self.client = ctl.client
        self.key = key
        self.job = job
        self.spec: Obj = job.get("spec") or {}
        self.status: Obj = copy.deepcopy(job.get("status") or {})
        self.original: Obj = copy.deepcopy(self.status)
        self.now = now()
        self.pods = owned_pods(ctl.pods, job)
        self.indexed = self.spec.get("completionMode") == "Indexed"
        self.completions: int | None = self.spec.get("completions")
        parallelism = self.spec.get("parallelism")
        self.parallelism = int(parallelism) if parallelism is not None else 1
        self.requeue: float | None = None
        self.events: list[tuple[str, str, str]] = []

    def _requeue_in(self, seconds: float) -> None:
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    async def run(self) -> None:
        try:
            await self._run()
        finally:  # what was done is reported even when a later step fails
            await self._flush_events()
        if self.requeue is not None:
            raise RequeueAfter(self.requeue)

    async def _run(self) -> None:
        await self._count_finished()
        active = [p for p in self.pods if is_active(p)]
        terminating = [p for p in self.pods if is_deleting(p) and not is_terminal(p)]
        suspended = bool(self.spec.get("suspend"))
        self._track_suspension(suspended)
        decided = self._decide(active)
        if decided is not None and decided[0] == "FailureTarget":
            await self._count_finished(fail_running=True)  # as Kubernetes: a failed job's running pods failed
            active = await self._delete_pods(active)
        elif decided is not None:
            active = await self._delete_pods(active)
        elif suspended:
            active = await self._delete_pods(active)
        elif self.ctl.expectations.satisfied(self.key):
            active = await self._manage(active, terminating)
        self._finish_if_done(active, terminating)
        self.status["active"] = len(active)
        self.status["ready"] = sum(1 for p in active if is_ready(p))
        self.status["terminating"] = len(terminating)
        self.status.setdefault("succeeded", 0)
        self.status.setdefault("failed", 0)
        await self._write_status()

    # --- counting -------------------------------------------------------------------------------
    async def _count_finished(self, *, fail_running: bool = False) -> None:
        """Count finished pods exactly once: uid into uncountedTerminatedPods (written), finalizer off, counter up.

        `fail_running`: the job has failed, every pod not finished yet counts as failed.
        """
        uncounted: Obj = self.status.setdefault("uncountedTerminatedPods", {})
        unc_s: list[str] = list(uncounted.get("succeeded") or [])
        unc_f: list[str] = list(uncounted.get("failed") or [])
        by_uid = {uid_of(p): p for p in self.pods}
        new_s: list[Obj] = []
        new_f: list[Obj] = []
        ignored: list[Obj] = []  # failed pods a podFailurePolicy Ignore rule matches: released, never counted
        policy = self.spec.get("podFailurePolicy")
        only_failed = self.spec.get("podReplacementPolicy") == "Failed"
        for pod in self.pods:
            uid = uid_of(pod)
            if not self.ctl.tracking.tracked(pod) or uid in unc_s or uid in unc_f:
                continue
            if len(new_s) + len(new_f) + len(unc_s) + len(unc_f) >= MAX_UNCOUNTED:
                break
            if phase(pod) == "Succeeded":
                new_s.append(pod)
            elif phase(pod) == "Failed" and policy is not None:
                action, message = match_pod_failure_policy(policy, pod)
                if action == "Ignore":
                    ignored.append(pod)
                    continue
                new_f.append(pod)
                if action == "FailJob" and not has_condition(self.status, "FailureTarget"):
                    set_condition(self.status, "FailureTarget", "True", "PodFailurePolicy", str(message), self.now)
            elif phase(pod) == "Failed" or (is_deleting(pod) and not only_failed) or fail_running:
                new_f.append(pod)
        if new_s or new_f:
            unc_s += [uid_of(p) for p in new_s]
            unc_f += [uid_of(p) for p in new_f]
            uncounted["succeeded"], uncounted["failed"] = unc_s, unc_f
            await self._write_status()  # first remember them, then let them go
            self._note_outcomes(new_s, new_f)
        # release every counted-to-be pod still holding the finalizer, then count what is released
        holding = [by_uid[u] for u in unc_s + unc_f if u in by_uid and self.ctl.tracking.tracked(by_uid[u])]
        await self.ctl.tracking.release(holding + ignored)
        released = {u for u in unc_s + unc_f if u not in by_uid or not self.ctl.tracking.tracked(by_uid[u])}
        succeeded_indexes = parse_indexes(self.status.get("completedIndexes"))
        for uid in unc_s:
            if uid in released:
                self.status["succeeded"] = int(self.status.get("succeeded") or 0) + 1
                idx = index_of(by_uid[uid]) if uid in by_uid else None
                if self.indexed and idx is not None and (self.completions is None or idx < self.completions):
                    succeeded_indexes.add(idx)
        for uid in unc_f:
            if uid in released:
                self.status["failed"] = int(self.status.get("failed") or 0) + 1
        if self.indexed:
            self.status["completedIndexes"] = format_indexes(succeeded_indexes)
            self.status["succeeded"] = len(succeeded_indexes)  # an index succeeding twice counts once
        for field, uids in (("succeeded", unc_s), ("failed", unc_f)):
            left = [u for u in uids if u not in released]
            if left:
                uncounted[field] = left
            else:
                uncounted.pop(field, None)  # Go's omitempty: `uncountedTerminatedPods: {}`

    def _note_outcomes(self, new_s: list[Obj], new_f: list[Obj]) -> None:
        count, _last = self.ctl.backoff.get(self.key, (0, self.now))
        if new_s:
            count = 0
        if new_f:
            self.ctl.backoff[self.key] = (count + len(new_f), self.now)
        elif new_s:
            self.ctl.backoff.pop(self.key, None)

    # --- fate: job_conditions decides, this records its events and wake-ups -----------------------
    def _track_suspension(self, suspended: bool) -> None:
        event = job_conditions.track_suspension(self.status, suspended, self.now)
        if event is not None:
            self._event(*event)

    def _decide(self, active: list[Obj]) -> job_conditions.Decision | None:
        """The (condition, reason, message) that decides the job, set now if it was not yet."""
        decision, wait = job_conditions.decide(self.spec, self.status, active, self.now)
        if wait is not None:
            self._requeue_in(wait)
        return decision

    def _finish_if_done(self, active: list[Obj], terminating: list[Obj]) -> None:
        event = job_conditions.finish_if_done(self.status, active, terminating, self.now)
        if event is not None:
            self._event(*event)

    # --- pods -----------------------------------------------------------------------------------
    async def _manage(self, active: list[Obj], terminating: list[Obj]) -> list[Obj]:
        succeeded = int(self.status.get("succeeded") or 0)
        busy = len(active) + (len(terminating) if self.spec.get("podReplacementPolicy") == "Failed" else 0)
        if self.indexed and self.completions is not None:
            return await self._manage_indexed(active, busy)
        if self.completions is None:
            want = self.parallelism if succeeded == 0 else 0
        else:
            want = max(0, min(self.completions - succeeded, self.parallelism))
        if len(active) > want:
            surplus = sorted(active, key=lambda p: (is_ready(p), meta(p).get("creationTimestamp") or ""))
            removed = await self._delete_pods(surplus[: len(active) - want])
            return [p for p in active if p not in surplus[: len(active) - want]] + removed
        missing = want - busy
        self.ctl.log.debug(
            "job %s: succeeded=%d active=%d want=%d missing=%d", self.key, succeeded, len(active), want, missing,
        )  # fmt: skip
        if missing > 0:
            await self._create_pods([None] * missing)
        return active

    async def _manage_indexed(self, active: list[Obj], busy: int) -> list[Obj]:
        assert self.completions is not None
        completed = parse_indexes(self.status.get("completedIndexes"))
        seen: set[int] = set()
        extra: list[Obj] = []
        for pod in sorted(active, key=lambda p: meta(p).get("creationTimestamp") or ""):
            idx = index_of(pod)
            if idx is None or idx >= self.completions or idx in completed or idx in seen:
                extra.append(pod)
            else:
                seen.add(idx)
        if extra:
            await self._delete_pods(extra)
            active = [p for p in active if p not in extra]
        room = self.parallelism - (busy - len(extra))
        wanted = [i for i in range(self.completions) if i not in completed and i not in seen][: max(room, 0)]
        if wanted:
            await self._create_pods(wanted)
        return active

    async def _create_pods(self, indexes: Sequence[int | None]) -> None:
        remaining = self.ctl.backoff_remaining(self.key, self.now)
        if remaining > 0:
            self._requeue_in(remaining)
            return
        indexes = list(indexes)[:BURST_REPLICAS]
        self.ctl.expectations.expect(self.key, adds=len(indexes))
        pending = iter(indexes)
        attempted = 0

        def create_next() -> Awaitable[None]:
            nonlocal attempted
            attempted += 1
            return self._create_one(next(pending))

        # doubling batches, as Kubernetes: a create that fails for all costs a few requests, not hundreds
        _succeeded, error = await slow_start_batch(len(indexes), create_next)
        if error is not None:
            self.ctl.expectations.created(self.key, len(indexes) - attempted)  # never tried: never coming
            raise error

    async def _create_one(self, index: int | None) -> None:
        template = copy.deepcopy(self.spec.get("template") or {})
        name = meta(self.job)["name"]
        labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        generate_name = f"{name}-"
        if index is not None:
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            generate_name = f"{name}-{index}-"
            add_index(template.setdefault("spec", {}), name, index)
        pod = pod_from_template(
            template,
            self.job,
            resources.JOBS,
            generate_name=generate_name,
            labels=labels,
            annotations=annotations,
            finalizers=[TRACKING_FINALIZER],
        )
        try:
            created = await self.client.create(resources.PODS, pod)
        except Exception as exc:
            self.ctl.expectations.created(self.key)
            if namespace_terminating(exc):
                return  # the namespace and this job are going away
            self._event("Warning", "FailedCreate", f"Error creating: {exc}")
            raise
        self._event("Normal", "SuccessfulCreate", f"Created pod: {meta(created)['name']}")

    async def _delete_pods(self, pods: list[Obj]) -> list[Obj]:
        """Delete `pods`; the pods left active (none). The tracking finalizer goes first: the controller's
        own deletions are not counted as failures."""
        if not pods:
            return []
        await self.ctl.tracking.release([p for p in pods if has_finalizer(p)])
        self.ctl.expectations.expect(self.key, deletes=[object_key(p) for p in pods])

        async def delete(pod: Obj) -> None:
            try:
                await self.client.delete(
                    resources.PODS, meta(pod)["name"], namespace=meta(pod)["namespace"],
                    preconditions={"uid": uid_of(pod)},
                )  # fmt: skip
                self._event("Normal", "SuccessfulDelete", f"Deleted pod: {meta(pod)['name']}")
            except (errors.NotFound, errors.Conflict):
                self.ctl.expectations.deleted(self.key, object_key(pod))

        await asyncio.gather(*(delete(p) for p in pods))
        return []

    # --- writing --------------------------------------------------------------------------------
    async def _write_status(self) -> None:
        if self.status == self.original:
            return
        updated = copy.deepcopy(self.job)
        updated["status"] = copy.deepcopy(self.status)
        written = await self.client.update_status(resources.JOBS, updated)
        self.ctl.own_writes.wrote(self.key, written)
        self.job = written
        self.original = copy.deepcopy(self.status)

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def _flush_events(self) -> None:
        events, self.events = self.events, []
        for type_, reason, message in events:
            await self.ctl.recorder.record(self.job, type=type_, reason=reason, message=message)

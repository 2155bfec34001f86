"""The Job controller: run pods until enough succeed, give up after too many fail or too long.

Follows Kubernetes' `pkg/controller/job`. A Job wants `parallelism` pods
running at a time until `completions` of them have succeeded (NonIndexed),
or until each index 0..completions-1 has one success (Indexed: the index is
in the `batch.kubernetes.io/job-completion-index` annotation and label, the
pod's hostname and `JOB_COMPLETION_INDEX`). Failed pods are replaced after
an exponential back-off (10 s, 20 s, ... up to 10 min, reset by a success)
until more than `backoffLimit` have failed (with restartPolicy OnFailure,
container restarts count too); `activeDeadlineSeconds` bounds the whole
run; `suspend` deletes the running pods and resumes later. Pods are created
in slow-start batches (1, 2, 4, ...), at most 500 per reconcile. A finished
job with `ttlSecondsAfterFinished` is deleted that long after it finished
(Kubernetes' ttl-after-finished controller, folded in here). A
`podFailurePolicy` decides per failed pod: FailJob fails the job at once
(reason PodFailurePolicy), Ignore does not count it, Count counts it
(FailIndex, with backoffLimitPerIndex, is not supported).

Counting is exactly-once, as Kubernetes does it with the
`batch.kubernetes.io/job-tracking` finalizer: every pod is created with it,
so a finished pod cannot vanish before it is counted. A finished pod's uid
first goes into `status.uncountedTerminatedPods` (written), then its
finalizer is removed, then it moves into `succeeded`/`failed`. A pod
deleted before it finished counts as failed, and so does every pod still
running when the job fails. Pods the controller deletes for other reasons
(surplus, suspend, success reached) lose the finalizer first and are not
counted (Kubernetes counts those as failed too).

When the job's fate is decided, `SuccessCriteriaMet` or `FailureTarget` is
set at once and the terminal `Complete` or `Failed` condition once no pod
of the job is still running or terminating (Kubernetes 1.31+ behaviour).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, EventRecorder, RequeueAfter, object_key, resources
from skiff.controllers.context import ControllerContext
from skiff.controllers.podcontrol import BURST_REPLICAS, slow_start_batch
from skiff.controllers.workloads import (
    Expectations,
    OwnWrites,
    controlled_by,
    ensure_controller_index,
    format_time,
    has_condition,
    is_active,
    is_deleting,
    is_ready,
    is_terminal,
    meta,
    namespace_terminating,
    now,
    owned_pods,
    parse_time,
    phase,
    pod_from_template,
    set_condition,
    uid_of,
)

Obj = dict[str, Any]
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
BY_JOB = "by-job-key"
DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 600.0
MAX_UNCOUNTED = 500  # pods moved through uncountedTerminatedPods per status write (Kubernetes: 500)


def new(ctx: ControllerContext) -> Controller:
    base = float(ctx.options.extra.get("job_backoff_seconds", DEFAULT_BACKOFF))
    return JobController(ctx.client, ctx, backoff_base=base)


def _job_key_of_pod(pod: Obj) -> list[str]:
    """`namespace/name` of the pod's controlling Job, for the BY_JOB index."""
    for ref in meta(pod).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job" and ref.get("apiVersion", "").startswith("batch/"):
            return [f"{meta(pod).get('namespace')}/{ref.get('name')}"]
    return []


def _has_finalizer(pod: Obj) -> bool:
    return TRACKING_FINALIZER in (meta(pod).get("finalizers") or [])


def _index_of(pod: Obj) -> int | None:
    raw = (meta(pod).get("annotations") or {}).get(INDEX_KEY) or (meta(pod).get("labels") or {}).get(INDEX_KEY)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def parse_indexes(text: str | None) -> set[int]:
    """`"0-2,5"` → {0, 1, 2, 5} (status.completedIndexes)."""
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part.strip():
            continue
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def format_indexes(indexes: set[int]) -> str:
    """{0, 1, 2, 5} → `"0-2,5"`."""
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> tuple[str | None, str | None]:
    """(action, message) of the first `podFailurePolicy` rule a failed pod matches; (None, None) if none.

    As Kubernetes' matchPodFailurePolicy: `onExitCodes` looks at terminated containers (then init
    containers) with a non-zero exit code, optionally of one `containerName`; `onPodConditions` at
    the pod's conditions. The message is Kubernetes' wording, for a FailJob rule's Failed condition.
    """
    status = pod.get("status") or {}
    ns, name = meta(pod).get("namespace"), meta(pod).get("name")
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = str(rule.get("action") or "")
        exits = rule.get("onExitCodes")
        if exits is not None:
            values = {int(v) for v in exits.get("values") or []}
            for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
                if exits.get("containerName") and exits["containerName"] != cs.get("name"):
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code is None or int(code) == 0:
                    continue
                if (int(code) in values) == (exits.get("operator") == "In"):
                    return action, (
                        f"Container {cs.get('name')} for pod {ns}/{name} failed with exit code {code} "
                        f"matching {action} rule at index {index}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            for cond in status.get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get("status", "True"):
                    return (
                        action,
                        f"Pod {ns}/{name} has condition {cond.get('type')} matching {action} rule at index {index}",
                    )
    return None, None


def is_finished(job: Obj) -> bool:
    status = job.get("status") or {}
    return has_condition(status, "Complete") or has_condition(status, "Failed")


class JobController(Controller):
    name = "job"
    workers = 5

    def __init__(self, client: Client, ctx: ControllerContext, *, backoff_base: float = DEFAULT_BACKOFF) -> None:
        super().__init__()
        self.client = client
        self.recorder: EventRecorder = ctx.recorder("job-controller")
        self.backoff_base = backoff_base
        self.expectations = Expectations()
        self.finalizer_removed: set[str] = set()  # pod uids whose finalizer we removed; the cache may lag
        self.backoff: dict[str, tuple[int, datetime]] = {}  # job key -> (failures since last success, last failure)
        self.own_writes = OwnWrites()
        jobs = ctx.informers.informer(resources.JOBS)
        jobs.add_handlers(  # before `watch`: the write is marked seen before the key is enqueued
            on_add=lambda j: self.own_writes.seen(object_key(j), j),
            on_update=lambda _old, j: self.own_writes.seen(object_key(j), j),
        )
        self.jobs = self.watch(jobs)
        self.pods = self.wait_for(ctx.informers.informer(resources.PODS))
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
        if not _has_finalizer(new):
            self.finalizer_removed.discard(uid_of(new))
        keys = set(_job_key_of_pod(new)) | set(_job_key_of_pod(old))
        for key in keys:
            if is_deleting(new) and not is_deleting(old):
                self.expectations.deleted(key, object_key(new))
            self.queue.add(key)

    def _pod_deleted(self, pod: Obj) -> None:
        self.finalizer_removed.discard(uid_of(pod))
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
            await self._remove_finalizers([p for p in owned_pods(self.pods, job) if self._tracked(p)])
            await self._expire(job)
            return
        await JobSync(self, key, job).run()

    async def _expire(self, job: Obj) -> None:
        """`ttlSecondsAfterFinished`: delete the finished job (and, through the GC, its pods) once it passed.

        Kubernetes has a controller of its own for this (ttl-after-finished); it needs nothing but jobs.
        """
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or is_deleting(job):
            return
        status = job.get("status") or {}
        stamps = [
            parse_time(c.get("lastTransitionTime"))
            for c in status.get("conditions") or []
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        ]
        finished = parse_time(status.get("completionTime")) or max((t for t in stamps if t), default=None)
        left = (finished.timestamp() + int(ttl) - now().timestamp()) if finished is not None else 0.0
        if left > 0:
            raise RequeueAfter(left + 0.1)
        try:
            await self.client.delete(
                resources.JOBS, meta(job)["name"], namespace=meta(job)["namespace"],
                propagation_policy="Background", preconditions={"uid": uid_of(job)},
            )  # fmt: skip
        except (errors.NotFound, errors.Conflict):
            pass

    def _tracked(self, pod: Obj) -> bool:
        """Whether `pod` still holds the tracking finalizer, as far as the latest cache and our writes know."""
        current = self.pods.get(object_key(pod))
        if current is None or uid_of(current) != uid_of(pod):
            return False
        return _has_finalizer(current) and uid_of(current) not in self.finalizer_removed

    async def _release_orphans(self, key: str, uid: str | None) -> None:
        orphans = [p for p in self.pods.by_index(BY_JOB, key) if self._tracked(p) and not controlled_by(p, uid or "")]
        await self._remove_finalizers(orphans)

    async def _remove_finalizers(self, pods: list[Obj]) -> None:
        async def remove(pod: Obj) -> None:
            # as Kubernetes: delete just this finalizer (others' stay), only from this incarnation of the pod
            patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER], "uid": uid_of(pod)}}
            try:
                await self.client.patch(
                    resources.PODS, meta(pod)["name"], patch, namespace=meta(pod)["namespace"], patch_type="strategic"
                )
            except (errors.NotFound, errors.Conflict):
                pass  # gone, or another pod of that name now: nothing of ours to release
            self.finalizer_removed.add(uid_of(pod))

        await asyncio.gather(*(remove(p) for p in pods))

    def backoff_remaining(self, key: str, at: datetime) -> float:
        record = self.backoff.get(key)
        if record is None or record[0] <= 0:
            return 0.0
        count, last = record
        delay: float = min(self.backoff_base * 2 ** (count - 1), MAX_BACKOFF)
        return max(0.0, delay - (at - last).total_seconds())


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
            if not self.ctl._tracked(pod) or uid in unc_s or uid in unc_f:
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
        holding = [by_uid[u] for u in unc_s + unc_f if u in by_uid and self.ctl._tracked(by_uid[u])]
        await self.ctl._remove_finalizers(holding + ignored)
        released = {u for u in unc_s + unc_f if u not in by_uid or not self.ctl._tracked(by_uid[u])}
        succeeded_indexes = parse_indexes(self.status.get("completedIndexes"))
        for uid in unc_s:
            if uid in released:
                self.status["succeeded"] = int(self.status.get("succeeded") or 0) + 1
                idx = _index_of(by_uid[uid]) if uid in by_uid else None
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

    # --- fate -----------------------------------------------------------------------------------
    def _track_suspension(self, suspended: bool) -> None:
        was = has_condition(self.status, "Suspended")
        if suspended and not was:
            set_condition(self.status, "Suspended", "True", "JobSuspended", "Job suspended", self.now)
            self._event("Normal", "Suspended", "Job suspended")
        elif not suspended and was:
            set_condition(self.status, "Suspended", "False", "JobResumed", "Job resumed", self.now)
            self.status["startTime"] = format_time(self.now)  # activeDeadlineSeconds counts from the resume
            self._event("Normal", "Resumed", "Job resumed")
        if not suspended and not self.status.get("startTime"):
            self.status["startTime"] = format_time(self.now)

    def _decide(self, active: list[Obj]) -> tuple[str, str, str] | None:
        """The (condition, reason, message) that decides the job, set now if it was not yet."""
        for type_ in ("FailureTarget", "SuccessCriteriaMet"):
            for c in self.status.get("conditions") or []:
                if c.get("type") == type_ and c.get("status") == "True":
                    return type_, str(c.get("reason") or ""), str(c.get("message") or "")
        decision = self._failure(active) or self._success(active)
        if decision is not None:
            set_condition(self.status, decision[0], "True", decision[1], decision[2], self.now)
        return decision

    def _failure(self, active: list[Obj]) -> tuple[str, str, str] | None:
        limit = self.spec.get("backoffLimit")
        if limit is not None and (
            int(self.status.get("failed") or 0) > int(limit) or self._past_backoff_on_failure(active, int(limit))
        ):
            return "FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        deadline = self.spec.get("activeDeadlineSeconds")
        start = parse_time(self.status.get("startTime"))
        if deadline is not None and start is not None and not self.spec.get("suspend"):
            left = start.timestamp() + int(deadline) - self.now.timestamp()
            if left <= 0:
                return "FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"
            self._requeue_in(left)
        return None

    def _past_backoff_on_failure(self, active: list[Obj], limit: int) -> bool:
        """With restartPolicy OnFailure the kubelet restarts containers in place: their restarts count."""
        template_spec = (self.spec.get("template") or {}).get("spec") or {}
        if template_spec.get("restartPolicy") != "OnFailure":
            return False
        restarts = 0
        for pod in active:
            if phase(pod) not in ("Running", "Pending"):
                continue
            status = pod.get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                restarts += int(cs.get("restartCount") or 0)
        return restarts > 0 if limit == 0 else restarts >= limit

    def _success(self, active: list[Obj]) -> tuple[str, str, str] | None:
        succeeded = int(self.status.get("succeeded") or 0)
        if self.indexed and self.completions is not None:
            done = len(parse_indexes(self.status.get("completedIndexes"))) >= self.completions
        elif self.completions is not None:
            done = succeeded >= self.completions
        else:  # work queue: done once one has succeeded and none is still running
            done = succeeded > 0 and not active
        if done:
            return "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
        return None

    def _finish_if_done(self, active: list[Obj], terminating: list[Obj]) -> None:
        unc = self.status.get("uncountedTerminatedPods") or {}
        if active or terminating or unc.get("succeeded") or unc.get("failed"):
            return
        if has_condition(self.status, "FailureTarget"):
            target = next(c for c in self.status["conditions"] if c.get("type") == "FailureTarget")
            set_condition(self.status, "Failed", "True", target["reason"], target["message"], self.now)
            self._event("Warning", target["reason"], target["message"])
        elif has_condition(self.status, "SuccessCriteriaMet"):
            target = next(c for c in self.status["conditions"] if c.get("type") == "SuccessCriteriaMet")
            set_condition(self.status, "Complete", "True", target["reason"], target["message"], self.now)
            self.status["completionTime"] = format_time(self.now)
            self._event("Normal", "Completed", "Job completed")

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
            idx = _index_of(pod)
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
            pod_spec = template.setdefault("spec", {})
            pod_spec.setdefault("hostname", f"{name}-{index}")
            env_var = {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}},
            }
            for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
                env = container.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.append(env_var)
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
        await self.ctl._remove_finalizers([p for p in pods if _has_finalizer(p)])
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

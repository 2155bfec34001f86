"""The CronJob controller: create a Job at each scheduled time, keep a short history of them.

Follows Kubernetes' `pkg/controller/cronjob` (controller v2): no polling.
Each reconcile works out the most recent scheduled time that has not run
yet (since `status.lastScheduleTime`, or the CronJob's creation, but no
further back than `startingDeadlineSeconds`), starts its Job if the
`concurrencyPolicy` allows (Allow; Forbid skips while one runs; Replace
deletes the running ones first), and then asks the work queue to come back
exactly at the next scheduled time (`add_after`). Schedules are parsed by
`skiff.api.cron`, in `spec.timeZone` — when unset, in the controller
manager's local zone as Kubernetes does ($TZ, or where /etc/localtime
points; UTC if neither names a zone).

Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`, so
creating one is idempotent: a reconcile that runs twice for one time (a
stale cache, a restart) finds the Job already there. Each carries the
`batch.kubernetes.io/cronjob-scheduled-timestamp` annotation. The status
keeps `active` (references to running Jobs), `lastScheduleTime` and
`lastSuccessfulTime`; finished Jobs beyond `successfulJobsHistoryLimit` /
`failedJobsHistoryLimit` are deleted, oldest first.
"""

from __future__ import annotations

import copy
import os
from datetime import datetime, timedelta, tzinfo
from typing import Any

from skiff.api import errors
from skiff.api.cron import CronError, Schedule, load_time_zone, parse
from skiff.client import Client, Controller, EventRecorder, RequeueAfter, object_key, resources
from skiff.controllers.context import ControllerContext
from skiff.controllers.workloads import (
    OwnWrites,
    controlled_by,
    ensure_controller_index,
    format_time,
    has_condition,
    meta,
    namespace_terminating,
    now,
    owner_reference,
    parse_time,
    uid_of,
)

Obj = dict[str, Any]
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TOO_MANY_MISSED = 100
NEXT_RUN_SLACK = 0.1  # wake a little after the scheduled second, never a little before it


def new(ctx: ControllerContext) -> Controller:
    return CronJobController(ctx.client, ctx)


def local_zone_name() -> str | None:
    """The IANA name of this process's local time zone ($TZ, else where /etc/localtime points), None if unknown.

    Kubernetes reads a CronJob without `timeZone` in the controller manager's local zone; so do we.
    """
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.path.realpath("/etc/localtime")
        except OSError:
            return None
        _, sep, name = target.partition("/zoneinfo/")
        if not sep:
            return None
    try:
        load_time_zone(name)
    except CronError:
        return None
    return name


def job_name(cronjob_name: str, scheduled: datetime) -> str:
    """`<cronjob>-<minutes since the epoch>`, as Kubernetes names them."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def finished_condition(job: Obj) -> str | None:
    """ "Complete" or "Failed" when the Job is finished, else None."""
    status = job.get("status") or {}
    for type_ in ("Complete", "Failed"):
        if has_condition(status, type_):
            return type_
    return None


def most_recent_missed(schedule: Schedule, earliest: datetime, at: datetime) -> tuple[datetime | None, int]:
    """The latest scheduled time in (earliest, at], and how many there were (capped just past TOO_MANY_MISSED)."""
    t = schedule.next(earliest)
    last: datetime | None = None
    count = 0
    while t is not None and t <= at:
        last, count = t, count + 1
        if count > TOO_MANY_MISSED:
            return _latest_before(schedule, last, at), count
        t = schedule.next(t)
    return last, count


def _latest_before(schedule: Schedule, known: datetime, at: datetime) -> datetime:
    """The latest scheduled time <= `at`, given one (`known`) that is: look back from `at` in doubling steps."""
    step = timedelta(minutes=1)
    while True:
        start = max(known, at - step)
        first = schedule.next(start)
        if first is not None and first <= at:
            last, nxt = first, schedule.next(first)
            while nxt is not None and nxt <= at:
                last, nxt = nxt, schedule.next(nxt)
            return last
        if start == known:
            return known
        step *= 2


def job_reference(job: Obj) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta(job)["name"],
        "namespace": meta(job)["namespace"],
        "uid": uid_of(job),
        "resourceVersion": meta(job).get("resourceVersion", ""),
    }


class CronJobController(Controller):
    name = "cronjob"
    workers = 3

    def __init__(self, client: Client, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = client
        self.recorder: EventRecorder = ctx.recorder("cronjob-controller")
        self.own_writes = OwnWrites()
        self.local_zone = local_zone_name()
        cronjobs = ctx.informers.informer(resources.CRONJOBS)
        cronjobs.add_handlers(
            on_add=lambda o: self.own_writes.seen(object_key(o), o),
            on_update=lambda _old, o: self.own_writes.seen(object_key(o), o),
        )
        self.cronjobs = self.watch(cronjobs)
        self.jobs = self.watch_owned(ctx.informers.informer(resources.JOBS), "CronJob")
        ensure_controller_index(self.jobs)

    async def reconcile(self, key: str) -> None:
        cronjob = self.cronjobs.get(key)
        if cronjob is None:
            self.own_writes.forget(key)
            return
        if self.own_writes.pending(key):
            # our last status write is not in the cache yet: its watch event enqueues the key; look again
            # soon anyway, so that an event lost to a relist costs a second, not the 30 s of the timeout
            raise RequeueAfter(1.0)
        sync = CronJobSync(self, key, cronjob)
        delay = await sync.run()
        if delay is not None:
            raise RequeueAfter(delay)


class CronJobSync:
    """One reconcile of one CronJob."""

    def __init__(self, ctl: CronJobController, key: str, cronjob: Obj) -> None:
        self.ctl = ctl
        self.client = ctl.client
        self.key = key
        self.cronjob = cronjob
        self.spec: Obj = cronjob.get("spec") or {}
        self.status: Obj = copy.deepcopy(cronjob.get("status") or {})
        self.original = copy.deepcopy(self.status)
        self.now = now()
        self.jobs = [j for j in ctl.jobs.by_index("by-controller-uid", uid_of(cronjob))]
        self.events: list[tuple[str, str, str]] = []

    async def run(self) -> float | None:
        delay: float | None = None
        try:
            self._reconcile_active()
            if not meta(self.cronjob).get("deletionTimestamp"):
                delay = await self._schedule()
                await self._cleanup_history()
            await self._write_status()
        finally:  # what was done is reported even when a later step fails
            for type_, reason, message in self.events:
                await self.ctl.recorder.record(self.cronjob, type=type_, reason=reason, message=message)
        return delay

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    # --- status.active --------------------------------------------------------------------------
    def _reconcile_active(self) -> None:
        active: list[Obj] = list(self.status.get("active") or [])
        by_uid = {uid_of(j): j for j in self.jobs}
        active_uids = {r.get("uid") for r in active}
        for job in self.jobs:
            done = finished_condition(job)
            if uid_of(job) not in active_uids and done is None:
                self._event(
                    "Warning",
                    "UnexpectedJob",
                    f"Saw a job that the controller did not create or forgot: {meta(job)['name']}",
                )
            elif uid_of(job) in active_uids and done is not None:
                active = [r for r in active if r.get("uid") != uid_of(job)]
                self._event("Normal", "SawCompletedJob", f"Saw completed job: {meta(job)['name']}, condition: {done}")
            if done == "Complete":
                completed = parse_time((job.get("status") or {}).get("completionTime"))
                last = parse_time(self.status.get("lastSuccessfulTime"))
                if completed is not None and (last is None or completed > last):
                    self.status["lastSuccessfulTime"] = format_time(completed)
        kept = []
        for ref in active:
            if ref.get("uid") in by_uid:
                kept.append(ref)
            elif self._recently_created(ref):
                kept.append(ref)  # created by us a moment ago: the jobs cache may not show it yet
            else:
                self._event("Normal", "MissingJob", f"Active job went missing: {ref.get('name')}")
        if kept:
            self.status["active"] = kept
        else:
            self.status.pop("active", None)

    def _recently_created(self, ref: Obj) -> bool:
        """A reference to a Job scheduled within the last minute whose creation the cache may lag behind."""
        last = parse_time(self.status.get("lastScheduleTime"))
        return (
            last is not None
            and ref.get("name") == job_name(meta(self.cronjob)["name"], last)
            and (self.now - last) < timedelta(minutes=1)
        )

    # --- scheduling -----------------------------------------------------------------------------
    def _parse(self) -> Schedule | None:
        try:
            return parse(str(self.spec.get("schedule") or ""), self.spec.get("timeZone") or self.ctl.local_zone)
        except CronError as exc:
            reason = "UnknownTimeZone" if "time zone" in str(exc) else "UnparseableSchedule"
            self._event("Warning", reason, f"invalid schedule: {self.spec.get('schedule')!r}: {exc}")
            return None

    async def _schedule(self) -> float | None:
        """Start the Job due now, if any; the seconds until the next scheduled time (None: never)."""
        schedule = self._parse()
        if schedule is None or self.spec.get("suspend"):
            return None
        earliest = parse_time(self.status.get("lastScheduleTime")) or parse_time(
            meta(self.cronjob).get("creationTimestamp")
        )
        earliest = earliest or self.now
        deadline = self.spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, self.now - timedelta(seconds=int(deadline)))
        scheduled, missed = most_recent_missed(schedule, earliest, self.now)
        if missed > TOO_MANY_MISSED:
            self._event(
                "Warning",
                "TooManyMissedTimes",
                f"too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds "
                "or check clock skew",
            )
        if scheduled is not None:
            await self._start(scheduled, deadline, schedule.tz)
        return self._next_delay(schedule)

    def _next_delay(self, schedule: Schedule) -> float | None:
        nxt = schedule.next(self.now)
        if nxt is None:
            return None
        self.ctl.log.debug("cronjob %s: next run at %s", self.key, format_time(nxt))
        return max((nxt - self.now).total_seconds(), 0.0) + NEXT_RUN_SLACK

    async def _start(self, scheduled: datetime, deadline: Any, tz: tzinfo) -> None:
        name = job_name(meta(self.cronjob)["name"], scheduled)
        if deadline is not None and scheduled + timedelta(seconds=int(deadline)) < self.now:
            self._event("Warning", "MissSchedule", f"Missed scheduled time to start a job: {format_time(scheduled)}")
            return
        active: list[Obj] = list(self.status.get("active") or [])
        if any(r.get("name") == name for r in active) or any(meta(j)["name"] == name for j in self.jobs):
            return  # this time ran already
        policy = self.spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            self._event(
                "Normal", "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )  # fmt: skip
            return
        if policy == "Replace":
            for ref in active:
                try:
                    await self.client.delete(
                        resources.JOBS, ref["name"], namespace=meta(self.cronjob)["namespace"],
                        propagation_policy="Background", preconditions={"uid": ref.get("uid", "")},
                    )  # fmt: skip
                    self._event("Normal", "SuccessfulDelete", f"Deleted job {ref['name']}")
                except (errors.NotFound, errors.Conflict):
                    pass
            self.status.pop("active", None)
            active = []
        job = await self._create_job(name, scheduled, tz)
        if job is None:
            return
        self.status["active"] = [*active, job_reference(job)]
        self.status["lastScheduleTime"] = format_time(scheduled)

    async def _create_job(self, name: str, scheduled: datetime, tz: tzinfo) -> Obj | None:
        template: Obj = self.spec.get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        annotations = {**(tmeta.get("annotations") or {}), SCHEDULED_TIMESTAMP: scheduled.astimezone(tz).isoformat()}
        job: Obj = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": meta(self.cronjob)["namespace"],
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [owner_reference(self.cronjob, resources.CRONJOBS)],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        if not job["metadata"]["labels"]:
            del job["metadata"]["labels"]
        try:
            created = await self.client.create(resources.JOBS, job)
        except errors.AlreadyExists:
            existing = await self.client.get(resources.JOBS, name, namespace=meta(self.cronjob)["namespace"])
            if not controlled_by(existing, uid_of(self.cronjob)):
                self._event("Warning", "FailedCreate", f"Error creating job: job {name} exists and is not ours")
                return None
            return existing  # created by an earlier reconcile whose status write was lost
        except errors.StatusError as exc:
            if namespace_terminating(exc):
                return None
            self._event("Warning", "FailedCreate", f"Error creating job: {exc}")
            raise
        self._event("Normal", "SuccessfulCreate", f"Created job {name}")
        return created

    # --- history --------------------------------------------------------------------------------
    async def _cleanup_history(self) -> None:
        active_uids = {r.get("uid") for r in self.status.get("active") or []}
        for outcome, field in (("Complete", "successfulJobsHistoryLimit"), ("Failed", "failedJobsHistoryLimit")):
            limit = self.spec.get(field)
            if limit is None:
                continue
            finished = [j for j in self.jobs if finished_condition(j) == outcome and uid_of(j) not in active_uids]
            finished.sort(key=lambda j: ((j.get("status") or {}).get("startTime") or "", meta(j)["name"]))
            for job in finished[: max(len(finished) - int(limit), 0)]:
                try:
                    await self.client.delete(
                        resources.JOBS, meta(job)["name"], namespace=meta(job)["namespace"],
                        propagation_policy="Background", preconditions={"uid": uid_of(job)},
                    )  # fmt: skip
                    self._event("Normal", "SuccessfulDelete", f"Deleted job {meta(job)['name']}")
                except (errors.NotFound, errors.Conflict):
                    pass

    # --- writing --------------------------------------------------------------------------------
    async def _write_status(self) -> None:
        if self.status == self.original:
            return
        updated = copy.deepcopy(self.cronjob)
        updated["status"] = copy.deepcopy(self.status)
        written = await self.client.update_status(resources.CRONJOBS, updated)
        self.ctl.own_writes.wrote(self.key, written)

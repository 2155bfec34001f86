"""A Job's fate: suspension, the success and failure criteria, and the conditions that record them.

Kubernetes 1.31+ behaviour: once the job's fate is decided,
`SuccessCriteriaMet` or `FailureTarget` is set at once, and the terminal
`Complete` or `Failed` condition once no pod of the job is still running or
terminating. A job fails when more than `backoffLimit` pods failed (with
restartPolicy OnFailure, container restarts count too) or when it ran
longer than `activeDeadlineSeconds` (counted from the start or the last
resume); it succeeds when `completions` pods (or indexes) succeeded, or,
without `completions`, once one succeeded and none is still running.

Pure: each function changes the status it is given and answers with the
event to record or the time to look again, so `job_sync` stays about pods
and writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skiff.controllers.job_indexes import parse_indexes
from skiff.controllers.workloads import format_time, has_condition, parse_time, phase, set_condition

Obj = dict[str, Any]
Decision = tuple[str, str, str]  # (condition type, reason, message)
Event = tuple[str, str, str]  # (type, reason, message)


def is_finished(job: Obj) -> bool:
    status = job.get("status") or {}
    return has_condition(status, "Complete") or has_condition(status, "Failed")


def track_suspension(status: Obj, suspended: bool, at: datetime) -> Event | None:
    """The Suspended condition and `startTime` (activeDeadlineSeconds counts from a resume); the event to record."""
    event: Event | None = None
    was = has_condition(status, "Suspended")
    if suspended and not was:
        set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", at)
        event = ("Normal", "Suspended", "Job suspended")
    elif not suspended and was:
        set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", at)
        status["startTime"] = format_time(at)  # activeDeadlineSeconds counts from the resume
        event = ("Normal", "Resumed", "Job resumed")
    if not suspended and not status.get("startTime"):
        status["startTime"] = format_time(at)
    return event


def decide(spec: Obj, status: Obj, active: list[Obj], at: datetime) -> tuple[Decision | None, float | None]:
    """The decision that decides the job, set now if it was not yet; and the seconds until the deadline, if any."""
    for type_ in ("FailureTarget", "SuccessCriteriaMet"):
        for c in status.get("conditions") or []:
            if c.get("type") == type_ and c.get("status") == "True":
                return (type_, str(c.get("reason") or ""), str(c.get("message") or "")), None
    decision, wait = _failure(spec, status, active, at)
    decision = decision or _success(spec, status, active)
    if decision is not None:
        set_condition(status, decision[0], "True", decision[1], decision[2], at)
    return decision, wait


def _failure(spec: Obj, status: Obj, active: list[Obj], at: datetime) -> tuple[Decision | None, float | None]:
    limit = spec.get("backoffLimit")
    if limit is not None and (
        int(status.get("failed") or 0) > int(limit) or _past_backoff_on_failure(spec, active, int(limit))
    ):
        return ("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"), None
    deadline = spec.get("activeDeadlineSeconds")
    start = parse_time(status.get("startTime"))
    if deadline is not None and start is not None and not spec.get("suspend"):
        left = start.timestamp() + int(deadline) - at.timestamp()
        if left <= 0:
            return ("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"), None
        return None, left
    return None, None


def _past_backoff_on_failure(spec: Obj, active: list[Obj], limit: int) -> bool:
    """With restartPolicy OnFailure the kubelet restarts containers in place: their restarts count."""
    template_spec = (spec.get("template") or {}).get("spec") or {}
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


def _success(spec: Obj, status: Obj, active: list[Obj]) -> Decision | None:
    succeeded = int(status.get("succeeded") or 0)
    completions: int | None = spec.get("completions")
    if spec.get("completionMode") == "Indexed" and completions is not None:
        done = len(parse_indexes(status.get("completedIndexes"))) >= completions
    elif completions is not None:
        done = succeeded >= completions
    else:  # work queue: done once one has succeeded and none is still running
        done = succeeded > 0 and not active
    if done:
        return "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
    return None


def finish_if_done(status: Obj, active: list[Obj], terminating: list[Obj], at: datetime) -> Event | None:
    """`Complete` or `Failed` once the job is decided and no pod is left running, terminating or uncounted."""
    unc = status.get("uncountedTerminatedPods") or {}
    if active or terminating or unc.get("succeeded") or unc.get("failed"):
        return None
    if has_condition(status, "FailureTarget"):
        target = next(c for c in status["conditions"] if c.get("type") == "FailureTarget")
        set_condition(status, "Failed", "True", target["reason"], target["message"], at)
        return ("Warning", target["reason"], target["message"])
    if has_condition(status, "SuccessCriteriaMet"):
        target = next(c for c in status["conditions"] if c.get("type") == "SuccessCriteriaMet")
        set_condition(status, "Complete", "True", target["reason"], target["message"], at)
        status["completionTime"] = format_time(at)
        return ("Normal", "Completed", "Job completed")
    return None

"""`ttlSecondsAfterFinished`: a finished Job is deleted that long after it finished.

Kubernetes has a controller of its own for this (ttl-after-finished); it
needs nothing but jobs, so the Job controller calls `expire` on every
finished job it reconciles. The job goes with Background propagation (the
garbage collector removes its pods), guarded by its uid so that a new job
of the same name is never hit.
"""

from __future__ import annotations

from typing import Any

from skiff.api import errors
from skiff.client import Client, RequeueAfter, resources
from skiff.controllers.workloads import is_deleting, meta, now, parse_time, uid_of

Obj = dict[str, Any]


async def expire(client: Client, job: Obj) -> None:
    """Delete the finished `job` once its TTL passed; RequeueAfter the time left before that."""
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
        await client.delete(
            resources.JOBS, meta(job)["name"], namespace=meta(job)["namespace"],
            propagation_policy="Background", preconditions={"uid": uid_of(job)},
        )  # fmt: skip
    except (errors.NotFound, errors.Conflict):
        pass

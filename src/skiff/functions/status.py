"""What a Function's status says, computed from the gateway's view of it (pure).

`replicas`, `invocations` and `errors` (the printer columns of `kubectl get functions`) and one
`Ready` condition: `Running` with instances, `ScaledToZero` with none (still Ready: the next call
starts one), `InstanceFailed` (False) when the last start failed and nothing serves. The condition's
`lastTransitionTime` changes only when its status does, as Kubernetes' conditions do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def function_status(*, replicas: int, invocations: int, errors: int, failure: str) -> dict[str, Any]:
    """The status without the transition time (what is compared with the status written last)."""
    if failure and not replicas:
        ready, reason, message = "False", "InstanceFailed", failure
    elif replicas:
        ready, reason, message = "True", "Running", f"{replicas} instance(s) serving"
    else:
        ready, reason, message = "True", "ScaledToZero", "no instance; the next call starts one"
    cond = {"type": "Ready", "status": ready, "reason": reason, "message": message}
    return {"replicas": replicas, "invocations": invocations, "errors": errors, "conditions": [cond]}


def with_transition(status: dict[str, Any], transition: tuple[str, str]) -> tuple[dict[str, Any], tuple[str, str]]:
    """The status to write, its Ready condition stamped; `transition` is (the Ready status, since when)."""
    cond = status["conditions"][0]
    if transition[0] != cond["status"]:
        transition = (cond["status"], datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {**status, "conditions": [{**cond, "lastTransitionTime": transition[1]}]}, transition

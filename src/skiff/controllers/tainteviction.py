"""Taint eviction: pods on a node with NoExecute taints they do not tolerate are deleted.

Kubernetes' taint eviction controller (`pkg/controller/tainteviction`), run
by the node lifecycle controller for each node it reconciles. Pods on a node
with NoExecute taints they do not tolerate are deleted at once (after a
DisruptionTarget condition and a TaintManagerEviction event); tolerated for
`tolerationSeconds`, they are deleted that long after the taint was first
seen. Kubernetes' DefaultTolerationSeconds admission plugin gives every pod
a toleration of not-ready and unreachable for 300 s; skiff applies that
default here instead: a pod without its own toleration for one of those
taints is treated as tolerating it for `default_eviction_seconds` (the
`--default-eviction-seconds` flag). The evicted pods stay Terminating until
their node returns to finish them (as in Kubernetes); ReplicaSets count them
out and create replacements.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from skiff.api import errors
from skiff.api.tolerations import tolerates
from skiff.client import Client, EventRecorder, object_key, resources, split_key
from skiff.controllers.nodelifecycle_health import now_rfc3339
from skiff.controllers.nodelifecycle_taints import TAINT_NOT_READY, TAINT_UNREACHABLE

Obj = dict[str, Any]


def effective_tolerations(pod: Obj, default_seconds: int) -> list[Obj]:
    """The pod's tolerations plus the DefaultTolerationSeconds ones for not-ready/unreachable it lacks."""
    tolerations = list((pod.get("spec") or {}).get("tolerations") or [])
    for key in (TAINT_NOT_READY, TAINT_UNREACHABLE):
        taint = {"key": key, "effect": "NoExecute"}
        if not any(tolerates(t, taint) for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": default_seconds}
            )
    return tolerations


def toleration_time(taints: list[Obj], tolerations: list[Obj]) -> float | None:
    """Seconds the pod may stay: 0 if some taint is not tolerated, None if all are forever."""
    used = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return 0.0
        used.append(match)
    seconds = [t["tolerationSeconds"] for t in used if t.get("tolerationSeconds") is not None]
    if not seconds:
        return None
    return float(max(min(int(s) for s in seconds), 0))


class TaintEvictor:
    """The eviction countdowns of pods on tainted nodes, and the evictions when they run out."""

    def __init__(
        self, client: Client, recorder: EventRecorder, *, default_eviction_seconds: int, log: logging.Logger
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.default_eviction_seconds = default_eviction_seconds
        self.log = log
        self.evictions: dict[str, float] = {}  # pod key -> when its eviction countdown started (monotonic)

    def forget(self, pod_key: str) -> None:
        self.evictions.pop(pod_key, None)

    async def evict(self, taints: list[Obj], pods: list[Obj], wake: list[float]) -> None:
        """The taint eviction controller's work for one node's pods (`taints`: the node's NoExecute ones)."""
        now = time.monotonic()
        for pod in pods:
            key = object_key(pod)
            if pod["metadata"].get("deletionTimestamp"):
                self.evictions.pop(key, None)
                continue
            allowed = (
                toleration_time(taints, effective_tolerations(pod, self.default_eviction_seconds)) if taints else None
            )
            if allowed is None:
                if self.evictions.pop(key, None) is not None:
                    await self.recorder.record(
                        pod, type="Normal", reason="TaintManagerEviction", message=f"Cancelling deletion of Pod {key}"
                    )
                continue
            started = self.evictions.setdefault(key, now)
            due = started + allowed
            if now < due:
                wake.append(due - now)
                continue
            await self._delete_pod(pod)
            self.evictions.pop(key, None)

    async def _delete_pod(self, pod: Obj) -> None:
        key = object_key(pod)
        ns, name = split_key(key)
        await self.recorder.record(
            pod, type="Normal", reason="TaintManagerEviction", message=f"Marking for deletion Pod {key}"
        )
        updated = copy.deepcopy(pod)
        conditions = [
            c for c in (updated.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"
        ]
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": now_rfc3339(),
                "lastProbeTime": None,
            }
        )
        updated.setdefault("status", {})["conditions"] = conditions
        try:
            await self.client.update_status(resources.PODS, updated)
            await self.client.delete(resources.PODS, name, namespace=ns, preconditions={"uid": pod["metadata"]["uid"]})
        except errors.NotFound:
            return
        self.log.info("evicted pod %s from node %s", key, (pod.get("spec") or {}).get("nodeName"))

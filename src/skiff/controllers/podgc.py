"""The pod garbage collector: removes pods nobody else will ever finish.

Kubernetes' `pkg/controller/podgc`. A pod bound to a node is finished by
that node's kubelet; when the Node object is gone (deleted, or a simulated
node set torn down), nothing would ever remove its pods, and a namespace
holding them would stay Terminating forever. Every `GC_PERIOD` seconds this
controller force-deletes (grace 0):

- orphaned pods: bound to a node that has not existed for `QUARANTINE`
  seconds (checked against the server, not just the cache); they are first
  marked Failed with a DisruptionTarget condition (reason DeletionByPodGC),
  as Kubernetes does;
- terminating pods that were never scheduled (no kubelet will see them);
- terminating pods on a node that is not Ready and carries the
  `node.kubernetes.io/out-of-service` taint (the operator's word that the
  machine is gone);
- finished pods (Succeeded/Failed) beyond `terminated_pod_threshold`
  (12,500), oldest first.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, Informer, RequeueAfter, object_key, resources, split_key
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
GC_PERIOD = 20.0
QUARANTINE = 40.0
TERMINATED_POD_THRESHOLD = 12500
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
KEY = "podgc"


def _ready(node: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


class PodGCController(Controller):
    name = "podgc"
    workers = 1

    def __init__(
        self,
        client: Client,
        pods: Informer,
        nodes: Informer,
        *,
        terminated_pod_threshold: int = TERMINATED_POD_THRESHOLD,
        period: float = GC_PERIOD,
        quarantine: float = QUARANTINE,
    ) -> None:
        super().__init__()
        self.client = client
        self.pods = self.wait_for(pods)
        self.nodes = self.wait_for(nodes)
        self.threshold = terminated_pod_threshold
        self.period = period
        self.quarantine = quarantine
        self.missing_since: dict[str, float] = {}  # node name -> when its pods were first seen without it
        nodes.add_handlers(on_add=lambda _n: self.enqueue_key(KEY), on_delete=self._node_deleted)

    def _node_deleted(self, _node: Obj) -> None:
        self.enqueue_after(KEY, self.quarantine + 1.0)

    async def reconcile(self, key: str) -> None:
        if key != KEY:
            return
        pods = self.pods.list()
        await self._gc_terminated(pods)
        await self._gc_orphaned(pods)
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if not meta.get("deletionTimestamp"):
                continue
            node = self.nodes.get(spec.get("nodeName") or "")
            if not spec.get("nodeName"):
                await self._force_delete(pod, "unscheduled and terminating")
            elif (
                node is not None
                and not _ready(node)
                and any(t.get("key") == OUT_OF_SERVICE for t in (node.get("spec") or {}).get("taints") or [])
            ):
                await self._force_delete(pod, f"terminating on out-of-service node {spec['nodeName']}")
        raise RequeueAfter(self.period)

    async def _gc_terminated(self, pods: list[Obj]) -> None:
        if self.threshold <= 0:
            return
        done = [p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        excess = len(done) - self.threshold
        if excess <= 0:
            return
        done.sort(key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
        for pod in done[:excess]:
            await self._force_delete(pod, "over the terminated pod threshold")

    async def _gc_orphaned(self, pods: list[Obj]) -> None:
        now = time.monotonic()
        missing: dict[str, list[Obj]] = {}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node and self.nodes.get(node) is None:
                missing.setdefault(node, []).append(pod)
        for node in list(self.missing_since):
            if node not in missing:
                del self.missing_since[node]
        for node, orphans in missing.items():
            since = self.missing_since.setdefault(node, now)
            if now - since < self.quarantine:
                self.enqueue_after(KEY, self.quarantine - (now - since) + 0.5)
                continue
            try:  # the cache may lag: ask the server before deleting anything
                await self.client.get(resources.NODES, node)
                continue
            except errors.NotFound:
                pass
            for pod in orphans:
                await self._mark_failed(pod, f"PodGC: node {node} no longer exists")
                await self._force_delete(pod, f"orphaned: node {node} no longer exists")
            del self.missing_since[node]

    async def _mark_failed(self, pod: Obj, message: str) -> None:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        updated = copy.deepcopy(pod)
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        conditions.append(
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC", "message": message}
        )
        updated["status"] = {**status, "phase": "Failed", "conditions": conditions}
        try:
            await self.client.update_status(resources.PODS, updated)
        except (errors.NotFound, errors.Conflict):
            pass  # gone, or changed: deleted below all the same

    async def _force_delete(self, pod: Obj, why: str) -> None:
        ns, name = split_key(object_key(pod))
        try:
            await self.client.delete(
                resources.PODS,
                name,
                namespace=ns,
                grace_period_seconds=0,
                preconditions={"uid": pod["metadata"]["uid"]},
            )
        except (errors.NotFound, errors.Conflict):
            return
        self.log.info("deleted pod %s/%s: %s", ns, name, why)


def new(ctx: ControllerContext) -> Controller:
    f = ctx.informers
    controller = PodGCController(
        ctx.client,
        f.informer(resources.PODS),
        f.informer(resources.NODES),
        terminated_pod_threshold=int(ctx.options.extra.get("terminated_pod_gc_threshold", TERMINATED_POD_THRESHOLD)),
    )
    controller.enqueue_key(KEY)
    return controller

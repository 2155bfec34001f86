"""The pvc-protection controller: a claim being deleted goes only once no running pod uses it.

As kube-controller-manager's pvc-protection (`pkg/controller/volume/pvcprotection`):
a PersistentVolumeClaim with a deletionTimestamp keeps its
`kubernetes.io/pvc-protection` finalizer while any pod of its namespace that
has not finished (phase other than Succeeded or Failed) names it in a
persistentVolumeClaim volume; when the last such pod goes, the finalizer is
removed and the claim is deleted (and its volume released).
"""

from __future__ import annotations

from typing import Any

from skiff.api import errors
from skiff.client import Controller
from skiff.client.resources import PODS, PVCS
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
FINALIZER = "kubernetes.io/pvc-protection"


def claims_of(pod: Obj) -> list[str]:
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return [str((v.get("persistentVolumeClaim") or {}).get("claimName")) for v in volumes
            if v.get("persistentVolumeClaim")]  # fmt: skip


def in_use(pods: list[Obj], namespace: str, claim: str) -> bool:
    return any(
        p["metadata"].get("namespace") == namespace
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and claim in claims_of(p)
        for p in pods
    )


class PVCProtectionController(Controller):
    name = "pvc-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.claims = self.watch(ctx.informers.informer(PVCS))
        self.pods = self.wait_for(ctx.informers.informer(PODS))
        self.pods.add_handlers(on_update=lambda _o, n: self._pod(n), on_delete=self._pod)

    def _pod(self, pod: Obj) -> None:
        for claim in claims_of(pod):
            self.enqueue_key(f"{pod['metadata']['namespace']}/{claim}")

    async def reconcile(self, key: str) -> None:
        pvc = self.claims.get(key)
        if pvc is None or not pvc["metadata"].get("deletionTimestamp"):
            return
        finalizers = pvc["metadata"].get("finalizers") or []
        namespace, name = pvc["metadata"]["namespace"], pvc["metadata"]["name"]
        if FINALIZER not in finalizers or in_use(self.pods.list(), namespace, name):
            return
        patch = {"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER],
                              "resourceVersion": pvc["metadata"]["resourceVersion"]}}  # fmt: skip
        try:
            await self.client.patch(PVCS, name, patch, namespace=namespace)
        except errors.NotFound:
            pass


def new(ctx: ControllerContext) -> PVCProtectionController:
    return PVCProtectionController(ctx)

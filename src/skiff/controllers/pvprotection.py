"""The pv-protection controller: a volume being deleted goes only once it is no longer bound.

As kube-controller-manager's pv-protection (`pkg/controller/volume/pvprotection`):
a PersistentVolume with a deletionTimestamp keeps its `kubernetes.io/pv-protection`
finalizer while its phase is Bound; once its claim is gone (Released) or it
was never bound, the finalizer is removed and the volume deleted.
"""

from __future__ import annotations

from typing import Any

from skiff.api import errors
from skiff.client import Controller
from skiff.client.resources import PVS
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
FINALIZER = "kubernetes.io/pv-protection"


class PVProtectionController(Controller):
    name = "pv-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.volumes = self.watch(ctx.informers.informer(PVS))

    async def reconcile(self, key: str) -> None:
        pv = self.volumes.get(key)
        if pv is None or not pv["metadata"].get("deletionTimestamp"):
            return
        finalizers = pv["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers or (pv.get("status") or {}).get("phase") == "Bound":
            return
        patch = {"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER],
                              "resourceVersion": pv["metadata"]["resourceVersion"]}}  # fmt: skip
        try:
            await self.client.patch(PVS, key, patch)
        except errors.NotFound:
            pass


def new(ctx: ControllerContext) -> PVProtectionController:
    return PVProtectionController(ctx)

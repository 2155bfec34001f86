"""The PersistentVolume binder: claims meet volumes, and volumes whose claim is gone are released.

As kube-controller-manager's persistentvolume-binder (`pkg/controller/volume/persistentvolume`),
level-triggered over two kinds of keys:

- `claim/<ns>/<name>`: a Pending claim is bound to the volume `pvbinding.find_volume`
  picks (the volume's `claimRef` first, then its phase Bound, then the claim's
  `volumeName` with `pv.kubernetes.io/bind-completed`, then the claim's status
  Bound with capacity and access modes). With no volume to take, a claim of a class
  whose binding mode is WaitForFirstConsumer waits for the scheduler's
  `volume.kubernetes.io/selected-node` (event WaitForFirstConsumer); otherwise it is
  handed to the class's provisioner through the `volume.kubernetes.io/storage-provisioner`
  annotation (event ExternalProvisioning). A claim whose volume vanished is Lost.
- `volume/<name>`: a volume without claimRef is Available; one whose claim is gone
  (or was recreated with another uid) is Released, and a released static volume
  with reclaimPolicy Delete is Failed (skiff has no plugin that deletes it; dynamic
  volumes are deleted by their provisioner). Retain keeps the volume and its data.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api import errors
from skiff.api import pvbinding as pb
from skiff.client import Controller
from skiff.client.resources import PVCS, PVS, STORAGECLASSES
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
WAIT_MESSAGE = "waiting for first consumer to be created before binding"


class PersistentVolumeBinder(Controller):
    name = "persistentvolume-binder"
    workers = 1  # one binder: two claims never race for one volume

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.recorder = ctx.recorder("persistentvolume-controller")
        self.claims = self.wait_for(ctx.informers.informer(PVCS))
        self.volumes = self.wait_for(ctx.informers.informer(PVS))
        self.classes = self.wait_for(ctx.informers.informer(STORAGECLASSES))
        self.claims.add_handlers(on_add=self._claim, on_update=lambda _o, n: self._claim(n), on_delete=self._claim)
        self.volumes.add_handlers(on_add=self._volume, on_update=lambda _o, n: self._volume(n),
                                  on_delete=self._volume)  # fmt: skip

    def _claim(self, pvc: Obj) -> None:
        meta = pvc["metadata"]
        self.enqueue_key(f"claim/{meta['namespace']}/{meta['name']}")
        name = (pvc.get("spec") or {}).get("volumeName")
        if name:
            self.enqueue_key(f"volume/{name}")
        for pv in self.volumes.list():  # volumes pre-bound to this claim, or released by its deletion
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            if ref.get("name") == meta["name"] and ref.get("namespace") == meta["namespace"]:
                self.enqueue_key(f"volume/{pv['metadata']['name']}")

    def _volume(self, pv: Obj) -> None:
        self.enqueue_key(f"volume/{pv['metadata']['name']}")
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if ref.get("name") and ref.get("namespace"):
            self.enqueue_key(f"claim/{ref['namespace']}/{ref['name']}")
        else:  # a new free volume may suit a pending claim
            for pvc in self.claims.list():
                if (pvc.get("status") or {}).get("phase") == "Pending":
                    self._claim_key(pvc)

    def _claim_key(self, pvc: Obj) -> None:
        self.enqueue_key(f"claim/{pvc['metadata']['namespace']}/{pvc['metadata']['name']}")

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition("/")
        if kind == "claim":
            pvc = self.claims.get(rest)
            if pvc is not None and not pvc["metadata"].get("deletionTimestamp"):
                await self.sync_claim(copy.deepcopy(pvc))
        elif kind == "volume":
            pv = self.volumes.get(rest)
            if pv is not None:  # one being deleted too: it waits (pv-protection) until it is released
                await self.sync_volume(copy.deepcopy(pv))

    # --- claims ---------------------------------------------------------------------------------
    async def sync_claim(self, pvc: Obj) -> None:
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        if spec.get("volumeName"):
            pv = self.volumes.get(spec["volumeName"])
            if pv is None:
                if (pvc.get("status") or {}).get("phase") == "Bound":
                    await self._claim_status(pvc, "Lost")
                    await self.recorder.record(pvc, type="Warning", reason="ClaimLost",
                                               message="Bound claim has lost its PersistentVolume. Data on the "
                                               "volume is lost!")  # fmt: skip
                return
            if pb.claim_ref_matches(pv, pvc):
                await self._bind(copy.deepcopy(pv), pvc)
            return
        node = (meta.get("annotations") or {}).get(pb.SELECTED_NODE)
        sc = self.classes.get(pb.class_of(pvc)) if pb.class_of(pvc) else None
        delayed = sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        if delayed and not node:
            await self.recorder.record(pvc, type="Normal", reason="WaitForFirstConsumer", message=WAIT_MESSAGE)
            return
        labels = pb.node_labels_for(node) if node else None
        pv = pb.find_volume(self.volumes.list(), pvc, node_labels=labels)
        if pv is not None:
            await self._bind(copy.deepcopy(pv), pvc)
            return
        if not pb.class_of(pvc):
            return  # no class: wait for a matching volume to be made by hand
        if sc is None:
            message = f'storageclass.storage.k8s.io "{pb.class_of(pvc)}" not found'
            await self.recorder.record(pvc, type="Warning", reason="ProvisioningFailed", message=message)
            return
        provisioner = str(sc.get("provisioner", ""))
        annotations = meta.setdefault("annotations", {})
        if annotations.get(pb.STORAGE_PROVISIONER) != provisioner:
            annotations[pb.STORAGE_PROVISIONER] = annotations[pb.BETA_STORAGE_PROVISIONER] = provisioner
            await self.client.update(PVCS, pvc, namespace=meta["namespace"])
        message = (f"Waiting for a volume to be created either by the external provisioner '{provisioner}' or "
                   "manually by the system administrator. If volume creation is delayed, please verify that the "
                   "provisioner is running and correctly registered.")  # fmt: skip
        await self.recorder.record(pvc, type="Normal", reason="ExternalProvisioning", message=message)

    async def _bind(self, pv: Obj, pvc: Obj) -> None:
        """Bind both ways, in Kubernetes' order: volume claimRef, volume status, claim spec, claim status."""
        meta = pvc["metadata"]
        spec = pv.setdefault("spec", {})
        ref = spec.get("claimRef") or {}
        if ref.get("uid") != meta["uid"]:
            spec["claimRef"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                                "name": meta["name"], "uid": meta["uid"],
                                "resourceVersion": meta.get("resourceVersion", "")}  # fmt: skip
            if not ref:
                pv["metadata"].setdefault("annotations", {})[pb.BOUND_BY_CONTROLLER] = "yes"
            pv = await self.client.update(PVS, pv)
        if (pv.get("status") or {}).get("phase") != "Bound":
            pv["status"] = {**(pv.get("status") or {}), "phase": "Bound"}
            pv = await self.client.update_status(PVS, pv)
        annotations = meta.setdefault("annotations", {})
        named = pvc.get("spec", {}).get("volumeName") == pv["metadata"]["name"]
        if not named or annotations.get(pb.BIND_COMPLETED) != "yes":
            pvc.setdefault("spec", {})["volumeName"] = pv["metadata"]["name"]
            annotations[pb.BIND_COMPLETED] = "yes"
            if not ref:
                annotations[pb.BOUND_BY_CONTROLLER] = "yes"
            pvc = await self.client.update(PVCS, pvc, namespace=meta["namespace"])
        status = pvc.get("status") or {}
        want = {"phase": "Bound", "accessModes": list(pv["spec"].get("accessModes") or []),
                "capacity": dict(pv["spec"].get("capacity") or {})}  # fmt: skip
        if any(status.get(k) != v for k, v in want.items()):
            pvc["status"] = {**status, **want}
            await self.client.update_status(PVCS, pvc, namespace=meta["namespace"])

    async def _claim_status(self, pvc: Obj, phase: str) -> None:
        pvc["status"] = {**(pvc.get("status") or {}), "phase": phase}
        await self.client.update_status(PVCS, pvc, namespace=pvc["metadata"]["namespace"])

    # --- volumes --------------------------------------------------------------------------------
    async def sync_volume(self, pv: Obj) -> None:
        spec, status = pv.get("spec") or {}, pv.get("status") or {}
        phase = status.get("phase")
        ref = spec.get("claimRef")
        if not ref:
            if phase != "Available":
                await self._volume_status(pv, "Available")
            return
        pvc = self.claims.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if pvc is not None and (not ref.get("uid") or ref.get("uid") == pvc["metadata"].get("uid")):
            if (pvc.get("spec") or {}).get("volumeName") == pv["metadata"]["name"]:
                if phase != "Bound":
                    await self._volume_status(pv, "Bound")
            elif phase not in ("Available", "Bound"):
                await self._volume_status(pv, "Available")  # pre-bound, waiting for its claim
            return
        if not ref.get("uid"):
            if phase != "Available":
                await self._volume_status(pv, "Available")  # pre-bound to a claim not made yet
            return
        # the claim is gone: release the volume
        if phase not in ("Released", "Failed"):
            await self._volume_status(pv, "Released")
            return
        policy = spec.get("persistentVolumeReclaimPolicy", "Retain")
        dynamic = pb.PROVISIONED_BY in (pv["metadata"].get("annotations") or {})
        if phase == "Released" and policy == "Delete" and not dynamic:
            message = "error getting deleter volume plugin for volume: no deletable volume plugin matched"
            await self.recorder.record(pv, type="Warning", reason="VolumeFailedDelete", message=message)
            await self._volume_status(pv, "Failed", message)

    async def _volume_status(self, pv: Obj, phase: str, message: str = "") -> None:
        status: Obj = {"phase": phase}
        if message:
            status["message"] = message
        pv["status"] = status
        try:
            await self.client.update_status(PVS, pv)
        except errors.NotFound:
            pass


def new(ctx: ControllerContext) -> PersistentVolumeBinder:
    return PersistentVolumeBinder(ctx)

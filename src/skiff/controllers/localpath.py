"""The local-path provisioner: a directory on the chosen node for each claim of the `local-path` class.

As k3s's local-path-provisioner (rancher.io/local-path), as a controller of the
controller manager. A claim handed to it (the binder's
`volume.kubernetes.io/storage-provisioner` annotation) and placed by the
scheduler (`volume.kubernetes.io/selected-node`) gets a PersistentVolume
`pvc-<claim uid>`: a hostPath `/var/lib/skiff/storage/<ns>_<claim>_<volume>` (the directory is
`--default-local-storage-path`)
(type DirectoryOrCreate) with node affinity to that node, the claim's size
and access modes, the class's reclaim policy, and a claimRef to the claim, so
the binder binds the two.

The directory is made by the node agent when a pod first mounts the volume
(mode 0777, as the provisioner's setup script makes it): no helper pod is
needed for that, and a claim no pod uses costs nothing on disk. Removing it
must happen on its node, so when a Released volume's policy is Delete the
provisioner runs k3s's helper pod there (`helper-pod-delete-<volume>` in
kube-system: busybox, `rm -rf` of the directory through a hostPath of its
parent), then deletes the helper pod and the volume; Retain keeps both.
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

from skiff.api import errors
from skiff.api import pvbinding as pb
from skiff.client import Controller, RequeueAfter
from skiff.client.resources import PODS, PVCS, PVS, STORAGECLASSES
from skiff.controllers.context import ControllerContext

Obj = dict[str, Any]
PROVISIONER = "rancher.io/local-path"
ALSO_PROVISIONER = "skiff.dev/local-path"
DEFAULT_DIR = "/var/lib/skiff/storage"
HELPER_NAMESPACE = "kube-system"
HELPER_IMAGE = "busybox"
HELPER_LABEL = "skiff.dev/local-path-helper"
NODE_ANNOTATION = "local.path.provisioner/selected-node"
POLL = 1.0


def volume_name(pvc: Obj) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def volume_for(pvc: Obj, sc: Obj, node: str, base: str = DEFAULT_DIR) -> Obj:
    """The PersistentVolume made for `pvc` on `node`."""
    meta, spec = pvc["metadata"], pvc.get("spec") or {}
    name = volume_name(pvc)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {pb.PROVISIONED_BY: str(sc.get("provisioner", PROVISIONER)),
                                                   NODE_ANNOTATION: node}},
        "spec": {
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
            "storageClassName": pb.class_of(pvc),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": posixpath.join(base, f"{meta['namespace']}_{meta['name']}_{name}"),
                         "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": pb.HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion", "")},
        },
    }  # fmt: skip


def volume_node(pv: Obj) -> str:
    annotations = pv["metadata"].get("annotations") or {}
    if annotations.get(NODE_ANNOTATION):
        return str(annotations[NODE_ANNOTATION])
    for term in ((((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
                 .get("nodeSelectorTerms") or []):  # fmt: skip
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == pb.HOSTNAME_LABEL and expr.get("operator") == "In" and expr.get("values"):
                return str(expr["values"][0])
    return ""


def helper_pod(pv: Obj, node: str) -> Obj:
    """k3s's teardown helper: `rm -rf` of the volume's directory, on its node."""
    path = str(pv["spec"]["hostPath"]["path"])
    parent = posixpath.dirname(path)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"helper-pod-delete-{pv['metadata']['name']}", "namespace": HELPER_NAMESPACE,
                     "labels": {HELPER_LABEL: "delete"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "helper-pod", "image": HELPER_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/sh", "-c", 'rm -rf "$VOL_DIR"'],
                            "env": [{"name": "VOL_DIR", "value": path}],
                            "volumeMounts": [{"name": "data", "mountPath": parent}]}],
            "volumes": [{"name": "data", "hostPath": {"path": parent, "type": "DirectoryOrCreate"}}],
        },
    }  # fmt: skip


class LocalPathProvisioner(Controller):
    name = "local-path-provisioner"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.base = ctx.options.default_local_storage_path or DEFAULT_DIR
        self.recorder = ctx.recorder(PROVISIONER)
        self.claims = self.wait_for(ctx.informers.informer(PVCS))
        self.volumes = self.wait_for(ctx.informers.informer(PVS))
        self.classes = self.wait_for(ctx.informers.informer(STORAGECLASSES))
        self.claims.add_handlers(on_add=self._claim, on_update=lambda _o, n: self._claim(n))
        self.volumes.add_handlers(on_add=self._volume, on_update=lambda _o, n: self._volume(n))

    def _claim(self, pvc: Obj) -> None:
        self.enqueue_key(f"claim/{pvc['metadata']['namespace']}/{pvc['metadata']['name']}")

    def _volume(self, pv: Obj) -> None:
        self.enqueue_key(f"volume/{pv['metadata']['name']}")

    def ours(self, provisioner: Any) -> bool:
        return provisioner in (PROVISIONER, ALSO_PROVISIONER)

    async def reconcile(self, key: str) -> None:
        kind, _, rest = key.partition("/")
        if kind == "claim":
            pvc = self.claims.get(rest)
            if pvc is not None:
                await self.provision(pvc)
        elif kind == "volume":
            pv = self.volumes.get(rest)
            if pv is not None:
                await self.reclaim(copy.deepcopy(pv))

    async def provision(self, pvc: Obj) -> None:
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        annotations = meta.get("annotations") or {}
        if meta.get("deletionTimestamp") or spec.get("volumeName") or not self.ours(
            annotations.get(pb.STORAGE_PROVISIONER) or annotations.get(pb.BETA_STORAGE_PROVISIONER)
        ):
            return
        if self.volumes.get(volume_name(pvc)) is not None:
            return  # made already; the binder binds it
        sc = self.classes.get(pb.class_of(pvc))
        if sc is None or not self.ours(sc.get("provisioner")):
            return
        node = annotations.get(pb.SELECTED_NODE)
        if not node:
            message = "failed to provision volume: configuration error, no node was specified"
            await self.recorder.record(pvc, type="Warning", reason="ProvisioningFailed", message=message)
            return
        claim = f"{meta['namespace']}/{meta['name']}"
        message = f'External provisioner is provisioning volume for claim "{claim}"'
        await self.recorder.record(pvc, type="Normal", reason="Provisioning", message=message)
        try:
            pv = await self.client.create(PVS, volume_for(pvc, sc, node, self.base))
        except errors.AlreadyExists:
            return
        await self.recorder.record(pvc, type="Normal", reason="ProvisioningSucceeded",
                                   message=f"Successfully provisioned volume {pv['metadata']['name']}")  # fmt: skip

    async def reclaim(self, pv: Obj) -> None:
        meta, spec = pv["metadata"], pv.get("spec") or {}
        if not self.ours((meta.get("annotations") or {}).get(pb.PROVISIONED_BY)):
            return
        if (pv.get("status") or {}).get("phase") != "Released" or spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        name = f"helper-pod-delete-{meta['name']}"
        try:
            helper = await self.client.get(PODS, name, namespace=HELPER_NAMESPACE)
        except errors.NotFound:
            await self.client.create(PODS, helper_pod(pv, volume_node(pv)), namespace=HELPER_NAMESPACE)
            raise RequeueAfter(POLL) from None
        phase = (helper.get("status") or {}).get("phase")
        if phase == "Failed":
            message = f"helper pod {name} failed to remove {spec['hostPath']['path']}"
            await self.recorder.record(pv, type="Warning", reason="VolumeFailedDelete", message=message)
            await self.client.delete(PODS, name, namespace=HELPER_NAMESPACE, grace_period_seconds=0)
            raise RequeueAfter(10.0)
        if phase != "Succeeded":
            raise RequeueAfter(POLL)
        await self.client.delete(PODS, name, namespace=HELPER_NAMESPACE, grace_period_seconds=0)
        try:
            await self.client.delete(PVS, meta["name"])
        except errors.NotFound:
            pass
        self.log.info("deleted volume %s and its directory %s", meta["name"], spec["hostPath"]["path"])


def new(ctx: ControllerContext) -> LocalPathProvisioner:
    return LocalPathProvisioner(ctx)

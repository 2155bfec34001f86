"""The StorageObjectInUseProtection admission plugin: claims and volumes in use are not deleted under a pod.

As Kubernetes' `plugin/pkg/admission/storage/storageobjectinuseprotection`:
every new PersistentVolumeClaim gets the finalizer `kubernetes.io/pvc-protection`
and every new PersistentVolume `kubernetes.io/pv-protection`. Deleting one
then only marks it; the pvc-protection controller lifts the finalizer once no
running pod uses the claim, the pv-protection controller once the volume is
no longer bound, and only then does it go (and a local-path volume's data with it).
"""

from __future__ import annotations

from typing import Any

from skiff.apiserver.admission_plugins.chain import Attributes, Plugin

Obj = dict[str, Any]
PVC_FINALIZER = "kubernetes.io/pvc-protection"
PV_FINALIZER = "kubernetes.io/pv-protection"


class StorageObjectInUseProtection(Plugin):
    name = "StorageObjectInUseProtection"
    resources = frozenset({("", "persistentvolumeclaims"), ("", "persistentvolumes")})

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation != "CREATE":
            return
        finalizer = PVC_FINALIZER if attrs.resource.plural == "persistentvolumeclaims" else PV_FINALIZER
        meta = attrs.obj.setdefault("metadata", {})
        finalizers = meta.get("finalizers")
        finalizers = finalizers if isinstance(finalizers, list) else []
        if finalizer not in finalizers:
            meta["finalizers"] = [*finalizers, finalizer]

"""PersistentVolumes, PersistentVolumeClaims and StorageClasses: validation as Kubernetes has it.

From `pkg/apis/core/validation` and `pkg/apis/storage/validation`: a claim
needs access modes and a positive `resources.requests.storage`; once made,
its spec is fixed except that `volumeName` may be set once (by the binder)
and a bound claim's storage request may grow. A volume needs a capacity,
access modes and exactly one volume source (hostPath and local are what
skiff nodes mount; a local volume needs node affinity); its source, volume
mode and node affinity never change. A StorageClass needs a provisioner,
and its provisioner, parameters, reclaim policy and binding mode never
change. New volumes and claims start in phase Pending. `ensure_local_path_class`
creates the `local-path` class the server ships, as k3s's local-storage addon.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from skiff.api import errors, quantity, validation
from skiff.apiserver.options import WriteOptions
from skiff.apiserver.strategy import FieldErrors, Strategy

if TYPE_CHECKING:
    from skiff.apiserver.registry import Registry
    from skiff.apiserver.store import Store

log = logging.getLogger(__name__)
Obj = dict[str, Any]

ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
VOLUME_MODES = ["Block", "Filesystem"]
RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
CLASS_RECLAIM_POLICIES = ["Delete", "Retain"]
BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]
VOLUME_SOURCES = (
    "hostPath", "local", "nfs", "csi", "iscsi", "fc", "rbd", "cephfs", "cinder", "flexVolume", "glusterfs",
    "azureFile", "azureDisk", "awsElasticBlockStore", "gcePersistentDisk", "vsphereVolume", "quobyte",
    "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos", "flocker",
)  # fmt: skip

LOCAL_PATH_CLASS = "local-path"
LOCAL_PATH_PROVISIONER = "rancher.io/local-path"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def _access_modes(spec: Obj, path: str, errs: FieldErrors) -> None:
    modes = spec.get("accessModes") or []
    if not modes:
        errs.append(validation.required(path, "at least 1 access mode is required"))
        return
    for mode in modes:
        if mode not in ACCESS_MODES:
            errs.append(validation.not_supported(path, mode, ACCESS_MODES))
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errs.append(validation.forbidden(path, "may not use ReadWriteOncePod with other access modes"))


def _storage(amounts: Any, path: str, errs: FieldErrors, *, missing: str = "Required value") -> None:
    raw = (amounts or {}).get("storage") if isinstance(amounts, dict) else None
    if raw is None:
        errs.append(("FieldValueRequired", path, missing))
        return
    try:
        value = quantity.parse(raw)
    except ValueError:
        errs.append(validation.invalid(path, raw, "quantities must match the regular expression "
                                       "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))  # fmt: skip
        return
    if value <= 0:
        errs.append(validation.invalid(path, raw, "must be greater than zero"))


def _enum(spec: Obj, key: str, path: str, supported: list[str], errs: FieldErrors) -> None:
    value = spec.get(key)
    if value is not None and value not in supported:
        errs.append(validation.not_supported(path, value, supported))


def _class_name(spec: Obj, path: str, errs: FieldErrors) -> None:
    name = spec.get("storageClassName")
    if name:
        errs.extend(validation.invalid(path, name, m) for m in validation.is_dns1123_subdomain(str(name)))


def validate_claim(pvc: Obj) -> FieldErrors:
    spec = pvc.get("spec") or {}
    errs: FieldErrors = []
    _access_modes(spec, "spec.accessModes", errs)
    _storage((spec.get("resources") or {}).get("requests"), "spec.resources[storage]", errs)
    _class_name(spec, "spec.storageClassName", errs)
    _enum(spec, "volumeMode", "spec.volumeMode", VOLUME_MODES, errs)
    return errs


def validate_claim_update(new: Obj, old: Obj) -> FieldErrors:
    errs = validate_claim(new)
    new_spec, old_spec = copy.deepcopy(new.get("spec") or {}), copy.deepcopy(old.get("spec") or {})
    if not old_spec.get("volumeName") and new_spec.get("volumeName"):  # the binder fills volumeName in once
        old_spec["volumeName"] = new_spec["volumeName"]
    bound = (old.get("status") or {}).get("phase") == "Bound"
    new_requests = (new_spec.get("resources") or {}).get("requests") or {}
    old_requests = (old_spec.get("resources") or {}).get("requests") or {}
    if bound:  # a bound claim may ask for more storage, never less
        try:
            if quantity.parse(new_requests.get("storage", 0)) < quantity.parse(old_requests.get("storage", 0)):
                errs.append(validation.forbidden("spec.resources.requests.storage",
                                                 "field can not be less than previous value"))  # fmt: skip
        except ValueError:
            pass
        for spec in (new_spec, old_spec):
            spec.get("resources", {}).pop("requests", None)
    for spec in (new_spec, old_spec):
        spec.pop("volumeAttributesClassName", None)
    if new_spec != old_spec:
        errs.append(validation.forbidden("spec", "spec is immutable after creation except resources.requests "
                                         "and volumeAttributesClassName for bound claims"))  # fmt: skip
    return errs


def volume_source(spec: Obj) -> list[str]:
    return [k for k in VOLUME_SOURCES if k in spec]


def validate_volume(pv: Obj) -> FieldErrors:
    spec = pv.get("spec") or {}
    errs: FieldErrors = []
    _access_modes(spec, "spec.accessModes", errs)
    _storage(spec.get("capacity"), "spec.capacity", errs)
    _class_name(spec, "spec.storageClassName", errs)
    _enum(spec, "volumeMode", "spec.volumeMode", VOLUME_MODES, errs)
    _enum(spec, "persistentVolumeReclaimPolicy", "spec.persistentVolumeReclaimPolicy", RECLAIM_POLICIES, errs)
    sources = volume_source(spec)
    if not sources:
        errs.append(validation.required("spec", "must specify a volume type"))
    elif len(sources) > 1:
        errs.append(validation.forbidden(f"spec.{sources[1]}", "may not specify more than 1 volume type"))
    for kind in ("hostPath", "local"):
        if kind in spec and not (spec[kind] or {}).get("path"):
            errs.append(validation.required(f"spec.{kind}.path"))
    if "local" in spec and not spec.get("nodeAffinity"):
        errs.append(validation.required("spec.nodeAffinity", "Local volume requires node affinity"))
    return errs


def validate_volume_update(new: Obj, old: Obj) -> FieldErrors:
    errs = validate_volume(new)
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    if {k: ns.get(k) for k in VOLUME_SOURCES} != {k: os_.get(k) for k in VOLUME_SOURCES}:
        errs.append(validation.forbidden("spec.persistentvolumesource",
                                         "spec.persistentvolumesource is immutable after creation"))  # fmt: skip
    if ns.get("volumeMode") != os_.get("volumeMode"):
        errs.append(validation.invalid("spec.volumeMode", ns.get("volumeMode"), "field is immutable"))
    if os_.get("nodeAffinity") and ns.get("nodeAffinity") != os_.get("nodeAffinity"):
        errs.append(validation.invalid("spec.nodeAffinity", ns.get("nodeAffinity"), "field is immutable"))
    return errs


class ClaimStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(has_status=True, tracks_generation=False)

    def initial_status(self, obj: Obj) -> Any:
        return {"phase": "Pending"}

    def validate(self, obj: Obj) -> FieldErrors:
        return validate_claim(obj)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        return validate_claim_update(new, old)


class VolumeStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(has_status=True, tracks_generation=False)

    def initial_status(self, obj: Obj) -> Any:
        return {"phase": "Pending"}

    def validate(self, obj: Obj) -> FieldErrors:
        return validate_volume(obj)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        return validate_volume_update(new, old)


class StorageClassStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(tracks_generation=False)

    def validate(self, obj: Obj) -> FieldErrors:
        errs: FieldErrors = []
        provisioner = obj.get("provisioner")
        if not provisioner:
            errs.append(validation.required("provisioner"))
        elif len(str(provisioner)) > 63:
            errs.append(validation.too_long("provisioner", 63))
        _enum(obj, "reclaimPolicy", "reclaimPolicy", CLASS_RECLAIM_POLICIES, errs)
        _enum(obj, "volumeBindingMode", "volumeBindingMode", BINDING_MODES, errs)
        return errs

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        errs = self.validate(new)
        for key in ("parameters", "provisioner", "reclaimPolicy"):
            if new.get(key) != old.get(key):
                errs.append(validation.forbidden(key, f"updates to {key} are forbidden."))
        if new.get("volumeBindingMode") != old.get("volumeBindingMode"):
            errs.append(validation.forbidden("volumeBindingMode", "field is immutable"))
        return errs


def local_path_class() -> Obj:
    """k3s's `local-path` class: the default, node-local, bound when a pod first uses the claim."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


async def ensure_local_path_class(store: Store, registry: Registry) -> None:
    """Create the local-path StorageClass when it is missing (at every start, as k3s applies its addons)."""
    rt = registry.get("storage.k8s.io", "v1", "storageclasses")
    assert rt is not None
    try:
        await store.create(rt, None, local_path_class(), WriteOptions())
    except errors.AlreadyExists:
        return
    log.info("created StorageClass %s (default, provisioner %s)", LOCAL_PATH_CLASS, LOCAL_PATH_PROVISIONER)

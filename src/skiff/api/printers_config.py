"""Table printers for core/v1 configuration, quota, storage and legacy kinds.

ConfigMap and Secret (DATA), ServiceAccount, ResourceQuota (REQUEST/LIMIT),
PersistentVolume and PersistentVolumeClaim (CAPACITY, ACCESS MODES
"RWO,ROX", STORAGECLASS), ReplicationController and PodTemplate: ports of
Kubernetes' pkg/printers/internalversion, split from `printers_core` (pods,
nodes, services, events) only to keep both modules readable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skiff.api.printers import (
    AGE,
    CONTAINERS_DESC,
    IMAGES_DESC,
    NAME,
    Cell,
    Obj,
    Printer,
    age,
    as_dict,
    as_int,
    as_list,
    as_str,
    column,
    container_cells,
    deleting,
    dig,
    format_labels,
    meta,
    name_of,
    quantity,
    wide,
)

LIMIT_DESC = (
    "Limits control the maximum amount of cpu/memory that a container may use independent of contention on "
    "the node."
)


def resource_quota_row(rq: Obj, now: datetime) -> list[Cell]:
    hard, used = as_dict(dig(rq, "status", "hard")), as_dict(dig(rq, "status", "used"))
    requests: list[str] = []
    limits: list[str] = []
    for res in sorted(hard):
        text = f"{res}: {quantity(used.get(res))}/{quantity(hard[res])}"
        pieces = res.split(".")
        (limits if len(pieces) > 1 and pieces[0] == "limits" else requests).append(text)
    return [name_of(rq), ", ".join(requests), ", ".join(limits), age(rq, now)]


def access_modes(modes: Any) -> str:
    present = {as_str(m) for m in as_list(modes)}
    short = {
        "ReadWriteOnce": "RWO",
        "ReadOnlyMany": "ROX",
        "ReadWriteMany": "RWX",
        "ReadWriteOncePod": "RWOP",
    }
    return ",".join(abbr for mode, abbr in short.items() if mode in present)


def _storage_class(obj: Obj) -> str:
    beta = as_dict(meta(obj).get("annotations")).get("volume.beta.kubernetes.io/storage-class")
    return as_str(beta) if beta is not None else as_str(dig(obj, "spec", "storageClassName"))


def pv_row(pv: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(pv.get("spec")), as_dict(pv.get("status"))
    claim = as_dict(spec.get("claimRef"))
    claim_cell = (
        f"{as_str(claim.get('namespace'))}/{as_str(claim.get('name'))}" if spec.get("claimRef") else ""
    )
    return [
        name_of(pv),
        quantity(dig(spec, "capacity", "storage")),
        access_modes(spec.get("accessModes")),
        as_str(spec.get("persistentVolumeReclaimPolicy")),
        "Terminating" if deleting(pv) else as_str(status.get("phase")),
        claim_cell,
        _storage_class(pv),
        as_str(spec.get("volumeAttributesClassName")) or "<unset>",
        as_str(status.get("reason")),
        age(pv, now),
        as_str(spec.get("volumeMode")) or "<unset>",
    ]


def pvc_row(pvc: Obj, now: datetime) -> list[Cell]:
    spec, status = as_dict(pvc.get("spec")), as_dict(pvc.get("status"))
    volume = as_str(spec.get("volumeName"))
    capacity = modes = ""
    if volume:
        capacity, modes = (
            quantity(dig(status, "capacity", "storage")),
            access_modes(status.get("accessModes")),
        )
    return [
        name_of(pvc),
        "Terminating" if deleting(pvc) else as_str(status.get("phase")),
        volume,
        capacity,
        modes,
        _storage_class(pvc),
        as_str(spec.get("volumeAttributesClassName")) or "<unset>",
        age(pvc, now),
        as_str(spec.get("volumeMode")) or "<unset>",
    ]


def replication_controller_row(rc: Obj, now: datetime) -> list[Cell]:
    spec = as_dict(rc.get("spec"))
    names, images = container_cells(dig(spec, "template", "spec"))
    return [
        name_of(rc),
        as_int(spec["replicas"]) if "replicas" in spec else 1,  # defaulted to 1 by the API server
        as_int(dig(rc, "status", "replicas")),
        as_int(dig(rc, "status", "readyReplicas")),
        age(rc, now),
        names,
        images,
        format_labels(spec.get("selector")),
    ]


def _config_map_row(cm: Obj, now: datetime) -> list[Cell]:
    return [name_of(cm), len(as_dict(cm.get("data"))) + len(as_dict(cm.get("binaryData"))), age(cm, now)]


def _secret_row(secret: Obj, now: datetime) -> list[Cell]:
    return [name_of(secret), as_str(secret.get("type")), len(as_dict(secret.get("data"))), age(secret, now)]


def _service_account_row(sa: Obj, now: datetime) -> list[Cell]:
    return [name_of(sa), age(sa, now)]


def _pod_template_row(pt: Obj, now: datetime) -> list[Cell]:
    names, images = container_cells(dig(pt, "template", "spec"))
    return [name_of(pt), names, images, format_labels(dig(pt, "template", "metadata", "labels"))]


PV_COLUMNS = (
    NAME,
    column("Capacity", desc="capacity is the description of the persistent volume's resources."),
    column("Access Modes", desc="accessModes contains all ways the volume can be mounted."),
    column("Reclaim Policy", desc="What happens to a persistent volume when released from its claim."),
    column("Status", desc="phase indicates if a volume is available, bound to a claim, or released."),
    column("Claim", desc="claimRef: the PersistentVolumeClaim bound to this volume."),
    column("StorageClass", desc="StorageClass of the pv"),
    column("VolumeAttributesClass", desc="VolumeAttributesClass of the pv"),
    column("Reason", desc="reason is a brief CamelCase string that describes any failure."),
    AGE,
    wide("VolumeMode", "volumeMode: a formatted filesystem or a raw block device."),
)
PVC_COLUMNS = (
    NAME,
    column("Status", desc="phase represents the current phase of PersistentVolumeClaim."),
    column("Volume", desc="volumeName is the binding reference to the PersistentVolume backing this claim."),
    column("Capacity", desc="capacity represents the actual resources of the underlying volume."),
    column(
        "Access Modes", desc="accessModes contains the actual access modes the volume backing the PVC has."
    ),
    column("StorageClass", desc="StorageClass of the pvc"),
    column("VolumeAttributesClass", desc="VolumeAttributesClass of the pvc"),
    AGE,
    wide("VolumeMode", "volumeMode defines what type of volume is required by the claim."),
)
RC_COLUMNS = (
    NAME,
    column("Desired", "integer", "Replicas is the number of desired replicas."),
    column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    column("Ready", "integer", "The number of ready replicas for this replication controller."),
    AGE,
    wide("Containers", CONTAINERS_DESC),
    wide("Images", IMAGES_DESC),
    wide("Selector", "Selector is a label query over pods that should match the Replicas count."),
)
QUOTA_COLUMNS = (
    NAME,
    column("Request", desc="Request represents a minimum amount of cpu/memory that a container may consume."),
    column("Limit", desc=LIMIT_DESC),
    AGE,
)


CONFIG: dict[tuple[str, str], Printer] = {
    ("", "ConfigMap"): Printer(
        (NAME, column("Data", desc="Data contains the configuration data."), AGE), _config_map_row
    ),
    ("", "Secret"): Printer(
        (
            NAME,
            column("Type", desc="Used to facilitate programmatic handling of secret data."),
            column("Data", desc="Data contains the secret data."),
            AGE,
        ),
        _secret_row,
    ),
    # Kubernetes 1.35 dropped the SECRETS column (kubernetes/kubernetes#117160)
    ("", "ServiceAccount"): Printer((NAME, AGE), _service_account_row),
    ("", "ResourceQuota"): Printer(QUOTA_COLUMNS, resource_quota_row),
    ("", "PersistentVolume"): Printer(PV_COLUMNS, pv_row),
    ("", "PersistentVolumeClaim"): Printer(PVC_COLUMNS, pvc_row),
    ("", "ReplicationController"): Printer(RC_COLUMNS, replication_controller_row),
    ("", "PodTemplate"): Printer(
        (
            NAME,
            column("Containers", desc=CONTAINERS_DESC),
            column("Images", desc=IMAGES_DESC),
            column("Pod Labels", desc="The labels for the pod template."),
        ),
        _pod_template_row,
    ),
}

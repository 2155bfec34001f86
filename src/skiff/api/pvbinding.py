"""Which PersistentVolume a claim may bind to: pure logic the binder and the scheduler share.

As Kubernetes' `pkg/controller/volume/persistentvolume/util` (`FindMatchingVolume`):
a volume pre-bound to the claim (its `claimRef` names it) wins; otherwise
the smallest volume that is not bound elsewhere and not being released,
of the claim's class and volume mode, offering every access mode the claim
asks for, at least as large as its storage request, whose labels match the
claim's selector and (when the claim waits for a node) whose node affinity
admits that node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from skiff.api import quantity, selectors

Obj = dict[str, Any]

SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def _storage(amounts: Any) -> Fraction:
    raw = (amounts or {}).get("storage") if isinstance(amounts, dict) else None
    try:
        return quantity.parse(raw) if raw is not None else Fraction(0)
    except ValueError:
        return Fraction(0)


def requested(pvc: Obj) -> Fraction:
    return _storage(((pvc.get("spec") or {}).get("resources") or {}).get("requests"))


def capacity(pv: Obj) -> Fraction:
    return _storage((pv.get("spec") or {}).get("capacity"))


def class_of(obj: Obj) -> str:
    return str((obj.get("spec") or {}).get("storageClassName") or "")


def claim_ref_matches(pv: Obj, pvc: Obj) -> bool:
    """Whether the volume's claimRef names this claim (and, if it has one, this claim's uid)."""
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    meta = pvc["metadata"]
    if ref.get("name") != meta.get("name") or ref.get("namespace") != meta.get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == meta.get("uid")


def node_term_matches(term: Obj, labels: Mapping[str, str]) -> bool:
    for expr in term.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def node_affinity_allows(pv: Obj, labels: Mapping[str, str]) -> bool:
    """The volume's required node affinity admits a node with `labels` (no affinity: any node)."""
    required = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(node_term_matches(t, labels) for t in terms)


def volume_matches(pv: Obj, pvc: Obj, *, node_labels: Mapping[str, str] | None = None) -> bool:
    """Could `pvc` bind to `pv` (ignoring who else wants it)?"""
    spec, cspec = pv.get("spec") or {}, pvc.get("spec") or {}
    if pv["metadata"].get("deletionTimestamp") or (pv.get("status") or {}).get("phase") in ("Released", "Failed"):
        return False
    if spec.get("claimRef") and not claim_ref_matches(pv, pvc):
        return False
    if class_of(pv) != class_of(pvc):
        return False
    if (spec.get("volumeMode") or "Filesystem") != (cspec.get("volumeMode") or "Filesystem"):
        return False
    if not set(cspec.get("accessModes") or []) <= set(spec.get("accessModes") or []):
        return False
    if capacity(pv) < requested(pvc):
        return False
    selector = cspec.get("selector")
    if selector and not selectors.label_selector_from_dict(selector).matches(pv["metadata"].get("labels") or {}):
        return False
    return node_labels is None or node_affinity_allows(pv, node_labels)


def find_volume(pvs: Iterable[Obj], pvc: Obj, *, node_labels: Mapping[str, str] | None = None) -> Obj | None:
    """The volume the claim should bind to: one pre-bound to it, else the smallest that fits."""
    best: Obj | None = None
    for pv in pvs:
        if not volume_matches(pv, pvc, node_labels=node_labels):
            continue
        if (pv.get("spec") or {}).get("claimRef"):
            return pv  # pre-bound to this very claim
        if best is None or capacity(pv) < capacity(best):
            best = pv
    return best


def node_labels_for(node_name: str) -> dict[str, str]:
    """The labels a node is known to have from its name alone (enough for local volumes' affinity)."""
    return {HOSTNAME_LABEL: node_name}

"""The two strategies custom resources need: one for CRDs, one for the objects of a CRD.

`CRDStrategy` is apiextensions-apiserver's `customresourcedefinition`
strategy: v1 defaults, validation (`skiff.api.crd_validation`),
`status.storedVersions` kept up to date, and deletion that waits on the
`customresourcecleanup.apiextensions.k8s.io` finalizer until the CRD
controller has deleted every object of the kind.

`CustomResourceStrategy` serves the objects of one CRD version: with the
status subresource, status is dropped on create and kept on update (written
only through `/status`, checked there against the schema), and generation
bumps on any change but metadata and status; without it, status is part of
the object; field selectors may use metadata.name, metadata.namespace and the
version's `selectableFields`. Pruning, defaulting and schema validation of the main resource
happen in `admission` from the schema the ResourceType carries.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api import crd_validation, errors
from skiff.api.structural import compile_schema
from skiff.api.structural import validate as validate_schema
from skiff.api.structural_defaults import apply_defaults, prune
from skiff.apiserver.objects import now_rfc3339
from skiff.apiserver.strategy import FieldErrors, Strategy

Obj = dict[str, Any]


def set_condition(status: Obj, kind: str, value: str, reason: str, message: str, now: str) -> None:
    """Set a CRD condition; its lastTransitionTime moves only when its status does."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == kind:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now
            cond.update({"status": value, "reason": reason, "message": message})
            return
    conditions.append(
        {"type": kind, "status": value, "lastTransitionTime": now, "reason": reason, "message": message}
    )


def condition_true(crd: Obj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )


class CRDStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(has_status=True)

    def initial_status(self, obj: Obj) -> Any:
        return {"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": []}

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        crd_validation.set_defaults(obj)
        self._record_storage_version(obj)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        crd_validation.set_defaults(new)
        self._record_storage_version(new)

    @staticmethod
    def _record_storage_version(obj: Obj) -> None:
        version = crd_validation.storage_version(obj)
        status = obj.setdefault("status", {})
        stored = status.setdefault("storedVersions", [])
        if version and version not in stored:
            stored.append(version)

    def validate(self, obj: Obj) -> FieldErrors:
        return crd_validation.validate(obj) + crd_validation.validate_stored_versions(obj)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        return crd_validation.validate_update(new, old) + crd_validation.validate_stored_versions(new)

    def begin_delete(self, obj: Obj) -> bool:
        """Upon the first delete: the cleanup finalizer and a Terminating condition; the controller does the rest."""
        meta = obj["metadata"]
        finalizers = meta.setdefault("finalizers", [])
        if crd_validation.CLEANUP_FINALIZER not in finalizers:
            finalizers.append(crd_validation.CLEANUP_FINALIZER)
        set_condition(
            obj.setdefault("status", {}),
            "Terminating",
            "True",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            now_rfc3339(),
        )
        return True


class CustomResourceStrategy(Strategy):
    """Objects of one CRD version, checked against that version's structural schema."""

    def __init__(
        self,
        *,
        kind: str,
        group: str,
        schema: Obj,
        status: bool,
        terminating: bool = False,
        selectable_fields: tuple[str, ...] = (),
    ) -> None:
        super().__init__(has_status=status, selectable_fields=selectable_fields)
        self.kind, self.group, self.schema = kind, group, schema
        self.terminating = terminating
        status_schema = (schema.get("properties") or {}).get("status")
        self._status = (
            compile_schema({"type": "object", "properties": {"status": status_schema}})
            if isinstance(status_schema, dict)
            else None
        )

    def prepare_for_create(self, obj: Obj) -> None:
        if self.terminating:
            raise errors.MethodNotAllowed("create not allowed while custom resource definition is terminating")
        if self.has_status:
            obj.pop("status", None)
        obj["metadata"]["generation"] = 1

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        if self.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        skipped = ("metadata", "status") if self.has_status else ("metadata",)
        gen = old["metadata"].get("generation", 1)
        if {k: v for k, v in new.items() if k not in skipped} != {k: v for k, v in old.items() if k not in skipped}:
            gen += 1
        new["metadata"]["generation"] = gen

    def prepare_for_status_update(self, new: Obj, old: Obj) -> Obj:
        merged = super().prepare_for_status_update(new, old)
        if "status" not in new:
            merged.pop("status", None)
        if self._status is not None and "status" in merged:
            view = {"status": merged["status"]}
            prune(view, self._status)
            apply_defaults(view, self._status)
            merged["status"] = view["status"]
            errs = validate_schema(view, self._status)
            if errs:
                name = merged["metadata"].get("name", "")
                raise errors.field_error(self.kind, name, errs, group=self.group)
        return merged


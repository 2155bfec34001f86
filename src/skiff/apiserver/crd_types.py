"""From a CustomResourceDefinition to the `ResourceType`s the registry serves.

One `ResourceType` per served version, all sharing storage under
`/registry/<group>/<plural>/` in the storage version (conversion `None`:
only `apiVersion` is rewritten on the way in and out, as Kubernetes' nop
converter does). Each carries what the generic machinery needs in `extra`:
the structural schema (admission prunes, defaults and validates with it;
OpenAPI publishes it), the printer columns (Table output), the scale
subresource's paths, the selectable fields (field selectors on custom fields),
and `custom` (no strategic merge patch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skiff.api import crd_selectable
from skiff.api.structural import compile_schema
from skiff.apiserver.crd_strategy import CustomResourceStrategy
from skiff.apiserver.registry import ALL_VERBS, ResourceType

Obj = dict[str, Any]

_ANY_OBJECT: Obj = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _rewrite(api_version: str) -> Callable[[Obj], Obj]:
    def convert(obj: Obj) -> Obj:
        if obj.get("apiVersion") == api_version:
            return obj
        out = dict(obj)
        out["apiVersion"] = api_version
        return out

    return convert


def resource_types(crd: Obj, *, terminating: bool = False) -> list[ResourceType]:
    """The served versions of `crd` as resource types (names as accepted in status, else as in spec)."""
    spec = crd.get("spec") or {}
    accepted = (crd.get("status") or {}).get("acceptedNames") or {}
    names = accepted if accepted.get("plural") and accepted.get("kind") else spec.get("names") or {}
    group = str(spec.get("group") or "")
    plural, kind = str(names.get("plural") or ""), str(names.get("kind") or "")
    storage = next((v.get("name") for v in spec.get("versions") or [] if v.get("storage")), None)
    if not (group and plural and kind and storage):
        return []
    storage_api_version = f"{group}/{storage}"
    out: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        name = str(version.get("name"))
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or _ANY_OBJECT
        subresources = version.get("subresources") or {}
        subs = tuple(s for s in ("status", "scale") if s in subresources)
        selectable = crd_selectable.field_names(version.get("selectableFields"))
        extra: Obj = {
            "custom": True,
            "crd": (crd.get("metadata") or {}).get("name"),
            "structural": compile_schema(schema),  # compiled once: admission prunes, defaults, validates
            "openapi_schema": schema,
            "printer_columns": list(version.get("additionalPrinterColumns") or []),
            "list_kind": names.get("listKind") or kind + "List",
            "selectable_fields": list(selectable),
        }
        if "scale" in subresources:
            extra["scale"] = {k: v for k, v in (subresources.get("scale") or {}).items() if v}
        out.append(
            ResourceType(
                group=group,
                version=name,
                kind=kind,
                plural=plural,
                singular=str(names.get("singular") or kind.lower()),
                namespaced=spec.get("scope") != "Cluster",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subs,
                verbs=ALL_VERBS,
                storage_resource=f"{group}/{plural}",
                storage_version=storage_api_version,
                to_storage=_rewrite(storage_api_version),
                from_storage=_rewrite(f"{group}/{name}"),
                strategy=CustomResourceStrategy(
                    kind=kind,
                    group=group,
                    schema=schema,
                    status="status" in subs,
                    terminating=terminating,
                    selectable_fields=selectable,
                ),
                extra=extra,
            )
        )
    return out

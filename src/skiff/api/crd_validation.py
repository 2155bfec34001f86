"""Defaulting and validating CustomResourceDefinitions themselves, as apiextensions-apiserver does.

A bad CRD is refused with a 422 whose causes name the field
(`metadata.name: Invalid value: "x.example.com": must be
spec.names.plural+"."+spec.group`, `spec.versions: Invalid value: ...: must
have exactly one version marked as storage version`, structural-schema
errors under `spec.versions[i].schema.openAPIV3Schema`). Clashes with
*other* CRDs' names are not errors here: they are the `NamesAccepted`
condition the CRD controller sets. Pure functions over plain dicts.
"""

from __future__ import annotations

import re
from typing import Any

from skiff.api import crd_selectable, validation
from skiff.api.structural_schema import check_structural
from skiff.api.validation import invalid, not_supported, required

Obj = dict[str, Any]
FieldErrors = list[tuple[str, str, str]]

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
APPROVAL = "api-approved.kubernetes.io"
STORAGE_MESSAGE = "must have exactly one version marked as storage version"
SCOPES = ["Cluster", "Namespaced"]
COLUMN_TYPES = ["boolean", "date", "integer", "number", "string"]
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1035_MSG = validation.regex_error(
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character",
    "[a-z]([-a-z0-9]*[a-z0-9])?",
    "my-name",
    "abc-123",
)


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035.fullmatch(value):
        errs.append(_DNS1035_MSG)
    return errs


def _protected(group: str) -> bool:
    """Groups of the Kubernetes project: a CRD there needs the API-approval annotation."""
    return group in ("k8s.io", "kubernetes.io") or group.endswith((".k8s.io", ".kubernetes.io"))


def set_defaults(crd: Obj) -> None:
    """v1 defaults: singular and listKind from kind, conversion strategy None."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str) and names["kind"]:
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    conversion = spec.setdefault("conversion", {"strategy": "None"})
    if isinstance(conversion, dict):
        conversion.setdefault("strategy", "None")


def storage_version(crd: Obj) -> str | None:
    for version in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(version, dict) and version.get("storage"):
            return str(version.get("name"))
    return None


def validate(crd: Obj) -> FieldErrors:
    """Everything about a CRD that makes it invalid on its own (not its clashes with others)."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errs: FieldErrors = []
    names: Obj = spec["names"] if isinstance(spec.get("names"), dict) else {}
    group = spec.get("group") or ""
    name = (crd.get("metadata") or {}).get("name") or ""
    if name and name != f"{names.get('plural', '')}.{group}":
        errs.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if not group:
        errs.append(required("spec.group"))
    elif validation.is_dns1123_subdomain(group):
        errs.append(invalid("spec.group", group, ",".join(validation.is_dns1123_subdomain(group))))
    elif "." not in group:
        errs.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    if group and _protected(group):
        annotations = (crd.get("metadata") or {}).get("annotations") or {}
        if not annotations.get(APPROVAL):
            errs.append(required(f"metadata.annotations[{APPROVAL}]",
                                 f'protected groups must have approval annotation "{APPROVAL}", '
                                 "see https://github.com/kubernetes/enhancements/pull/1111"))  # fmt: skip
    scope = spec.get("scope") or ""
    if not scope:
        errs.append(required("spec.scope"))
    elif scope not in SCOPES:
        errs.append(not_supported("spec.scope", scope, SCOPES))
    errs.extend(_validate_versions(spec.get("versions")))
    errs.extend(_validate_names(names))
    conversion = spec.get("conversion") or {}
    strategy = conversion.get("strategy") if isinstance(conversion, dict) else None
    if strategy not in ("None", "Webhook"):
        errs.append(not_supported("spec.conversion.strategy", strategy or "", ["None", "Webhook"]))
    elif strategy == "Webhook":
        errs.append(invalid("spec.conversion.strategy", strategy, "conversion webhooks are not supported by skiff"))
    return errs


def _invalid_versions(versions: Any, detail: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", "spec.versions", f"Invalid value: {_versions_value(versions)}: {detail}")


def _versions_value(versions: Any) -> str:
    shown = ", ".join(
        f'apiextensions.CustomResourceDefinitionVersion{{Name:"{v.get("name", "")}", Served:'
        f'{str(bool(v.get("served"))).lower()}, Storage:{str(bool(v.get("storage"))).lower()}, ...}}'
        for v in versions
        if isinstance(v, dict)
    )
    return f"[]apiextensions.CustomResourceDefinitionVersion{{{shown}}}"


def _validate_versions(versions: Any) -> FieldErrors:
    if not isinstance(versions, list) or not versions:
        return [required("spec.versions", STORAGE_MESSAGE)]
    errs: FieldErrors = []
    seen: set[str] = set()
    unique = True
    storage = 0
    for i, version in enumerate(versions):
        path = f"spec.versions[{i}]"
        if not isinstance(version, dict):
            errs.append(invalid(path, version, "must be an object"))
            continue
        vname = str(version.get("name") or "")
        for msg in is_dns1035_label(vname):
            errs.append(invalid(f"{path}.name", vname, msg))
        unique = unique and vname not in seen
        seen.add(vname)
        storage += bool(version.get("storage"))
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        errs.extend(check_structural(schema, f"{path}.schema.openAPIV3Schema"))
        if isinstance(schema, dict) and "status" in subresources:
            allowed = {"properties", "required", "description", "type", "x-kubernetes-validations"}
            extra = sorted(set(schema) - allowed)
            if extra:
                errs.append(invalid(f"{path}.schema.openAPIV3Schema", extra,
                                    'must only have "properties", "required" or "description" at the root '
                                    "if the status subresource is enabled"))  # fmt: skip
        errs.extend(_validate_scale(subresources.get("scale"), f"{path}.subresources.scale"))
        for j, column in enumerate(version.get("additionalPrinterColumns") or []):
            errs.extend(_validate_column(column, f"{path}.additionalPrinterColumns[{j}]"))
        errs.extend(crd_selectable.validate(version.get("selectableFields"), schema, f"{path}.selectableFields"))
    if not unique:
        errs.append(_invalid_versions(versions, "must contain unique version names"))
    if storage != 1:
        errs.append(_invalid_versions(versions, STORAGE_MESSAGE))
    return errs


def _validate_scale(scale: Any, path: str) -> FieldErrors:
    if not isinstance(scale, dict):
        return []
    errs: FieldErrors = []
    for key, under in (("specReplicasPath", ".spec"), ("statusReplicasPath", ".status")):
        value = scale.get(key) or ""
        if not value:
            errs.append(required(f"{path}.{key}"))
        elif not value.startswith(under + "."):
            errs.append(invalid(f"{path}.{key}", value, f"should be a json path under {under}"))
    selector = scale.get("labelSelectorPath")
    if selector and not (selector.startswith(".spec.") or selector.startswith(".status.")):
        detail = "should be a json path under either .spec or .status"
        errs.append(invalid(f"{path}.labelSelectorPath", selector, detail))
    return errs


def _validate_column(column: Any, path: str) -> FieldErrors:
    if not isinstance(column, dict):
        return [invalid(path, column, "must be an object")]
    errs: FieldErrors = []
    if not column.get("name"):
        errs.append(required(f"{path}.name"))
    ctype = column.get("type") or ""
    if not ctype:
        errs.append(required(f"{path}.type"))
    elif ctype not in COLUMN_TYPES:
        errs.append(not_supported(f"{path}.type", ctype, COLUMN_TYPES))
    if not column.get("jsonPath"):
        errs.append(required(f"{path}.jsonPath"))
    return errs


def _validate_names(names: Obj) -> FieldErrors:
    errs: FieldErrors = []
    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            errs.append(required(f"spec.names.{key}"))
    for key in ("plural", "singular"):
        value = names.get(key)
        if value:
            errs.extend(invalid(f"spec.names.{key}", value, m) for m in is_dns1035_label(str(value)))
    for key in ("kind", "listKind"):
        value = names.get(key)
        if value and is_dns1035_label(str(value).lower()):
            detail = "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"
            errs.append(invalid(f"spec.names.{key}", value, detail))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(invalid("spec.names.listKind", names["listKind"], "kind and listKind may not be the same"))
    for i, short in enumerate(names.get("shortNames") or []):
        errs.extend(invalid(f"spec.names.shortNames[{i}]", short, m) for m in is_dns1035_label(str(short)))
    for i, category in enumerate(names.get("categories") or []):
        errs.extend(invalid(f"spec.names.categories[{i}]", category, m) for m in is_dns1035_label(str(category)))
    return errs


def validate_update(new: Obj, old: Obj) -> FieldErrors:
    """`validate` plus what may never change: group and plural; scope and kind once Established."""
    errs = validate(new)
    nspec, ospec = new.get("spec") or {}, old.get("spec") or {}
    established = any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (old.get("status") or {}).get("conditions") or []
    )
    nnames, onames = nspec.get("names") or {}, ospec.get("names") or {}
    checks = [("spec.group", nspec.get("group"), ospec.get("group"))]
    checks.append(("spec.names.plural", nnames.get("plural"), onames.get("plural")))
    if established:
        checks.append(("spec.scope", nspec.get("scope"), ospec.get("scope")))
        checks.append(("spec.names.kind", nnames.get("kind"), onames.get("kind")))
    for path, value, before in checks:
        if value != before:
            errs.append(invalid(path, value, "field is immutable"))
    return errs


def validate_stored_versions(crd: Obj) -> FieldErrors:
    stored = (crd.get("status") or {}).get("storedVersions") or []
    names = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or [] if isinstance(v, dict)]
    errs: FieldErrors = []
    for i, version in enumerate(stored):
        if version not in names:
            errs.append(invalid(f"status.storedVersions[{i}]", version, "must appear in spec.versions"))
    return errs


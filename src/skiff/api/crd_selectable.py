"""A CRD version's `selectableFields`: which fields of its objects field selectors may use.

Kubernetes (CustomResourceFieldSelectors, GA in 1.32) lets a CRD version list up to
8 `selectableFields`, each a simple JSON path such as `.spec.color` to a string,
integer or boolean field of its schema, outside metadata. Objects can then be
listed and watched with `?fieldSelector=spec.color=red` besides `metadata.name`
and `metadata.namespace` (a field the object lacks reads as ""); operators use
it to have the server filter their watches (kopf's `settings.watching.field_selectors`).
This module checks the list with apiextensions-apiserver's messages and gives
the field-selector names the strategy of the version supports. Pure functions.
"""

from __future__ import annotations

import re
from typing import Any

from skiff.api.validation import invalid, render_value, required

Obj = dict[str, Any]
FieldErrors = list[tuple[str, str, str]]

MAX_SELECTABLE_FIELDS = 8
SELECTABLE_TYPES = ("string", "integer", "boolean")
TYPE_MESSAGE = (
    "must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed."
)
_TOKENS = re.compile(r"[.\[\]]|[^.\[\]]+")


def _resolve(json_path: str, schema: Obj) -> tuple[list[str], Obj]:
    """The path's field names and the schema they lead to; ValueError saying why the path is invalid.

    As apiextensions' `ValidFieldPath` without array notation: `.name` steps into a property
    (or a key of a map, for `additionalProperties`), anything else is refused.
    """
    names: list[str] = []
    tokens = _TOKENS.findall(json_path)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "[":
            raise ValueError("array notation is not allowed")
        if tok != ".":
            raise ValueError("expected [ or . or end of JSON path")
        if i + 1 >= len(tokens) or tokens[i + 1] in (".", "[", "]"):
            raise ValueError("unexpected end of JSON path")
        name = tokens[i + 1]
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            schema = additional
        else:
            found = (schema.get("properties") or {}).get(name)
            if not isinstance(found, dict):
                raise ValueError("does not refer to a valid field")
            schema = found
        names.append(name)
        i += 2
    return names, schema


def validate(fields: Any, schema: Any, path: str) -> FieldErrors:
    """Errors of `spec.versions[i].selectableFields` against the version's openAPIV3Schema."""
    if not fields:
        return []
    if not isinstance(fields, list):
        return [invalid(path, fields, "must be a list")]
    root: Obj = schema if isinstance(schema, dict) else {}
    errs: FieldErrors = []
    unique: set[str] = set()
    for i, field in enumerate(fields):
        item_path = f"{path}[{i}].jsonPath"
        json_path = field.get("jsonPath") if isinstance(field, dict) else None
        if not json_path or not isinstance(json_path, str):
            errs.append(required(item_path))
            continue
        try:
            names, found = _resolve(json_path, root)
        except ValueError as err:
            errs.append(invalid(item_path, json_path, f"is an invalid path: {err}"))
            continue
        if names[:1] == ["metadata"]:
            errs.append(invalid(item_path, json_path, "must not point to fields in metadata"))
        if found.get("type") not in SELECTABLE_TYPES:
            errs.append(invalid(item_path, json_path, TYPE_MESSAGE))
        key = ".".join(names)
        if key in unique:
            errs.append(("FieldValueDuplicate", item_path, f"Duplicate value: {render_value(json_path)}"))
        unique.add(key)
    if len(unique) > MAX_SELECTABLE_FIELDS:
        detail = f"Too many: {len(unique)}: must have at most {MAX_SELECTABLE_FIELDS} items"
        errs.append(("FieldValueTooMany", path, detail))
    return errs


def field_names(fields: Any) -> tuple[str, ...]:
    """The field-selector names of a version's `selectableFields` (`.spec.color` -> `spec.color`)."""
    out: list[str] = []
    for field in fields if isinstance(fields, list) else []:
        json_path = field.get("jsonPath") if isinstance(field, dict) else None
        if isinstance(json_path, str) and json_path.startswith("."):
            out.append(json_path[1:])
    return tuple(dict.fromkeys(out))

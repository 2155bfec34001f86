"""Whether a CRD version's openAPIV3Schema is structural, as apiextensions-apiserver decides.

Every field typed (`type` set, or int-or-string, or preserve-unknown-fields),
arrays with `items`, `object` at the root with no `additionalProperties`
there, `metadata` restricted to name and generateName, value validations
under `allOf`/`anyOf`/`oneOf`/`not` without structure of their own, list
types consistent, defaults that satisfy their schema, no unsupported
JSON-schema keywords. The errors become the CRD's 422, under
`spec.versions[i].schema.openAPIV3Schema` (e.g. `...properties[spec].type:
Required value: must not be empty for specified object fields`).
"""

from __future__ import annotations

from typing import Any

from skiff.api.structural import FieldErrors, Obj, child, forbidden, go_value, invalid, regex, validate

LIST_TYPES = ("atomic", "map", "set")
# JSON-schema keywords CRDs refuse, with apiextensions-apiserver's reasons
_UNSUPPORTED = (
    ("$ref", "$ref is not supported"),
    ("$schema", "$schema is not supported"),
    ("id", "id is not supported"),
    ("definitions", "definitions is not supported"),
    ("dependencies", "dependencies is not supported"),
    ("additionalItems", "additionalItems cannot be set to false"),
    ("patternProperties", "patternProperties is not supported"),
    ("uniqueItems", "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"),
)
_TYPES = ("array", "boolean", "integer", "number", "object", "string")


def check_structural(schema: Any, path: str, *, status_enabled: bool = False) -> FieldErrors:
    """The errors that make `schema` unacceptable as a CRD version's openAPIV3Schema (sorted, as Kubernetes)."""
    if not isinstance(schema, dict):
        return [("FieldValueRequired", path, "Required value: schemas are required")]
    errs: FieldErrors = []
    _check_node(schema, path, "root", errs)
    return sorted(set(errs), key=lambda e: f"{e[1]}: {e[2]}")


def _check_node(s: Obj, path: str, level: str, errs: FieldErrors) -> None:
    t = s.get("type")
    for key, detail in _UNSUPPORTED:
        if s.get(key) not in (None, False, "", {}, []):
            errs.append(forbidden(child(path, key), detail))
    if s.get("additionalProperties") is False:
        errs.append(forbidden(child(path, "additionalProperties"), "additionalProperties cannot be set to false"))
    if t is not None and t not in _TYPES:
        supported = ", ".join(f'"{x}"' for x in _TYPES)
        errs.append(("FieldValueNotSupported", child(path, "type"),
                     f"Unsupported value: {go_value(t)}: supported values: {supported}"))  # fmt: skip
    if t == "array" and not isinstance(s.get("items"), dict):
        errs.append(("FieldValueRequired", child(path, "items"), "Required value: must be specified"))
    items = s.get("items")
    if isinstance(items, dict):
        _check_node(items, child(path, "items"), "item", errs)
    props = s.get("properties")
    if isinstance(props, dict):
        for key, sub in props.items():
            if isinstance(sub, dict):
                _check_node(sub, f"{path}.properties[{key}]", "field", errs)
    extra = s.get("additionalProperties")
    if extra is not None and extra is not True:
        if level == "root":
            errs.append(forbidden(child(path, "additionalProperties"), "must not be used at the root"))
        if isinstance(props, dict) and props:
            errs.append(("FieldValueForbidden", child(path, "additionalProperties"),
                         "Forbidden: additionalProperties and properties are mutual exclusive"))  # fmt: skip
        if isinstance(extra, dict):
            _check_node(extra, child(path, "additionalProperties"), "field", errs)
    int_or_string = bool(s.get("x-kubernetes-int-or-string"))
    preserve = s.get("x-kubernetes-preserve-unknown-fields")
    embedded = bool(s.get("x-kubernetes-embedded-resource"))
    if preserve is False:
        errs.append(("FieldValueInvalid", child(path, "x-kubernetes-preserve-unknown-fields"),
                     "Invalid value: false: must be true or undefined"))  # fmt: skip
    if int_or_string and preserve:
        errs.append(("FieldValueInvalid", child(path, "x-kubernetes-preserve-unknown-fields"),
                     "Invalid value: true: must be false if x-kubernetes-int-or-string is true"))  # fmt: skip
    if int_or_string and embedded:
        errs.append(("FieldValueInvalid", child(path, "x-kubernetes-embedded-resource"),
                     "Invalid value: true: must be false if x-kubernetes-int-or-string is true"))  # fmt: skip
    if int_or_string and t is not None:
        errs.append(("FieldValueInvalid", child(path, "type"),
                     f"Invalid value: {go_value(t)}: must be empty if x-kubernetes-int-or-string is true"))  # fmt: skip
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(s.get(junctor) or []):
            if isinstance(sub, dict) and not (int_or_string and junctor in ("anyOf", "allOf")):
                _check_nested(sub, f"{path}.{junctor}[{i}]", errs)
    if isinstance(s.get("not"), dict):
        _check_nested(s["not"], child(path, "not"), errs)
    pattern = s.get("pattern")
    if isinstance(pattern, str) and regex(pattern) is None:
        errs.append(("FieldValueInvalid", child(path, "pattern"),
                     f"Invalid value: {go_value(pattern)}: must be a valid regular expression, but isn't"))  # fmt: skip
    if embedded and t != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        if t is None:
            errs.append(("FieldValueRequired", child(path, "type"), f"Required value: {detail}"))
        else:
            errs.append(invalid(child(path, "type"), t, detail))
    elif t is None and not int_or_string and not preserve:
        what = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}
        errs.append(("FieldValueRequired", child(path, "type"), f"Required value: must not be empty {what[level]}"))
    if level == "root" and t is not None and t != "object":
        errs.append(invalid(child(path, "type"), t, "must be object at the root"))
    if embedded and not preserve and not props:
        errs.append(("FieldValueRequired", child(path, "properties"),
                     "Required value: must not be empty if x-kubernetes-embedded-resource is true without "
                     "x-kubernetes-preserve-unknown-fields"))  # fmt: skip
    if isinstance(props, dict) and (level == "root" or embedded):
        for key in ("apiVersion", "kind"):
            sub = props.get(key)
            if isinstance(sub, dict) and sub.get("type") != "string":
                errs.append(("FieldValueInvalid", f"{path}.properties[{key}].type",
                             f"Invalid value: {go_value(sub.get('type') or '')}: must be string"))  # fmt: skip
        metadata = props.get("metadata")
        if isinstance(metadata, dict) and level == "root":
            rest = {k: v for k, v in metadata.items() if k not in ("type", "properties", "description")}
            names = set((metadata.get("properties") or {}).keys())
            if rest or not names <= {"name", "generateName"} or metadata.get("type", "object") != "object":
                errs.append(("FieldValueForbidden", f"{path}.properties[metadata]",
                             "Forbidden: must not specify anything other than name and generateName, "
                             "but metadata is implicitly specified"))  # fmt: skip
    _check_list_type(s, path, errs)
    if "default" in s and level != "root":
        errs.extend(validate(s["default"], s, path=child(path, "default")))


def _check_list_type(s: Obj, path: str, errs: FieldErrors) -> None:
    list_type = s.get("x-kubernetes-list-type")
    keys = s.get("x-kubernetes-list-map-keys")
    if list_type is not None:
        if list_type not in LIST_TYPES:
            supported = ", ".join(f'"{x}"' for x in LIST_TYPES)
            errs.append(("FieldValueNotSupported", child(path, "x-kubernetes-list-type"),
                         f"Unsupported value: {go_value(list_type)}: supported values: {supported}"))  # fmt: skip
        elif s.get("type") != "array":
            detail = "must be array if x-kubernetes-list-type is specified"
            errs.append(invalid(child(path, "type"), s.get("type") or "", detail))
        elif list_type == "map" and not keys:
            errs.append(("FieldValueRequired", child(path, "x-kubernetes-list-map-keys"),
                         "Required value: must not be empty if x-kubernetes-list-type is map"))  # fmt: skip
        elif list_type == "map":
            item = s.get("items") or {}
            props = item.get("properties") or {}
            for i, key in enumerate(keys or []):
                if key not in props:
                    where = f"{path}.x-kubernetes-list-map-keys[{i}]"
                    errs.append(invalid(where, key, "entries must all be names of item properties"))
    if keys and list_type != "map":
        errs.append(("FieldValueForbidden", child(path, "x-kubernetes-list-map-keys"),
                     "Forbidden: must be empty if x-kubernetes-list-type is not map"))  # fmt: skip


_NESTED_FORBIDDEN = (
    ("type", "must be empty to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
)


def _check_nested(s: Obj, path: str, errs: FieldErrors) -> None:
    """A value validation under a junctor: constraints only, no structure of its own."""
    for key, message in _NESTED_FORBIDDEN:
        if s.get(key) not in (None, False, "", []):
            errs.append(("FieldValueForbidden", child(path, key), f"Forbidden: {message}"))
    props = s.get("properties")
    if isinstance(props, dict):
        if "metadata" in props:
            errs.append(("FieldValueForbidden", f"{path}.properties[metadata]",
                         "Forbidden: must not be specified in a nested context"))  # fmt: skip
        for key, sub in props.items():
            if isinstance(sub, dict):
                _check_nested(sub, f"{path}.properties[{key}]", errs)
    if isinstance(s.get("items"), dict):
        _check_nested(s["items"], child(path, "items"), errs)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(s.get(junctor) or []):
            if isinstance(sub, dict):
                _check_nested(sub, f"{path}.{junctor}[{i}]", errs)

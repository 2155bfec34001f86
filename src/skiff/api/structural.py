"""Validating custom resources against their CRD's structural OpenAPI v3 schema.

A CustomResourceDefinition carries, per version, an `openAPIV3Schema` that
must be *structural* (every field typed, no `$ref`, value validations only
under `allOf`/`anyOf`/`oneOf`/`not`). This module does the two checks the
apiextensions-apiserver does with it, on plain dicts:

- `check_structural(schema, path)`: is a CRD's schema acceptable at all (its
  errors are the CRD's 422, e.g. `spec.versions[0].schema.openAPIV3Schema.
  properties[spec].type: Required value: must not be empty for specified
  object fields`);
- `validate(obj, schema)`: does a custom object satisfy it (types, required,
  enum, pattern, bounds, lengths, item counts, nullable, int-or-string,
  list types, embedded resources), with Kubernetes' field paths and messages.

Pruning and defaulting live in `structural_defaults`. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

Obj = dict[str, Any]
FieldErrors = list[tuple[str, str, str]]

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
_JSON_TYPE = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def go_value(value: Any) -> str:
    """A value as Go's field errors print it: strings quoted, numbers bare, null as "null"."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _invalid(path: str, value: Any, detail: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", path, f"Invalid value: {go_value(value)}: {detail}")


def _forbidden(path: str, detail: str) -> tuple[str, str, str]:
    return ("FieldValueForbidden", path, f"Forbidden: {detail}")


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE.get(type(value), "object")


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


# ---------------------------------------------------------------- the schema itself (CRD time)


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
            errs.append(_forbidden(child(path, key), detail))
    if s.get("additionalProperties") is False:
        errs.append(_forbidden(child(path, "additionalProperties"), "additionalProperties cannot be set to false"))
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
            errs.append(_forbidden(child(path, "additionalProperties"), "must not be used at the root"))
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
    if isinstance(pattern, str) and _regex(pattern) is None:
        errs.append(("FieldValueInvalid", child(path, "pattern"),
                     f"Invalid value: {go_value(pattern)}: must be a valid regular expression, but isn't"))  # fmt: skip
    if embedded and t != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        if t is None:
            errs.append(("FieldValueRequired", child(path, "type"), f"Required value: {detail}"))
        else:
            errs.append(_invalid(child(path, "type"), t, detail))
    elif t is None and not int_or_string and not preserve:
        what = {"root": "at the root", "item": "for specified array items", "field": "for specified object fields"}
        errs.append(("FieldValueRequired", child(path, "type"), f"Required value: must not be empty {what[level]}"))
    if level == "root" and t is not None and t != "object":
        errs.append(_invalid(child(path, "type"), t, "must be object at the root"))
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
            errs.append(_invalid(child(path, "type"), s.get("type") or "", detail))
        elif list_type == "map" and not keys:
            errs.append(("FieldValueRequired", child(path, "x-kubernetes-list-map-keys"),
                         "Required value: must not be empty if x-kubernetes-list-type is map"))  # fmt: skip
        elif list_type == "map":
            item = s.get("items") or {}
            props = item.get("properties") or {}
            for i, key in enumerate(keys or []):
                if key not in props:
                    where = f"{path}.x-kubernetes-list-map-keys[{i}]"
                    errs.append(_invalid(where, key, "entries must all be names of item properties"))
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


# ---------------------------------------------------------------- custom objects


def validate(value: Any, schema: Obj, *, path: str = "", check_required: bool = True) -> FieldErrors:
    """Field errors of `value` against a structural `schema` (the object itself: path "")."""
    errs: FieldErrors = []
    _validate(value, schema, path, errs, check_required)
    return errs


def _type_error(value: Any, want: str, path: str) -> tuple[str, str, str]:
    got = json_type(value)
    detail = f'{path or "body"} in body must be of type {want}: "{got}"'
    return ("FieldValueTypeInvalid", path, f'Invalid value: "{got}": {detail}')


def _validate(value: Any, s: Obj, path: str, errs: FieldErrors, check_required: bool) -> None:
    if value is None:
        if not s.get("nullable") and (s.get("type") or s.get("x-kubernetes-int-or-string")):
            errs.append(_type_error(value, s.get("type") or "integer,string", path))
        return
    t = s.get("type")
    if s.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            errs.append(_type_error(value, "integer,string", path))
            return
    elif t is not None and not _is_type(value, t):
        errs.append(_type_error(value, t, path))
        return
    _constraints(value, s, path, errs)
    if isinstance(value, dict):
        _validate_object(value, s, path, errs, check_required)
    elif isinstance(value, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate(item, items, f"{path}[{i}]", errs, check_required)
        _list_type(value, s, path, errs)
    for junctor in ("allOf", "anyOf", "oneOf", "not"):
        if junctor in s:
            _junctor(value, s, junctor, path, errs)


def _is_type(value: Any, t: str) -> bool:
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return json_type(value) == t


def _validate_object(value: Obj, s: Obj, path: str, errs: FieldErrors, check_required: bool) -> None:
    props = s.get("properties") or {}
    if check_required:
        for name in s.get("required") or ():
            if name not in value:
                errs.append(("FieldValueRequired", child(path, name), "Required value"))
    for key, sub in value.items():
        sub_schema = props.get(key)
        if sub_schema is None and isinstance(s.get("additionalProperties"), dict):
            _validate(sub, s["additionalProperties"], f"{path}[{key}]" if path else key, errs, check_required)
        elif sub_schema is not None and not (not path and key == "metadata"):
            _validate(sub, sub_schema, child(path, key), errs, check_required)
    if s.get("x-kubernetes-embedded-resource"):
        for key in ("apiVersion", "kind"):
            if not value.get(key):
                errs.append(("FieldValueRequired", child(path, key), f"Required value: {key} is required"))


def _constraints(value: Any, s: Obj, path: str, errs: FieldErrors) -> None:
    where = path or "body"
    enum = s.get("enum")
    if isinstance(enum, list) and value not in enum:
        supported = ", ".join(go_value(v) for v in enum)
        detail = f"Unsupported value: {go_value(value)}: supported values: {supported}"
        errs.append(("FieldValueNotSupported", path, detail))
    if isinstance(value, str):
        pattern = s.get("pattern")
        regex = _regex(pattern) if isinstance(pattern, str) else None
        if regex is not None and not regex.search(value):
            errs.append(_invalid(path, value, f"{where} in body should match '{pattern}'"))
        if "maxLength" in s and len(value) > s["maxLength"]:
            errs.append(("FieldValueTooLong", path, f"Too long: may not be more than {s['maxLength']} bytes"))
        if "minLength" in s and len(value) < s["minLength"]:
            errs.append(_invalid(path, value, f"{where} in body should be at least {s['minLength']} chars long"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _bounds(value, s, path, errs)
    elif isinstance(value, list):
        if "maxItems" in s and len(value) > s["maxItems"]:
            errs.append(("FieldValueTooMany", path, f"Too many: {len(value)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(value) < s["minItems"]:
            errs.append(_invalid(path, len(value), f"{where} in body should have at least {s['minItems']} items"))
    elif isinstance(value, dict):
        if "maxProperties" in s and len(value) > s["maxProperties"]:
            too_many = f"Too many: {len(value)}: must have at most {s['maxProperties']} items"
            errs.append(("FieldValueTooMany", path, too_many))
        if "minProperties" in s and len(value) < s["minProperties"]:
            detail = f"{where} in body should have at least {s['minProperties']} properties"
            errs.append(_invalid(path, len(value), detail))


def _bounds(value: float, s: Obj, path: str, errs: FieldErrors) -> None:
    where = path or "body"
    if "minimum" in s:
        low = s["minimum"]
        if s.get("exclusiveMinimum") and value <= low:
            errs.append(_invalid(path, value, f"{where} in body should be greater than {go_value(low)}"))
        elif value < low:
            errs.append(_invalid(path, value, f"{where} in body should be greater than or equal to {go_value(low)}"))
    if "maximum" in s:
        high = s["maximum"]
        if s.get("exclusiveMaximum") and value >= high:
            errs.append(_invalid(path, value, f"{where} in body should be less than {go_value(high)}"))
        elif value > high:
            errs.append(_invalid(path, value, f"{where} in body should be less than or equal to {go_value(high)}"))
    step = s.get("multipleOf")
    if isinstance(step, int | float) and step and (value / step) != int(value / step):
        errs.append(_invalid(path, value, f"{where} in body should be a multiple of {go_value(step)}"))


def _list_type(value: list[Any], s: Obj, path: str, errs: FieldErrors) -> None:
    list_type = s.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                errs.append(("FieldValueDuplicate", f"{path}[{i}]", f"Duplicate value: {go_value(item)}"))
            else:
                seen.append(item)
    elif list_type == "map":
        keys = s.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[Obj] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = {k: item.get(k) for k in keys if k in item}
            if key in seen_keys:
                shown = ", ".join(f"{json.dumps(k)}:{go_value(v)}" for k, v in key.items())
                detail = f"Duplicate value: map[string]interface {{}}{{{shown}}}"
                errs.append(("FieldValueDuplicate", f"{path}[{i}]", detail))
            else:
                seen_keys.append(key)


def _junctor(value: Any, s: Obj, junctor: str, path: str, errs: FieldErrors) -> None:
    where = path or "body"
    if junctor == "not":
        sub = s["not"]
        if isinstance(sub, dict) and not validate(value, sub, path=path):
            errs.append(_invalid(path, value, f"{where} in body must not validate the schema (not)"))
        return
    subs = [x for x in s.get(junctor) or [] if isinstance(x, dict)]
    results = [validate(value, sub, path=path) for sub in subs]
    if junctor == "allOf":
        for result in results:
            errs.extend(result)
    elif junctor == "anyOf" and subs and all(results):
        errs.append(_invalid(path, value, f"{where} in body must validate at least one schema (anyOf)"))
        errs.extend(results[0])
    elif junctor == "oneOf" and subs and sum(1 for r in results if not r) != 1:
        errs.append(_invalid(path, value, f"{where} in body must validate one and only one schema (oneOf)"))

"""Validating custom objects against their CRD's structural OpenAPI v3 schema.

A custom object must satisfy its CRD version's `openAPIV3Schema`: types,
required, enum, pattern, bounds, lengths, item counts, nullable,
int-or-string, list types (set, map keys), embedded resources, and the value
validations under `allOf`/`anyOf`/`oneOf`/`not` -- reported with
Kubernetes' field paths and messages (`spec.size: Invalid value: 0:
spec.size in body should be greater than or equal to 1`).

A schema is compiled once (`compile_schema`, a tree of `Node`s) so that a
write does not look up the same schema keys again per field. Whether a
CRD's schema is structural at all is `structural_schema`; pruning and
defaulting live in `structural_defaults`. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

Obj = dict[str, Any]
FieldErrors = list[tuple[str, str, str]]

_CONSTRAINTS = frozenset(
    "enum pattern maxLength minLength minimum maximum multipleOf maxItems minItems maxProperties minProperties".split()
)
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


def invalid(path: str, value: Any, detail: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", path, f"Invalid value: {go_value(value)}: {detail}")


def forbidden(path: str, detail: str) -> tuple[str, str, str]:
    return ("FieldValueForbidden", path, f"Forbidden: {detail}")


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE.get(type(value), "object")


@lru_cache(maxsize=512)
def regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


# ---------------------------------------------------------------- custom objects


class Node:
    """One compiled schema position: what the walkers need, looked up once per schema, not per object."""

    __slots__ = ("checks", "default", "embedded", "extra", "extra_true", "has_default", "int_or_string", "items",
                 "junctors", "list_type", "nullable", "preserve", "props", "raw", "required", "type")  # fmt: skip

    def __init__(self, raw: Obj) -> None:
        self.raw = raw
        self.type: str | None = raw.get("type") if isinstance(raw.get("type"), str) else None
        self.nullable = bool(raw.get("nullable"))
        self.int_or_string = bool(raw.get("x-kubernetes-int-or-string"))
        self.preserve = bool(raw.get("x-kubernetes-preserve-unknown-fields"))
        self.embedded = bool(raw.get("x-kubernetes-embedded-resource"))
        props = raw.get("properties")
        self.props: dict[str, Node] | None = (
            {k: Node(v) for k, v in props.items() if isinstance(v, dict)} if isinstance(props, dict) else None
        )
        self.required: tuple[str, ...] = tuple(raw.get("required") or ())
        items, extra = raw.get("items"), raw.get("additionalProperties")
        self.items = Node(items) if isinstance(items, dict) else None
        self.extra = Node(extra) if isinstance(extra, dict) else None
        self.extra_true = extra is True
        self.checks = not _CONSTRAINTS.isdisjoint(raw)
        self.list_type = raw.get("x-kubernetes-list-type") if raw.get("type") == "array" else None
        self.has_default, self.default = "default" in raw, raw.get("default")
        junctors: list[tuple[str, tuple[Node, ...]]] = []
        for junctor in ("allOf", "anyOf", "oneOf", "not"):
            subs = raw.get(junctor)
            subs = [subs] if junctor == "not" else subs
            if isinstance(subs, list) and any(isinstance(x, dict) for x in subs):
                junctors.append((junctor, tuple(Node(x) for x in subs if isinstance(x, dict))))
        self.junctors = tuple(junctors)


def compile_schema(schema: Obj | Node) -> Node:
    """A schema ready for `validate`, `prune` and `apply_defaults` (compile once per CRD version)."""
    return schema if isinstance(schema, Node) else Node(schema)


def validate(value: Any, schema: Obj | Node, *, path: str = "", check_required: bool = True) -> FieldErrors:
    """Field errors of `value` against a structural `schema` (the object itself: path "")."""
    errs: FieldErrors = []
    _validate(value, compile_schema(schema), path, errs, check_required)
    return errs


def _type_error(value: Any, want: str, path: str) -> tuple[str, str, str]:
    got = json_type(value)
    detail = f'{path or "body"} in body must be of type {want}: "{got}"'
    return ("FieldValueTypeInvalid", path, f'Invalid value: "{got}": {detail}')


def _validate(value: Any, n: Node, path: str, errs: FieldErrors, check_required: bool) -> None:
    if value is None:
        if not n.nullable and (n.type or n.int_or_string):
            errs.append(_type_error(value, n.type or "integer,string", path))
        return
    if n.int_or_string:
        if isinstance(value, bool) or not isinstance(value, int | str):
            errs.append(_type_error(value, "integer,string", path))
            return
    elif n.type is not None and not _is_type(value, n.type):
        errs.append(_type_error(value, n.type, path))
        return
    if n.checks:
        _constraints(value, n.raw, path, errs)
    if isinstance(value, dict):
        _validate_object(value, n, path, errs, check_required)
    elif isinstance(value, list):
        items = n.items
        if items is not None:
            for i, item in enumerate(value):
                _validate(item, items, f"{path}[{i}]", errs, check_required)
        if n.list_type:
            _list_type(value, n.raw, path, errs)
    for junctor, subs in n.junctors:
        _junctor(value, junctor, subs, path, errs)


def _is_type(value: Any, t: str) -> bool:
    found = _JSON_TYPE.get(type(value))
    if found == t:
        return True
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return json_type(value) == t


def _validate_object(value: Obj, n: Node, path: str, errs: FieldErrors, check_required: bool) -> None:
    props = n.props or {}
    if check_required:
        for name in n.required:
            if name not in value:
                errs.append(("FieldValueRequired", child(path, name), "Required value"))
    extra = n.extra
    for key, sub in value.items():
        sub_node = props.get(key)
        if sub_node is None:
            if extra is not None:
                _validate(sub, extra, f"{path}[{key}]" if path else key, errs, check_required)
        elif path or key != "metadata":
            _validate(sub, sub_node, child(path, key), errs, check_required)
    if n.embedded:
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
        compiled = regex(pattern) if isinstance(pattern, str) else None
        if compiled is not None and not compiled.search(value):
            errs.append(invalid(path, value, f"{where} in body should match '{pattern}'"))
        if "maxLength" in s and len(value) > s["maxLength"]:
            errs.append(("FieldValueTooLong", path, f"Too long: may not be more than {s['maxLength']} bytes"))
        if "minLength" in s and len(value) < s["minLength"]:
            errs.append(invalid(path, value, f"{where} in body should be at least {s['minLength']} chars long"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _bounds(value, s, path, errs)
    elif isinstance(value, list):
        if "maxItems" in s and len(value) > s["maxItems"]:
            errs.append(("FieldValueTooMany", path, f"Too many: {len(value)}: must have at most {s['maxItems']} items"))
        if "minItems" in s and len(value) < s["minItems"]:
            errs.append(invalid(path, len(value), f"{where} in body should have at least {s['minItems']} items"))
    elif isinstance(value, dict):
        if "maxProperties" in s and len(value) > s["maxProperties"]:
            too_many = f"Too many: {len(value)}: must have at most {s['maxProperties']} items"
            errs.append(("FieldValueTooMany", path, too_many))
        if "minProperties" in s and len(value) < s["minProperties"]:
            detail = f"{where} in body should have at least {s['minProperties']} properties"
            errs.append(invalid(path, len(value), detail))


def _bounds(value: float, s: Obj, path: str, errs: FieldErrors) -> None:
    where = path or "body"
    if "minimum" in s:
        low = s["minimum"]
        if s.get("exclusiveMinimum") and value <= low:
            errs.append(invalid(path, value, f"{where} in body should be greater than {go_value(low)}"))
        elif value < low:
            errs.append(invalid(path, value, f"{where} in body should be greater than or equal to {go_value(low)}"))
    if "maximum" in s:
        high = s["maximum"]
        if s.get("exclusiveMaximum") and value >= high:
            errs.append(invalid(path, value, f"{where} in body should be less than {go_value(high)}"))
        elif value > high:
            errs.append(invalid(path, value, f"{where} in body should be less than or equal to {go_value(high)}"))
    step = s.get("multipleOf")
    if isinstance(step, int | float) and step and (value / step) != int(value / step):
        errs.append(invalid(path, value, f"{where} in body should be a multiple of {go_value(step)}"))


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


def _junctor(value: Any, junctor: str, subs: tuple[Node, ...], path: str, errs: FieldErrors) -> None:
    where = path or "body"
    results = []
    for sub in subs:
        found: FieldErrors = []
        _validate(value, sub, path, found, True)
        results.append(found)
    if junctor == "not":
        if not results[0]:
            errs.append(invalid(path, value, f"{where} in body must not validate the schema (not)"))
    elif junctor == "allOf":
        for result in results:
            errs.extend(result)
    elif junctor == "anyOf" and all(results):
        errs.append(invalid(path, value, f"{where} in body must validate at least one schema (anyOf)"))
        errs.extend(results[0])
    elif junctor == "oneOf" and sum(1 for r in results if not r) != 1:
        errs.append(invalid(path, value, f"{where} in body must validate one and only one schema (oneOf)"))

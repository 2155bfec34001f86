"""Pruning and defaulting custom objects with their CRD's structural schema.

What the apiextensions-apiserver does to a custom object before it validates
and stores it: fields the schema does not specify are dropped (unless under
`x-kubernetes-preserve-unknown-fields`), and reported so that
`fieldValidation=Strict` can refuse them and `Warn` can warn; nulls of
non-nullable fields are dropped or replaced by the field's default; absent
fields with a `default` get it. `apiVersion`, `kind` and `metadata` at the
root, and of embedded resources, are never pruned here (metadata is
ObjectMeta, checked by the generic machinery). Pure functions, in place.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api.structural import child

Obj = dict[str, Any]
_TYPE_META = ("apiVersion", "kind", "metadata")


def prune(obj: Obj, schema: Obj) -> list[str]:
    """Drop unknown fields of `obj` in place; returns their paths (`spec.foo`, `spec.items[0].bar`)."""
    unknown: list[str] = []
    _prune_object(obj, schema, "", unknown, root=True)
    return unknown


def _prune(value: Any, s: Obj, path: str, unknown: list[str]) -> None:
    if isinstance(value, dict):
        _prune_object(value, s, path, unknown, root=bool(s.get("x-kubernetes-embedded-resource")))
    elif isinstance(value, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _prune(item, items, f"{path}[{i}]", unknown)


def _prune_object(value: Obj, s: Obj, path: str, unknown: list[str], *, root: bool) -> None:
    props = s.get("properties")
    extra = s.get("additionalProperties")
    preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    if isinstance(extra, dict):
        for key, sub in value.items():
            _prune(sub, extra, f"{path}[{key}]" if path else key, unknown)
        return
    props = props if isinstance(props, dict) else {}
    for key in list(value):
        sub_schema = props.get(key)
        if sub_schema is not None:
            if not (root and key == "metadata"):
                _prune(value[key], sub_schema, child(path, key), unknown)
        elif root and key in _TYPE_META:
            continue
        elif not preserve and extra is not True:
            unknown.append(child(path, key))
            del value[key]


def apply_defaults(obj: Obj, schema: Obj) -> None:
    """Fill in `default`s of absent fields, and of nulls where the field is not nullable, in place."""
    _default(obj, schema, root=True)


def _default(value: Any, s: Obj, *, root: bool = False) -> None:
    if isinstance(value, dict):
        props = s.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                if not isinstance(sub, dict) or (root and key == "metadata"):
                    continue
                if key in value and value[key] is None and not sub.get("nullable"):
                    if "default" in sub:
                        value[key] = copy.deepcopy(sub["default"])
                    else:
                        del value[key]  # as Kubernetes: a non-nullable null without default is pruned
                elif key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value:
                    _default(value[key], sub)
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            for sub_value in value.values():
                _default(sub_value, extra)
    elif isinstance(value, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                if item is None and "default" in items and not items.get("nullable"):
                    value[i] = copy.deepcopy(items["default"])
                _default(value[i], items)

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

from skiff.api.structural import Node, child, compile_schema

Obj = dict[str, Any]
_TYPE_META = ("apiVersion", "kind", "metadata")


def prune(obj: Obj, schema: Obj | Node) -> list[str]:
    """Drop unknown fields of `obj` in place; returns their paths (`spec.foo`, `spec.items[0].bar`)."""
    unknown: list[str] = []
    _prune_object(obj, compile_schema(schema), "", unknown, root=True)
    return unknown


def _prune(value: Any, n: Node, path: str, unknown: list[str]) -> None:
    if isinstance(value, dict):
        _prune_object(value, n, path, unknown, root=n.embedded)
    elif isinstance(value, list):
        items = n.items
        if items is not None:
            for i, item in enumerate(value):
                _prune(item, items, f"{path}[{i}]", unknown)


def _prune_object(value: Obj, n: Node, path: str, unknown: list[str], *, root: bool) -> None:
    extra = n.extra
    if extra is not None:
        for key, sub in value.items():
            _prune(sub, extra, f"{path}[{key}]" if path else key, unknown)
        return
    props = n.props or {}
    keep_unknown = n.preserve or n.extra_true
    for key in list(value):
        sub_node = props.get(key)
        if sub_node is not None:
            if not (root and key == "metadata"):
                _prune(value[key], sub_node, child(path, key), unknown)
        elif root and key in _TYPE_META:
            continue
        elif not keep_unknown:
            unknown.append(child(path, key))
            del value[key]


def apply_defaults(obj: Obj, schema: Obj | Node) -> None:
    """Fill in `default`s of absent fields, and of nulls where the field is not nullable, in place."""
    _default(obj, compile_schema(schema), root=True)


def _default(value: Any, n: Node, *, root: bool = False) -> None:
    if isinstance(value, dict):
        if n.props:
            for key, sub in n.props.items():
                if root and key == "metadata":
                    continue
                if key in value and value[key] is None and not sub.nullable:
                    if sub.has_default:
                        value[key] = copy.deepcopy(sub.default)
                    else:
                        del value[key]  # as Kubernetes: a non-nullable null without default is pruned
                elif key not in value and sub.has_default:
                    value[key] = copy.deepcopy(sub.default)
                if key in value:
                    _default(value[key], sub)
        if n.extra is not None:
            for sub_value in value.values():
                _default(sub_value, n.extra)
    elif isinstance(value, list):
        items = n.items
        if items is not None:
            for i, item in enumerate(value):
                if item is None and items.has_default and not items.nullable:
                    value[i] = copy.deepcopy(items.default)
                _default(value[i], items)

"""Server-side apply's merge (`PATCH application/apply-patch+yaml`, `kubectl apply --server-side`).

Server-side apply merges the applied configuration into the live object and records, per
field manager, which fields each owns (`metadata.managedFields`). This module does the
merge; `skiff.api.managed_fields` does the ownership on top of it (conflicts, `force`,
removal of the fields a manager stops applying):

* maps merge key by key (unless `x-kubernetes-map-type: atomic`, which replaces);
* lists with `x-kubernetes-list-type: map` merge element by element on
  `x-kubernetes-list-map-keys` (falling back to the strategic `x-kubernetes-patch-merge-key`);
  a key field missing on one side matches anything, so `{containerPort: 80}` meets
  `{containerPort: 80, protocol: TCP}`;
* lists with `x-kubernetes-list-type: set` take the union; other lists are atomic and replaced;
* `null` in the applied configuration means "not specified" and changes nothing.

Kinds without a schema merge maps and replace lists.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api.errors import BadRequest
from skiff.api.json_patch import json_equal
from skiff.api.strategic import Schema, field_schema, list_items, resolved, root_schema


def apply_patch(live: dict[str, Any] | None, applied: Any, schema_name: str | None) -> dict[str, Any]:
    """Merge an applied configuration into `live` (None: the object is being created)."""
    if not isinstance(applied, dict):
        raise BadRequest("the apply configuration must be an object")
    schema = root_schema(schema_name)
    if live is None:
        fresh: dict[str, Any] = _without_nulls(applied)
        _check_keys(fresh, schema, "")
        return fresh
    return _apply_map(copy.deepcopy(live), applied, schema, "")


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _map_keys(field: Schema) -> list[str]:
    schema = resolved(field)
    if not schema or schema.get("x-kubernetes-list-type") != "map":
        return []
    keys = schema.get("x-kubernetes-list-map-keys") or []
    merge_key = schema.get("x-kubernetes-patch-merge-key")
    if not keys and merge_key:
        keys = [merge_key]
    return [str(k) for k in keys]


def _check_keys(value: Any, schema: Schema, path: str) -> None:
    """Every element of an associative list must carry at least one of its key fields."""
    if not isinstance(value, dict):
        return
    for key, child in value.items():
        field = field_schema(schema, key)
        child_path = f"{path}.{key}"
        if isinstance(child, list):
            keys = _map_keys(field)
            for i, item in enumerate(child):
                _check_item(item, keys, child_path, i)
                _check_keys(item, list_items(field), f"{child_path}[{i}]")
        elif isinstance(child, dict):
            _check_keys(child, resolved(field), child_path)


def _check_item(item: Any, keys: list[str], path: str, index: int) -> None:
    if not keys:
        return
    if not isinstance(item, dict):
        raise BadRequest(f"{path}: element {index}: expected an object in an associative list")
    if not any(k in item for k in keys):
        raise BadRequest(
            f"{path}: element {index}: associative list with keys has an element that omits key field "
            f'"{keys[0]}" (and doesn\'t have default value)'
        )


def _apply_map(live: dict[str, Any], applied: dict[str, Any], schema: Schema, path: str) -> dict[str, Any]:
    for key, value in applied.items():
        if value is None:
            continue
        field = field_schema(schema, key)
        current = live.get(key)
        child_path = f"{path}.{key}"
        if isinstance(value, dict) and isinstance(current, dict):
            sub = resolved(field)
            if sub is not None and sub.get("x-kubernetes-map-type") == "atomic":
                live[key] = _without_nulls(value)
            else:
                live[key] = _apply_map(current, value, sub, child_path)
        elif isinstance(value, list) and isinstance(current, list):
            live[key] = _apply_list(current, value, field, child_path)
        else:
            fresh = _without_nulls(value)
            _check_keys({key: fresh}, schema, path)
            live[key] = fresh
    return live


def _matches(a: dict[str, Any], b: dict[str, Any], keys: list[str]) -> bool:
    return all(k not in a or k not in b or json_equal(a[k], b[k]) for k in keys)


def _apply_list(live: list[Any], applied: list[Any], field: Schema, path: str) -> list[Any]:
    schema = resolved(field)
    list_type = schema.get("x-kubernetes-list-type") if schema else None
    if list_type == "set":
        result = list(live)
        for value in applied:
            if not any(json_equal(value, v) for v in result):
                result.append(copy.deepcopy(value))
        return result
    keys, items = _map_keys(field), list_items(field)
    if not keys:
        fresh: list[Any] = _without_nulls(applied)
        for i, value in enumerate(fresh):
            _check_keys(value, items, f"{path}[{i}]")
        return fresh
    result = list(live)
    for i, item in enumerate(applied):
        _check_item(item, keys, path, i)
        at = next((j for j, v in enumerate(result) if isinstance(v, dict) and _matches(v, item, keys)), None)
        if at is None:
            fresh_item = _without_nulls(item)
            _check_keys(fresh_item, items, f"{path}[{i}]")
            result.append(fresh_item)
        else:
            result[at] = _apply_map(result[at], item, items, f"{path}[{i}]")
    return result

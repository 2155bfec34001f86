"""Strategic merge patch, driven by the Kubernetes OpenAPI definitions.

`kubectl apply` (client-side) and `kubectl patch` send `application/strategic-merge-patch+json`
for built-in kinds: a merge patch whose lists may merge element by element instead of
being replaced. How each field merges comes from its schema (`definitions.py`):
`x-kubernetes-patch-strategy` (`merge`, `retainKeys`, `merge,retainKeys`, `replace`)
and `x-kubernetes-patch-merge-key`. The semantics follow k8s.io/apimachinery
`strategicpatch.StrategicMergeMapPatch`:

* maps merge recursively, `null` deletes a key;
* lists with strategy `merge` merge by merge key (containers by `name`, ports by
  `containerPort`, ...) or, for primitives, as a union (finalizers); other lists are replaced;
* directives: `$patch: replace|delete|merge` on a map or list element, `$retainKeys`,
  `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` (the order of the
  merged list: kubectl's order for the items it names, server-only items kept where they were).

Without a schema (unknown name, or fields beyond the schema) the same code gives
merge-patch semantics: maps merge, lists are replaced. Departures from Kubernetes:
`$patch: merge` is accepted (Kubernetes rejects it), and `$patch: delete` on a map
removes the key (Kubernetes leaves `{}`). Malformed patches raise BadRequest with the
apimachinery `mergepatch` messages.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from skiff.api.definitions import definition, resolve
from skiff.api.errors import BadRequest, Invalid
from skiff.api.json_patch import REJECTED, json_equal, json_type

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"
SET_ELEMENT_ORDER = "$setElementOrder/"

Schema = dict[str, Any] | None
_DELETED = object()  # a new key whose patch value is `{"$patch": "delete"}`


# -- schema navigation (shared with server-side apply) ---------------------------------------------


def root_schema(schema_name: str | None) -> Schema:
    """The resolved definition for a name such as `io.k8s.api.apps.v1.Deployment`, or None."""
    if not schema_name:
        return None
    try:
        return resolve(definition(schema_name))
    except KeyError:
        return None


def field_schema(schema: Schema, key: str) -> Schema:
    """The (unresolved) schema of `key` in an object schema: a property or additionalProperties."""
    if schema is None:
        return None
    props = schema.get("properties")
    if isinstance(props, dict) and key in props:
        field: dict[str, Any] = props[key]
        return field
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def resolved(field: Schema) -> Schema:
    return resolve(field) if field is not None else None


def list_items(field: Schema) -> Schema:
    """The resolved element schema of a list field."""
    schema = resolved(field)
    items = schema.get("items") if schema else None
    return resolve(items) if isinstance(items, dict) else None


def _strategy(field: Schema) -> tuple[set[str], str]:
    if field is None:
        return set(), ""
    raw = str(field.get("x-kubernetes-patch-strategy", ""))
    return {s.strip() for s in raw.split(",") if s.strip()}, str(
        field.get("x-kubernetes-patch-merge-key", "")
    )


# -- errors ------------------------------------------------------------------------------------------


def go_format(value: Any) -> str:
    """A value as Go's `%v` prints a decoded JSON value (`map[k:v]`, `[a b]`, `<nil>`)."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _no_merge_key(item: Any, merge_key: str) -> BadRequest:
    return BadRequest(f"map: {go_format(item)} does not contain declared merge key: {merge_key}")


def _bad_directive(directive: Any, patch: Any) -> BadRequest:
    return BadRequest(f"unknown patch type: {go_format(directive)} in map: {go_format(patch)}")


# -- merging -----------------------------------------------------------------------------------------


def strategic_merge_patch(original: dict[str, Any], patch: Any, schema_name: str | None) -> dict[str, Any]:
    """Apply a strategic merge patch to `original` (not mutated); returns the new object."""
    if not isinstance(patch, dict):
        raise BadRequest(
            f"json: cannot unmarshal {json_type(patch)} into Go value of type map[string]interface {{}}"
        )
    result = _merge_map(copy.deepcopy(original), patch, root_schema(schema_name))
    return result if isinstance(result, dict) else {}


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: Schema) -> Any:
    """Merge `patch` into `original` (owned, mutated). May return `_DELETED`."""
    if DIRECTIVE in patch:
        directive = patch[DIRECTIVE]
        rest = {k: v for k, v in patch.items() if k != DIRECTIVE}
        if directive == "replace":
            return _merge_map({}, rest, schema)
        if directive == "delete":
            return _DELETED
        if directive != "merge":
            raise _bad_directive(directive, patch)
        patch = rest
    patch = dict(patch)
    if RETAIN_KEYS in patch:
        _retain_keys(original, patch)
    for key in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        _set_element_order(original, patch, key, schema)
    deletions = {k: patch.pop(k) for k in list(patch) if k.startswith(DELETE_FROM_PRIMITIVE_LIST)}
    for key, value in patch.items():
        if value is None:
            original.pop(key, None)
            continue
        field = field_schema(schema, key)
        current = original.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            if "replace" in _strategy(field)[0]:
                merged = _merge_map({}, value, resolved(field))
            else:
                merged = _merge_map(current, value, resolved(field))
        elif isinstance(value, list) and isinstance(current, list):
            merged = _merge_list(current, value, field)
        else:
            merged = _fresh(value, field)
        if merged is _DELETED:
            original.pop(key, None)
        else:
            original[key] = merged
    for key, values in deletions.items():
        if not isinstance(values, list):
            raise BadRequest("invalid patch format of primitive list")
        name = key[len(DELETE_FROM_PRIMITIVE_LIST) :]
        if isinstance(original.get(name), list):
            original[name] = [v for v in original[name] if not any(json_equal(v, d) for d in values)]
    return original


def _fresh(value: Any, field: Schema) -> Any:
    """A patch value for a key the original lacks (or holds with another type): directives and nulls go."""
    if isinstance(value, dict):
        return _merge_map({}, value, resolved(field))
    if isinstance(value, list):
        return _merge_list([], value, field)
    return copy.deepcopy(value)


def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    keep = patch.pop(RETAIN_KEYS)
    if not isinstance(keep, list):
        raise BadRequest("invalid patch format of retainKeys")
    for key, value in patch.items():
        if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER, DIRECTIVE)):
            continue
        if key not in keep:
            raise BadRequest("invalid patch format of retainKeys")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _merge_list(original: list[Any], patch: list[Any], field: Schema) -> list[Any]:
    strategies, merge_key = _strategy(field)
    items = list_items(field)
    if "merge" not in strategies:
        fresh = [_fresh(v, items) for v in patch]
        return [v for v in fresh if v is not _DELETED]
    if any(isinstance(v, list) for v in (*original, *patch)):
        raise Invalid(REJECTED)  # Kubernetes: "lists of lists are not supported", a 422
    if not any(isinstance(v, dict) for v in (*original, *patch)):
        merged: list[Any] = []
        for v in (*original, *patch):
            if not any(json_equal(v, m) for m in merged):
                merged.append(copy.deepcopy(v))
        return _normalize(merged, patch, original, _identity)
    if not merge_key:
        raise BadRequest("cannot merge lists without merge key for type map")
    merged, plain = list(original), []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise BadRequest(f"expected a map, but received a {json_type(item)}")
        directive = item.get(DIRECTIVE)
        if directive is None or directive == "merge":
            plain.append({k: v for k, v in item.items() if k != DIRECTIVE})
        elif directive == "delete":
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            merged = [m for m in merged if not _same_key(m, item, merge_key)]
        elif directive == "replace":
            replace = True
        else:
            raise _bad_directive(directive, item)
    if replace:
        return [_merge_map({}, item, items) for item in plain]
    for item in plain:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        at = next((i for i, m in enumerate(merged) if _same_key(m, item, merge_key)), None)
        if at is None:
            merged.append(_merge_map({}, item, items))
        else:
            merged[at] = _merge_map(merged[at], item, items)
    return _normalize(merged, plain, original, _key_of(merge_key))


def _same_key(a: Any, b: dict[str, Any], merge_key: str) -> bool:
    return isinstance(a, dict) and merge_key in a and json_equal(a[merge_key], b[merge_key])


def _identity(value: Any) -> Any:
    return value


def _key_of(merge_key: str) -> Callable[[Any], Any]:
    return lambda item: item.get(merge_key) if isinstance(item, dict) else None


def _position(seq: list[Any], value: Any, key: Callable[[Any], Any]) -> int:
    wanted = key(value)
    return next((i for i, v in enumerate(seq) if json_equal(key(v), wanted)), -1)


def _normalize(
    merged: list[Any], patch_order: list[Any], server_order: list[Any], key: Callable[[Any], Any]
) -> list[Any]:
    """Kubernetes' normalizeElementOrder: items the patch names in its order, the rest interleaved
    where they were in the live list."""
    from_patch = [m for m in merged if _position(patch_order, m, key) >= 0]
    server_only = [m for m in merged if _position(patch_order, m, key) < 0]

    def rank(order: list[Any]) -> Callable[[Any], int]:
        return lambda item: p if (p := _position(order, item, key)) >= 0 else len(order)

    from_patch.sort(key=rank(patch_order))
    server_only.sort(key=rank(server_order))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(from_patch):
        if i >= len(server_only):
            out.append(from_patch[j])
            j += 1
        elif j >= len(from_patch):
            out.append(server_only[i])
            i += 1
        else:
            left = _position(server_order, server_only[i], key)
            right = _position(server_order, from_patch[j], key)
            if 0 <= left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(from_patch[j])
                j += 1
    return out


def _set_element_order(original: dict[str, Any], patch: dict[str, Any], key: str, schema: Schema) -> None:
    order = patch.pop(key)
    name = key[len(SET_ELEMENT_ORDER) :]
    if not name or not isinstance(order, list):
        raise BadRequest("invalid patch format of setElementOrder list")
    if patch.get(name, []) is None:
        return  # the list itself is being deleted
    field = field_schema(schema, name)
    merge_key = _strategy(field)[1]
    current = original.get(name)
    if name in patch:
        value = patch.pop(name)
        if not isinstance(value, list):
            raise BadRequest("invalid patch format of setElementOrder list")
        merged = _merge_list(current if isinstance(current, list) else [], value, field)
    elif isinstance(current, list):
        merged = current
    else:
        return
    key_fn = _key_of(merge_key) if merge_key and any(isinstance(m, dict) for m in merged) else _identity
    if key_fn is not _identity:
        for item in order:
            if not isinstance(item, dict) or merge_key not in item:
                raise _no_merge_key(item, merge_key)
    server = current if isinstance(current, list) else []
    original[name] = _normalize(merged, order, server, key_fn)

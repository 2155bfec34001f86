"""Field sets in the structured-merge-diff form: which fields of an object someone owns.

Why this exists: server-side apply records, per field manager, the set of fields it owns
(`metadata.managedFields[].fieldsV1`). The set is written as Kubernetes writes it
(sigs.k8s.io/structured-merge-diff `fieldpath`): a tree whose keys are path elements --
`f:<field>`, `k:<json object of the list keys>` (an item of an associative list),
`v:<json value>` (an item of a set list), `i:<index>` -- where `{}` is a member leaf and
`".": {}` marks an inner node that is itself a member.

Here a set *is* that tree (a plain dict, stored as is in the object); a path is a tuple of
path elements. `of` computes the set of a value (SMD `ToFieldSet`), `compare` the paths
added, modified and removed between two versions (SMD `Compare`), walking only the parts
that differ so that an update that touches one field costs one field. Which lists are maps
(and on which keys), sets or atomic comes from the schema: `x-kubernetes-list-type` and
`x-kubernetes-list-map-keys`, else the strategic `x-kubernetes-patch-merge-key` of built-in
kinds; maps with `x-kubernetes-map-type: atomic` are leaves. Without a schema, maps are
granular and lists atomic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from skiff.api import strategic
from skiff.api.strategic import Schema, field_schema

Tree = dict[str, Any]
Path = tuple[str, ...]
MEMBER = "."


# -- schema shapes ----------------------------------------------------------------------------

_memo: dict[tuple[int, str], tuple[Any, Any]] = {}


def _cached(kind: str, field: Schema, compute: Any) -> Any:
    """`compute(field)`, remembered per schema object (held, so that its id stays its own)."""
    if field is None:
        return compute(None)
    hit = _memo.get((id(field), kind))
    if hit is not None and hit[0] is field:
        return hit[1]
    value = compute(field)
    if len(_memo) > 8192:
        _memo.clear()
    _memo[(id(field), kind)] = (field, value)
    return value


def resolved(field: Schema) -> Schema:
    return _cached("resolved", field, strategic.resolved)  # type: ignore[no-any-return]


def list_items(field: Schema) -> Schema:
    return _cached("items", field, strategic.list_items)  # type: ignore[no-any-return]


def list_kind(field: Schema) -> tuple[str, list[str]]:
    """("map", keys) | ("set", []) | ("atomic", []) for a list field's (unresolved) schema."""
    return _cached("list", field, _list_kind)  # type: ignore[no-any-return]


def _list_kind(field: Schema) -> tuple[str, list[str]]:
    schema = resolved(field)
    if not schema:
        return "atomic", []
    kind = schema.get("x-kubernetes-list-type")
    if kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        merge_key = schema.get("x-kubernetes-patch-merge-key")
        return "map", [str(k) for k in (keys or ([merge_key] if merge_key else []))]
    if kind == "set":
        return "set", []
    if kind is None and "merge" in str(schema.get("x-kubernetes-patch-strategy", "")):
        merge_key = schema.get("x-kubernetes-patch-merge-key")
        return ("map", [str(merge_key)]) if merge_key else ("set", [])
    return "atomic", []


def _atomic_map(schema: Schema) -> bool:
    return bool(schema) and schema.get("x-kubernetes-map-type") == "atomic"  # type: ignore[union-attr]


def _declared(schema: Schema, key: str) -> bool:
    props = schema.get("properties") if schema else None
    return isinstance(props, dict) and key in props


def _is_map_type(schema: Schema) -> bool:
    """A map of arbitrary keys (labels, annotations, limits), as opposed to a struct of named fields."""
    return bool(schema) and not schema.get("properties") and isinstance(schema.get("additionalProperties"), dict)  # type: ignore[union-attr]


# -- path elements ------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def item_element(item: Any, kind: str, keys: list[str], index: int) -> str:
    if kind == "map" and isinstance(item, dict):
        return "k:" + _compact({k: item[k] for k in keys if k in item})
    if kind == "set":
        return "v:" + _compact(item)
    return f"i:{index}"


def render(path: Path) -> str:
    """A path as Kubernetes prints it in conflicts: `.spec.containers[name="nginx"].image`."""
    out = []
    for pe in path:
        kind, rest = pe[:2], pe[2:]
        if kind == "f:":
            out.append("." + rest)
        elif kind == "k:":
            fields = json.loads(rest)
            out.append("[" + ",".join(f"{k}={_compact(v)}" for k, v in fields.items()) + "]")
        elif kind == "v:":
            out.append("[=" + rest + "]")
        else:
            out.append("[" + rest + "]")
    return "".join(out)


# -- set of a value (ToFieldSet) -----------------------------------------------------------------


def of(value: Any, schema: Schema, skip: frozenset[str] = frozenset()) -> Tree:
    """The field set of an object (top-level keys in `skip` left out)."""
    paths: list[Path] = []
    if isinstance(value, dict):
        for key, child in value.items():
            if key not in skip:
                _child_fields(key, child, schema, (), paths, added=False)
    return from_paths(paths)


def _child_fields(key: str, child: Any, schema: Schema, path: Path, out: list[Path], *, added: bool) -> None:
    field = field_schema(schema, key)
    child_path = (*path, "f:" + key)
    _fields(child, field, child_path, out, added=added)
    if child is None or child == {} or not _declared(schema, key) or (added and _is_map_type(resolved(field))):
        out.append(child_path)


def _fields(value: Any, field: Schema, path: Path, out: list[Path], *, added: bool = False) -> None:
    if isinstance(value, dict):
        schema = resolved(field)
        if _atomic_map(schema):
            out.append(path)
            return
        for key, child in value.items():
            _child_fields(key, child, schema, path, out, added=added)
    elif isinstance(value, list):
        kind, keys = list_kind(field)
        if kind == "atomic":
            out.append(path)
            return
        items = list_items(field)
        for i, item in enumerate(value):
            item_path = (*path, item_element(item, kind, keys, i))
            if isinstance(item, dict):
                for key, child in item.items():
                    _child_fields(key, child, items, item_path, out, added=added)
            out.append(item_path)
    else:
        out.append(path)


# -- what changed (Compare) ----------------------------------------------------------------------


class Changes:
    """Paths added, modified and removed between two versions of an object."""

    __slots__ = ("added", "modified", "removed")

    def __init__(self) -> None:
        self.added: list[Path] = []
        self.modified: list[Path] = []
        self.removed: list[Path] = []

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.removed)


def compare(old: Any, new: Any, schema: Schema, skip: frozenset[str] = frozenset()) -> Changes:
    changes = Changes()
    old = old if isinstance(old, dict) else {}
    new = new if isinstance(new, dict) else {}
    _compare_maps(old, new, schema, (), changes, skip)
    return changes


def _compare_maps(old: dict[str, Any], new: dict[str, Any], schema: Schema, path: Path, ch: Changes,
                  skip: frozenset[str] = frozenset()) -> None:  # fmt: skip
    for key, value in new.items():
        if key in skip:
            continue
        if key not in old:
            _child_fields(key, value, schema, path, ch.added, added=True)
        elif old[key] != value or type(old[key]) is not type(value):
            _compare_values(old[key], value, field_schema(schema, key), (*path, "f:" + key), ch)
    for key, value in old.items():
        if key not in new and key not in skip:
            _child_fields(key, value, schema, path, ch.removed, added=True)


def _compare_values(old: Any, new: Any, field: Schema, path: Path, ch: Changes) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        schema = resolved(field)
        if _atomic_map(schema):
            ch.modified.append(path)
        else:
            _compare_maps(old, new, schema, path, ch)
        return
    if isinstance(old, list) and isinstance(new, list):
        kind, keys = list_kind(field)
        if kind != "atomic":
            _compare_lists(old, new, kind, keys, list_items(field), path, ch)
            return
    if isinstance(old, dict | list) or isinstance(new, dict | list):  # the shape changed: all of it
        _fields(old, field, path, ch.removed, added=True)
        _fields(new, field, path, ch.added, added=True)
        return
    ch.modified.append(path)


def _compare_lists(old: list[Any], new: list[Any], kind: str, keys: list[str], items: Schema, path: Path,
                   ch: Changes) -> None:  # fmt: skip
    before = {item_element(v, kind, keys, i): v for i, v in enumerate(old)}
    after = {item_element(v, kind, keys, i): v for i, v in enumerate(new)}
    for pe, value in after.items():
        item_path = (*path, pe)
        if pe not in before:
            _item_fields(value, items, item_path, ch.added)
        elif before[pe] != value:
            if isinstance(value, dict) and isinstance(before[pe], dict):
                _compare_maps(before[pe], value, items, item_path, ch)
            else:
                ch.modified.append(item_path)
    for pe, value in before.items():
        if pe not in after:
            _item_fields(value, items, (*path, pe), ch.removed)


def _item_fields(item: Any, items: Schema, item_path: Path, out: list[Path]) -> None:
    if isinstance(item, dict):
        for key, child in item.items():
            _child_fields(key, child, items, item_path, out, added=True)
    out.append(item_path)


# -- the tree -------------------------------------------------------------------------------------


def from_paths(paths: list[Path]) -> Tree:
    tree: Tree = {}
    for p in paths:
        insert(tree, p)
    return tree


def insert(tree: Tree, path: Path) -> None:
    node = tree
    last = len(path) - 1
    for i, pe in enumerate(path):
        child = node.get(pe)
        if child is None:
            child = node[pe] = {}
        elif not child and i < last:  # a member leaf gets children: mark it
            child[MEMBER] = {}
        node = child
    if node and MEMBER not in node and node is not tree:
        node[MEMBER] = {}


def contains(tree: Tree, path: Path) -> bool:
    node = tree
    for pe in path:
        node = node.get(pe)  # type: ignore[assignment]
        if node is None:
            return False
    return not node or MEMBER in node


def discard(tree: Tree, path: Path) -> bool:
    """Remove `path` from the set (its descendants stay); whether it was there."""
    trail: list[tuple[Tree, str]] = []
    node = tree
    for pe in path:
        child = node.get(pe)
        if child is None:
            return False
        trail.append((node, pe))
        node = child
    if MEMBER in node:
        del node[MEMBER]  # an inner node with children left: no longer a member itself
        return True
    if node or not trail:
        return False
    parent, pe = trail[-1]
    del parent[pe]
    for parent, pe in reversed(trail[:-1]):  # inner nodes left with nothing go; a lone "." becomes a leaf
        child = parent[pe]
        if list(child) == [MEMBER]:
            child.clear()
            break
        if child:
            break
        del parent[pe]
    return True


def has_under(tree: Tree, path: Path) -> bool:
    """Whether the set has a member strictly below `path`."""
    node = tree
    for pe in path:
        node = node.get(pe)  # type: ignore[assignment]
        if node is None:
            return False
    return any(k != MEMBER for k in node)


def paths(tree: Tree, prefix: Path = ()) -> Iterator[Path]:
    """Every member of the set, parents before children."""
    for pe, child in tree.items():
        if pe == MEMBER:
            continue
        here = (*prefix, pe)
        if not child or MEMBER in child:
            yield here
        yield from paths(child, here)

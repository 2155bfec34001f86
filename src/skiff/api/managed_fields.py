"""metadata.managedFields: who owns which field, kept on every write, and server-side apply on top of it.

Why this exists: Kubernetes records, for every object, which field manager set which fields
(k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager over sigs.k8s.io/structured-merge-diff).
`kubectl apply --server-side` relies on it to report conflicts between managers, to let
`--force-conflicts` take fields over, and to remove the fields a manager stops applying.

* `track_update` -- a create, update or non-apply patch: the request's manager (operation
  Update, keyed by manager, apiVersion and subresource) gains what it added or changed;
  every other manager loses those fields and whatever was removed (SMD `Updater.Update`).
* `apply` -- server-side apply: merge the configuration (`server_side_apply.apply_patch`),
  then drop the fields this manager applied last time and no longer does unless someone
  else owns them, then refuse fields that another manager owns and this apply changes
  (409 Conflict with Kubernetes' message) unless `force`, which takes them over
  (SMD `Updater.Apply`). The manager's Apply entry is exactly what it applied.

Entries are kept sorted as Kubernetes sorts them (Apply before Update, then time, manager);
beyond ten Update entries the oldest merge into "ancient-changes", as the apiserver caps them.
Managed fields a client sends in an update replace the recorded ones (how kubectl migrates
client-side apply to server-side apply); an empty list keeps them.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from skiff.api import fieldsets
from skiff.api.errors import Conflict
from skiff.api.fieldsets import Path, Tree, list_items, resolved
from skiff.api.strategic import Schema, field_schema

Obj = dict[str, Any]
APPLY, UPDATE = "Apply", "Update"
META_SKIP = frozenset(
    {"name", "namespace", "creationTimestamp", "selfLink", "uid", "generation", "managedFields", "resourceVersion"}
)  # what the stripMeta manager leaves out of every set
BEFORE_FIRST_APPLY = "before-first-apply"
ANCIENT_CHANGES = "ancient-changes"
MAX_UPDATE_MANAGERS = 10


@dataclass(frozen=True, kw_only=True)
class Request:
    """Who writes and where: the manager, the object's apiVersion, the subresource ("" or "status")."""

    manager: str
    api_version: str
    subresource: str = ""
    status_separate: bool = False  # the kind has a status subresource: status is not written through the main one
    now: str = ""


def default_manager(field_manager: str, user_agent: str) -> str:
    """The fieldManager query parameter, else the user agent's product (apiserver's prefixFromUserAgent)."""
    if field_manager:
        return field_manager
    return _agent_product(user_agent)


@lru_cache(maxsize=256)
def _agent_product(user_agent: str) -> str:
    product = user_agent.split("/", 1)[0]
    return "".join(c for c in product if c.isprintable())[:128]


# -- what a write may touch ----------------------------------------------------------------------


def _scope(obj: Obj, req: Request) -> Obj:
    """The part of the object that this request manages: status only through status, the rest through the main
    resource; metadata without what the server sets."""
    if req.status_separate and req.subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if req.status_separate:
        out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in META_SKIP}
        if kept:
            out["metadata"] = kept
        else:
            del out["metadata"]
    return out


# -- entries -------------------------------------------------------------------------------------


def _key(entry: Obj) -> tuple[str, str, str, str]:
    op = str(entry.get("operation") or "")
    return (str(entry.get("manager") or ""), op, "" if op == APPLY else str(entry.get("apiVersion") or ""),
            str(entry.get("subresource") or ""))  # fmt: skip


def _sort(entries: list[Obj]) -> list[Obj]:
    return sorted(entries, key=lambda e: (str(e.get("operation") or ""), str(e.get("time") or ""),
                                          str(e.get("manager") or ""), str(e.get("apiVersion") or ""),
                                          str(e.get("subresource") or "")))  # fmt: skip


def _entry(manager: str, operation: str, req: Request, fields: Tree) -> Obj:
    entry: Obj = {"manager": manager, "operation": operation, "apiVersion": req.api_version, "time": req.now,
                  "fieldsType": "FieldsV1", "fieldsV1": fields}  # fmt: skip
    if req.subresource:
        entry["subresource"] = req.subresource
    return entry


def _entries(obj: Obj | None) -> list[Obj]:
    meta = (obj or {}).get("metadata") or {}
    found = meta.get("managedFields") if isinstance(meta, dict) else None
    if not isinstance(found, list):
        return []
    # entries that are not objects, or whose fields are not a FieldsV1 object, cannot be kept up to date: dropped
    return [e for e in found if isinstance(e, dict) and e and isinstance(e.get("fieldsV1", {}), dict)]


def _same_scope(entry: Obj, req: Request) -> bool:
    """Whether `entry`'s fields live where this request writes (status managers vs the rest)."""
    if not req.status_separate:
        return True
    return (entry.get("subresource") == "status") == (req.subresource == "status")


def _set(entries: list[Obj], obj: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    kept = [e for e in entries if e.get("fieldsV1")]
    if kept:
        meta["managedFields"] = _sort(kept)
    else:
        meta.pop("managedFields", None)


# -- Update --------------------------------------------------------------------------------------


def _copy_tree(tree: Tree) -> Tree:
    return {k: _copy_tree(v) for k, v in tree.items()}


def _copy_entry(entry: Obj) -> Obj:
    return {**entry, "fieldsV1": _copy_tree(entry.get("fieldsV1") or {})}


def track_update(old: Obj | None, new: Obj, req: Request, schema: Schema) -> None:
    """Record, in `new`'s metadata.managedFields, what this create/update/patch changed and who owns it now.

    Cheap when little changed: only what differs is walked, and only the entries that change are copied."""
    entries = _entries(new) or _entries(old)
    if old is None and not entries:
        _track_create(new, req, schema)
        return
    changes = fieldsets.compare(_scope(old, req) if old is not None else {}, _scope(new, req), schema)
    if not changes:
        _set(entries, new)
        return
    touched = (*changes.added, *changes.modified, *changes.removed)
    me = (req.manager, UPDATE, req.api_version, req.subresource)
    if not changes.added and not changes.removed:
        kept = _rewrites_own(entries, changes.modified, me, req)
        if kept is not None:
            _set(_cap_updaters(kept), new)
            return
    out: list[Obj] = []
    mine: Obj | None = None
    for entry in entries:
        if _key(entry) == me:
            mine = _copy_entry(entry)
            out.append(mine)
            continue
        fields = entry.get("fieldsV1") or {}
        hit = [p for p in touched if fieldsets.contains(fields, p)] if _same_scope(entry, req) else []
        if hit:
            entry = _copy_entry(entry)
            for path in hit:
                fieldsets.discard(entry["fieldsV1"], path)
        out.append(entry)
    if mine is None:
        mine = _entry(req.manager, UPDATE, req, {})
        out.append(mine)
    fields = mine["fieldsV1"]
    for path in changes.removed:
        fieldsets.discard(fields, path)
    for path in (*changes.added, *changes.modified):
        fieldsets.insert(fields, path)
    mine["time"] = req.now
    mine["apiVersion"] = req.api_version
    _set(_cap_updaters(out), new)


def _rewrites_own(
    entries: list[Obj], modified: list[Path], me: tuple[str, str, str, str], req: Request
) -> list[Obj] | None:
    """The entries after an update that only changed values this manager already owns and no one else does (a
    Lease renewal, a kubelet's status heartbeat): its entry with a new time, the rest as they were; None if the
    update moves ownership. The same outcome as the general path of `track_update`, without copying field sets."""
    mine = next((i for i, e in enumerate(entries) if _key(e) == me), None)
    if mine is None or not all(fieldsets.contains(entries[mine].get("fieldsV1") or {}, p) for p in modified):
        return None
    for i, entry in enumerate(entries):
        if i != mine and _same_scope(entry, req):
            fields = entry.get("fieldsV1") or {}
            if any(fieldsets.contains(fields, p) for p in modified):
                return None
    out = list(entries)
    out[mine] = {**entries[mine], "time": req.now, "apiVersion": req.api_version}
    return out


_created: OrderedDict[tuple[int, bytes], tuple[Schema, bytes]] = OrderedDict()
CREATED_MEMO = 256  # distinct object shapes remembered (e.g. one per ReplicaSet template, one per kind of event)


def _shape(value: Any) -> Any:
    """What of a value its field set depends on: every map key (in order), every list whole (an item's path may be
    its keys' or its own value, and which one is the schema's business), and no scalar value -- a scalar or null
    field is one leaf, whatever it holds."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return value
    return 0


def _track_create(new: Obj, req: Request, schema: Schema) -> None:
    """A create that brings no managedFields: the manager owns every field it sent.

    Replicas of one template (a ReplicaSet's pods, a benchmark's) send the same fields over and over, and objects
    of one kind written by one component (the scheduler's events, a kubelet's) the same fields with other values,
    so the field set is remembered by the object's shape (`_shape`; what the server sets itself -- name, uid,
    creationTimestamp... -- left out by `_scope`): a repeat costs one walk of the maps, one encode and one decode."""
    scoped = _scope(new, req)
    try:
        key: tuple[int, bytes] | None = (id(schema), orjson.dumps(_shape(scoped)))
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits in a list: no memo
        key = None
    hit = _created.get(key) if key is not None else None
    if key is not None and hit is not None and hit[0] is schema:
        _created.move_to_end(key)
        fields: Tree = orjson.loads(hit[1])
    else:
        fields = field_set(scoped, schema)
        if key is not None:
            _created[key] = (schema, orjson.dumps(fields))  # the schema is held, so that its id stays its own
            if len(_created) > CREATED_MEMO:
                _created.popitem(last=False)
    _set([_entry(req.manager, UPDATE, req, fields)] if fields else [], new)


def field_set(scoped: Obj, schema: Schema) -> Tree:
    """The field set of a whole (scoped) object, walked field by field: what `_track_create` remembers."""
    return fieldsets.from_paths(fieldsets.compare({}, scoped, schema).added)


def _cap_updaters(entries: list[Obj]) -> list[Obj]:
    """At most MAX_UPDATE_MANAGERS Update entries: the oldest merge into one "ancient-changes" entry per
    apiVersion (the apiserver's capManagersManager), so that many writers cannot grow an object forever."""
    count = sum(1 for e in entries if e.get("operation") == UPDATE)
    if count <= MAX_UPDATE_MANAGERS:
        return entries
    entries = [_copy_entry(e) if e.get("operation") == UPDATE else e for e in entries]  # others may share them
    updaters = sorted((e for e in entries if e.get("operation") == UPDATE), key=lambda e: str(e.get("time") or ""))
    dropped: set[int] = set()
    first: dict[str, Obj] = {}  # apiVersion -> the entry the older ones of that version merge into
    for entry in updaters:
        if count <= MAX_UPDATE_MANAGERS:
            break
        version = str(entry.get("apiVersion") or "")
        bucket = first.get(version)
        if bucket is None:
            first[version] = entry
            continue
        bucket["manager"] = ANCIENT_CHANGES
        bucket.pop("subresource", None)
        for path in fieldsets.paths(entry.get("fieldsV1") or {}):
            fieldsets.insert(bucket["fieldsV1"], path)
        bucket["time"] = entry.get("time")
        dropped.add(id(entry))
        count -= 1
    return [e for e in entries if id(e) not in dropped]


# -- Apply ---------------------------------------------------------------------------------------


def _manager_label(entry: Obj) -> str:
    label = json.dumps(str(entry.get("manager") or ""))
    if entry.get("subresource"):
        label += f" with subresource {json.dumps(entry['subresource'])}"
    if entry.get("operation") == UPDATE:
        label += f" using {entry.get('apiVersion') or ''}"
    return label


def conflict_error(conflicts: list[tuple[Obj, Path]]) -> Conflict:
    """409 Conflict as the apiserver's fieldmanager words it, one cause per field."""
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {_manager_label(e)}",
               "field": fieldsets.render(p)} for e, p in conflicts]  # fmt: skip
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {_manager_label(entry)}: {fieldsets.render(path)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(_manager_label(entry), []).append(fieldsets.render(path))
        lines = []
        for label in sorted(by_manager):
            lines.append(f"conflicts with {label}:")
            lines.extend(f"- {p}" for p in by_manager[label])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return Conflict(message, causes=causes)


def _remove(obj: Any, path: Path) -> None:
    """Delete the value at `path` from `obj`, if it is there."""
    node = obj
    for depth, pe in enumerate(path):
        last = depth == len(path) - 1
        kind, rest = pe[:2], pe[2:]
        if kind == "f:":
            if not isinstance(node, dict) or rest not in node:
                return
            if last:
                del node[rest]
                return
            node = node[rest]
        elif isinstance(node, list):
            at = _find_item(node, kind, rest)
            if at is None:
                return
            if last:
                del node[at]
                return
            node = node[at]
        else:
            return


def _find_item(items: list[Any], kind: str, rest: str) -> int | None:
    if kind == "i:":
        i = int(rest)
        return i if 0 <= i < len(items) else None
    wanted = json.loads(rest)
    for i, item in enumerate(items):
        if kind == "v:" and item == wanted:
            return i
        if kind == "k:" and isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            return i
    return None


def _owns(fields: Tree, path: Path) -> bool:
    return fieldsets.contains(fields, path) or fieldsets.has_under(fields, path)


def apply(live: Obj | None, merged: Obj, config: Obj, req: Request, schema: Schema, *, force: bool) -> Obj:
    """Ownership for server-side apply: `merged` is live with `config` merged in (changed in place and returned)."""
    entries = [_copy_entry(e) for e in _entries(live)]
    if live is not None and not entries:  # an object no one managed yet: its fields were there before
        owned = fieldsets.of(_scope(live, req), schema)
        if owned:
            entries.append(_entry(BEFORE_FIRST_APPLY, UPDATE, req, owned))
    applied = fieldsets.of(_scope(without_nulls(_fill_keys(config, merged, schema)), req), schema)
    me = (req.manager, APPLY, "", req.subresource)
    previous = next((e for e in entries if _key(e) == me), None)
    others = [e for e in entries if _key(e) != me and _same_scope(e, req)]
    if previous is not None:  # what this manager no longer applies goes, unless someone else owns it
        for path in sorted(fieldsets.paths(previous.get("fieldsV1") or {}), key=len):
            if _owns(applied, path) or any(_owns(o.get("fieldsV1") or {}, path) for o in others):
                continue
            _remove(merged, path)
    changes = fieldsets.compare(_scope(live, req) if live is not None else {}, _scope(merged, req), schema)
    conflicts: list[tuple[Obj, Path]] = []
    for entry in others:
        fields = entry.get("fieldsV1") or {}
        for path in (*changes.modified, *changes.added):
            if fieldsets.contains(fields, path):
                conflicts.append((entry, path))
    if conflicts and not force:
        raise conflict_error(conflicts)
    for entry in others:
        fields = entry.get("fieldsV1") or {}
        for _, path in (c for c in conflicts if c[0] is entry):
            fieldsets.discard(fields, path)
        for path in changes.removed:
            fieldsets.discard(fields, path)
    entries = [e for e in entries if _key(e) != me]
    mine = _entry(req.manager, APPLY, req, applied)
    if previous is not None and previous.get("fieldsV1") == applied and not changes:  # a no-op keeps its time
        mine["time"] = previous.get("time", req.now)
    entries.append(mine)
    _set(_cap_updaters(entries), merged)
    return merged


def without_nulls(value: Any) -> Any:
    """An apply configuration's `null` means "not specified"."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def _fill_keys(value: Any, merged: Any, field: Schema) -> Any:
    """The applied configuration with each associative-list item's missing key fields (defaulted ones, such as a
    port's protocol) taken from the item it merged with, so that its path names the live item."""
    if isinstance(value, dict) and isinstance(merged, dict):
        schema = resolved(field)
        return {k: _fill_keys(v, merged.get(k), field_schema(schema, k)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(merged, list):
        kind, keys = fieldsets.list_kind(field)
        if kind != "map":
            return value
        items = list_items(field)
        out = []
        for item in value:
            if not isinstance(item, dict):
                out.append(item)
                continue
            match = next((m for m in merged if isinstance(m, dict)
                          and all(k not in item or m.get(k) == item[k] for k in keys)), None)  # fmt: skip
            filled = dict(item)
            if match is not None:
                for k in keys:
                    if k not in filled and k in match:
                        filled[k] = match[k]
            out.append(_fill_keys(filled, match, items))
        return out
    return value

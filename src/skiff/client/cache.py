"""The local copy of a resource that an informer keeps: objects by key, plus indexes.

Controllers read from this cache, never from the server, on every reconcile;
indexes answer "which pods are on node X" or "which pods does ReplicaSet U
own" without a scan, like client-go's `cache.Indexer`.

Objects in the cache are shared, not copied: treat them as read-only and
`copy.deepcopy` one before changing it (to build an update, say). Mutating a
cached object corrupts what every other reader sees.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]


def object_key(obj: Obj) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones (client-go's MetaNamespaceKey)."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    ns = meta.get("namespace")
    return f"{ns}/{name}" if ns else str(name)


def split_key(key: str) -> tuple[str | None, str]:
    """(namespace or None, name) of a key made by `object_key`."""
    ns, sep, name = key.partition("/")
    return (ns, name) if sep else (None, ns)


def index_by_namespace(obj: Obj) -> list[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


def index_by_node_name(obj: Obj) -> list[str]:
    """Pods by `spec.nodeName` (unscheduled pods are in no bucket)."""
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def index_by_owner_uid(obj: Obj) -> list[str]:
    """Objects by the uid of every owner in `metadata.ownerReferences`."""
    return [ref["uid"] for ref in (obj.get("metadata") or {}).get("ownerReferences") or [] if ref.get("uid")]


def index_by_controller_uid(obj: Obj) -> list[str]:
    """Objects by the uid of their controller owner (the ownerReference with `controller: true`)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref["uid"] for ref in refs if ref.get("controller") and ref.get("uid")]


class Cache:
    """Objects by key with named secondary indexes kept up to date on every change."""

    def __init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def list(self) -> builtins.list[Obj]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def items(self) -> dict[str, Obj]:
        """A snapshot of key → object (the dict is new, the objects are shared)."""
        return dict(self._items)

    # --- indexes ------------------------------------------------------------------------------
    def add_index(self, name: str, fn: IndexFunc) -> None:
        """Add an index computed by `fn(obj) -> values`; existing objects are indexed at once."""
        if name in self._indexers:
            raise ValueError(f"index {name!r} exists already")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def by_index(self, name: str, value: str) -> builtins.list[Obj]:
        """The objects whose index `name` yields `value`."""
        return [self._items[k] for k in self.index_keys(name, value)]

    def index_keys(self, name: str, value: str) -> builtins.list[str]:
        if name not in self._indices:
            raise KeyError(f"no index named {name!r}")
        return sorted(self._indices[name].get(value, ()))

    def index_values(self, name: str) -> builtins.list[str]:
        """Every value index `name` has objects for."""
        if name not in self._indices:
            raise KeyError(f"no index named {name!r}")
        return sorted(self._indices[name])

    # --- changes (by the informer) ------------------------------------------------------------
    def put(self, obj: Obj) -> Obj | None:
        """Store `obj` under its key; the object it replaced, if any."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[Obj]) -> None:
        """Swap the whole content for `objs` and rebuild the indexes."""
        self._items = {object_key(o): o for o in objs}
        self._indices = {name: {} for name in self._indexers}
        for key, obj in self._items.items():
            for name in self._indexers:
                self._index_one(name, key, obj)

    def _index_one(self, name: str, key: str, obj: Obj) -> None:
        bucket = self._indices[name]
        for value in set(self._indexers[name](obj)):
            bucket.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, fn in self._indexers.items():
            bucket = self._indices[name]
            for value in set(fn(obj)):
                keys = bucket.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del bucket[value]

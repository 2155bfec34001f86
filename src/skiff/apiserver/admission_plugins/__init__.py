"""Admission plugins: what Kubernetes' admission chain does to writes, for the kinds skiff serves.

`chain` holds the machinery (attributes, plugin base, the chain); one
module per plugin, named as Kubernetes names it. `AdmissionConfig` carries
the server flags plugins read, and `build_chain` assembles the plugins in
Kubernetes' order (ServiceAccount, NodeRestriction, Priority, DefaultTolerationSeconds, DefaultStorageClass,
StorageObjectInUseProtection). The namespace
lifecycle check stays in the generic store, which needs it before anything
else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiff.apiserver import objects
from skiff.apiserver.admission_plugins.chain import Attributes, Chain, Plugin, forbidden
from skiff.apiserver.admission_plugins.default_storage_class import DefaultStorageClass
from skiff.apiserver.admission_plugins.default_toleration_seconds import DEFAULT_SECONDS, DefaultTolerationSeconds
from skiff.apiserver.admission_plugins.node_restriction import NodeRestriction
from skiff.apiserver.admission_plugins.priority import Priority
from skiff.apiserver.admission_plugins.service_account import ServiceAccount
from skiff.apiserver.admission_plugins.storage_protection import StorageObjectInUseProtection
from skiff.apiserver.options import ListOptions
from skiff.apiserver.priorityclass import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from skiff.apiserver.registry import Registry
    from skiff.apiserver.store import Store

__all__ = ["AdmissionConfig", "Attributes", "Chain", "Plugin", "build_chain", "forbidden"]

Obj = dict[str, Any]

@dataclass(frozen=True)
class AdmissionConfig:
    """The kube-apiserver flags admission plugins read."""

    default_not_ready_toleration_seconds: int = DEFAULT_SECONDS
    default_unreachable_toleration_seconds: int = DEFAULT_SECONDS


class StoredPriorityClasses:
    """PriorityClasses read through the generic store (consistent reads from the watch cache).

    Every pod create without a class name asks for the list (to find the
    global default), so the decoded classes are kept per key and revision:
    a create costs a freshness check, not a decode of every class.
    """

    def __init__(self, store: Store, registry: Registry) -> None:
        rt = registry.get(GROUP, VERSION, PLURAL)
        assert rt is not None
        self.store, self.rt = store, rt
        self._decoded: dict[str, tuple[int, Obj]] = {}

    async def get(self, name: str) -> Obj | None:
        kv = await self.store.read(self.rt.key(None, name))
        return objects.decode(self.rt, kv) if kv is not None else None

    async def list(self) -> list[Obj]:
        """The classes as of now, shared and read-only."""
        cache = self.store.cache
        kvs = cache.list_current(self.rt.prefix(None)) if cache is not None and await cache.wait_fresh() else None
        if kvs is None:
            listed = await self.store.list(self.rt, None, ListOptions())
            items: list[Obj] = listed["items"]
            return items
        out = []
        for kv in kvs:
            memo = self._decoded.get(kv.key)
            if memo is None or memo[0] != kv.mod_revision:
                memo = self._decoded[kv.key] = (kv.mod_revision, objects.decode(self.rt, kv))
            out.append(memo[1])
        if len(self._decoded) > len(kvs):  # some were deleted
            live = {kv.key for kv in kvs}
            self._decoded = {k: v for k, v in self._decoded.items() if k in live}
        return out


class StoredObjects:
    """Objects of one kind read through the generic store (Kubernetes' listers, for plugins).

    `get` answers from the watch cache (a consistent read) and decodes each version of an object
    once: every pod create reads its service account, and it rarely changes. What it returns is
    shared and read-only."""

    MEMO = 4096  # objects kept decoded

    def __init__(self, store: Store, registry: Registry, group: str, version: str, plural: str) -> None:
        rt = registry.get(group, version, plural)
        assert rt is not None
        self.store, self.rt = store, rt
        self._decoded: dict[str, tuple[int, Obj]] = {}

    async def get(self, namespace: str, name: str) -> Obj | None:
        kv = await self.store.read(self.rt.key(namespace if self.rt.namespaced else None, name))
        if kv is None:
            return None
        memo = self._decoded.get(kv.key)
        if memo is None or memo[0] != kv.mod_revision:
            if len(self._decoded) >= self.MEMO:
                self._decoded.clear()
            memo = self._decoded[kv.key] = (kv.mod_revision, objects.decode(self.rt, kv))
        return memo[1]

    async def list(self) -> list[Obj]:
        listed = await self.store.list(self.rt, None, ListOptions())
        items: list[Obj] = listed["items"]
        return items


def build_chain(config: AdmissionConfig, store: Store, registry: Registry) -> Chain:
    """The plugins skiff enables, in kube-apiserver's order."""
    return Chain(
        [
            ServiceAccount(StoredObjects(store, registry, "", "v1", "serviceaccounts")),
            NodeRestriction(StoredObjects(store, registry, "", "v1", "nodes")),
            Priority(StoredPriorityClasses(store, registry)),
            DefaultTolerationSeconds(
                not_ready_seconds=config.default_not_ready_toleration_seconds,
                unreachable_seconds=config.default_unreachable_toleration_seconds,
            ),
            DefaultStorageClass(StoredObjects(store, registry, "storage.k8s.io", "v1", "storageclasses")),
            StorageObjectInUseProtection(),
        ]
    )

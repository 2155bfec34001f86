"""The one registry of resource types the apiserver serves.

Built-in kinds and (later) custom resources are described the same way: a
`ResourceType` says where a kind lives in the URL space and in storage, which
verbs and subresources it has, and which `Strategy` adapts the generic store
to it. Everything generic (REST handlers, discovery, OpenAPI, tables) reads
this registry; nothing generic knows a kind by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skiff.apiserver.strategy import Strategy

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "binding", ...
    verbs: tuple[str, ...] = ALL_VERBS
    # name of the schema in the Kubernetes OpenAPI definitions, e.g. "io.k8s.api.apps.v1.Deployment"
    schema_ref: str | None = None
    # where objects live: several versions of one kind share storage (autoscaling v1/v2)
    storage_resource: str | None = None  # defaults to "<group or core>/<plural>"
    storage_version: str | None = None  # the apiVersion objects are stored in; None = this one
    # convert an object between this version and the storage version
    to_storage: Callable[[Obj], Obj] | None = None
    from_storage: Callable[[Obj], Obj] | None = None
    strategy: Strategy | None = field(default=None, compare=False)
    # arbitrary extras (CRD schema, printer columns…)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return str(self.extra.get("list_kind") or self.kind + "List")

    @property
    def group_resource(self) -> str:
        """`deployments.apps`, `pods` — how Kubernetes names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_prefix(self) -> str:
        resource = self.storage_resource or f"{self.group or 'core'}/{self.plural}"
        return f"/registry/{resource}/"

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.storage_prefix}{namespace}/{name}"
        return f"{self.storage_prefix}{name}"

    def prefix(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.storage_prefix}{namespace}/"
        return self.storage_prefix


class Registry:
    """All served resource types, by group/version/plural, changeable at run time (CRDs)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._listeners: list[Callable[[], None]] = []

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self._changed()

    def remove(self, group: str, version: str, plural: str) -> None:
        self._types.pop((group, version, plural), None)
        self._changed()

    def on_change(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def _changed(self) -> None:
        for fn in self._listeners:
            fn()

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> ResourceType | None:
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(sorted(self._types.values(), key=lambda r: (r.group, r.version, r.plural)))

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred (first registered stable) first."""
        out: dict[str, list[str]] = {}
        for rt in self._types.values():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        for versions in out.values():
            versions.sort(key=version_priority)
        return out


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: GA > beta > alpha, higher numbers first (as a sort key)."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)

"""Parsing Kubernetes REST paths into (resource type, namespace, name, subresource).

`/api/v1/namespaces/ns/pods/web/status`, `/apis/apps/v1/deployments`,
`/api/v1/nodes/n1`, the deprecated `/api/v1/watch/...` form — one parser for
every kind in the registry, so a CRD's paths work the moment it is added.
"""

from __future__ import annotations

from dataclasses import dataclass

from skiff.api import errors
from skiff.apiserver.registry import Registry, ResourceType


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str
    legacy_watch: bool = False


def not_found_path() -> errors.NotFound:
    return errors.NotFound("the server could not find the requested resource")


def parse(registry: Registry, path: str) -> Target:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise not_found_path()
    legacy_watch = False
    if rest and rest[0] == "watch":
        legacy_watch, rest = True, rest[1:]
    if not rest:
        raise not_found_path()
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns_rt = registry.get(group, version, "namespaces")
        if not (ns_rt is not None and len(rest) == 3 and rest[2] in ns_rt.subresources):
            namespace, rest = rest[1], rest[2:]
    rt = registry.get(group, version, rest[0])
    if rt is None:
        raise not_found_path()
    if namespace is not None and not rt.namespaced:
        raise not_found_path()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3 or (sub and sub not in rt.subresources):
        raise not_found_path()
    return Target(rt, namespace, name, sub, legacy_watch)

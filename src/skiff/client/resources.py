"""Which URL a kind of object lives at: group, version, plural, scope.

A `Resource` is what client-go calls a GroupVersionResource plus the two facts
a client needs to build paths (the kind and whether it is namespaced). The
constants below are the built-in resources the controllers, the scheduler and
the node agent use; custom resources are described with the same class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """`v1` for the core group, `group/version` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def root(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection, of one object, or of one object's subresource.

        A namespaced resource without `namespace` is the all-namespaces collection
        (only meaningful for list and watch).
        """
        if subresource is not None and name is None:
            raise ValueError("a subresource needs an object name")
        parts = [self.root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        elif not self.namespaced and namespace:
            raise ValueError(f"{self.plural} are not namespaced; got namespace {namespace!r}")
        parts.append(self.plural)
        if name is not None:
            if not name:
                raise ValueError("an empty object name")
            parts.append(name)
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)

    def stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj` with this resource's apiVersion and kind filled in where missing (the same dict)."""
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        return obj


def _core(plural: str, kind: str, namespaced: bool = True) -> Resource:
    return Resource("", "v1", plural, kind, namespaced)


PODS = _core("pods", "Pod")
NODES = _core("nodes", "Node", namespaced=False)
NAMESPACES = _core("namespaces", "Namespace", namespaced=False)
SERVICES = _core("services", "Service")
ENDPOINTS = _core("endpoints", "Endpoints")
EVENTS = _core("events", "Event")
CONFIGMAPS = _core("configmaps", "ConfigMap")
SECRETS = _core("secrets", "Secret")
SERVICEACCOUNTS = _core("serviceaccounts", "ServiceAccount")
PVCS = _core("persistentvolumeclaims", "PersistentVolumeClaim")
PVS = _core("persistentvolumes", "PersistentVolume", namespaced=False)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True)
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet", True)
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet", True)
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet", True)
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True)
JOBS = Resource("batch", "v1", "jobs", "Job", True)
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob", True)
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
PRIORITYCLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False)
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False)
CSRS = Resource("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", False)

BUILTINS: tuple[Resource, ...] = (
    PODS, NODES, NAMESPACES, SERVICES, ENDPOINTS, EVENTS, CONFIGMAPS, SECRETS, SERVICEACCOUNTS, PVCS, PVS,
    ENDPOINTSLICES, DEPLOYMENTS, REPLICASETS, DAEMONSETS, STATEFULSETS, CONTROLLERREVISIONS, JOBS, CRONJOBS,
    HPAS, LEASES, CRDS, PRIORITYCLASSES, CSRS, STORAGECLASSES,
)  # fmt: skip
_BY_KIND = {(r.api_version, r.kind): r for r in BUILTINS}


def by_kind(api_version: str, kind: str) -> Resource | None:
    """The built-in resource serving `kind` at `api_version` (e.g. from an ownerReference), if any."""
    return _BY_KIND.get((api_version, kind))

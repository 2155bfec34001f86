"""Hand-built pods, nodes and a plugin handle for the scheduler's unit tests (no server)."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from skiff.scheduler.cache import SchedulerCache
from skiff.scheduler.config import Profile
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.plugins import in_tree
from skiff.scheduler.podinfo import PodInfo
from skiff.scheduler.runtime import Framework

Obj = dict[str, Any]


def pod_obj(
    name: str = "p",
    *,
    namespace: str = "default",
    cpu: str | None = None,
    memory: str | None = None,
    extra: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    node_name: str = "",
    priority: int | None = None,
    spec: Mapping[str, Any] | None = None,
    containers: list[Obj] | None = None,
) -> Obj:
    requests: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    requests.update(extra or {})
    body: Obj = {
        "containers": containers
        if containers is not None
        else [{"name": "c", "image": "nginx:1.25", "resources": {"requests": requests} if requests else {}}],
        "schedulerName": "default-scheduler",
    }
    if node_name:
        body["nodeName"] = node_name
    if priority is not None:
        body["priority"] = priority
    body.update(spec or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "labels": dict(labels or {}),
        },
        "spec": body,
        "status": {"phase": "Pending"},
    }


def pod(name: str = "p", **kw: Any) -> PodInfo:
    return PodInfo(pod_obj(name, **kw))


def node_obj(
    name: str = "n",
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    extra: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    taints: list[Obj] | None = None,
    unschedulable: bool = False,
    images: list[Obj] | None = None,
) -> Obj:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {**({"taints": taints} if taints else {}), **({"unschedulable": True} if unschedulable else {})},
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "conditions": [{"type": "Ready", "status": "True"}],
            **({"images": images} if images else {}),
        },
    }


def node(name: str = "n", *, pods_on: Sequence[PodInfo] = (), **kw: Any) -> NodeInfo:
    info = NodeInfo(node_obj(name, **kw))
    for p in pods_on:
        info.add_pod(p.assumed_on(name) if not p.node_name else p)
    return info


class FakeVolumes:
    """Claims, volumes and classes by name, as the scheduler's informers would have them."""

    def __init__(self) -> None:
        self.claims: dict[str, Obj] = {}
        self.pvs: dict[str, Obj] = {}
        self.classes: dict[str, Obj] = {}

    def claim(self, namespace: str, name: str) -> Obj | None:
        return self.claims.get(f"{namespace}/{name}")

    def volume(self, name: str) -> Obj | None:
        return self.pvs.get(name)

    def volumes(self) -> list[Obj]:
        return list(self.pvs.values())

    def storage_class(self, name: str) -> Obj | None:
        return self.classes.get(name)


class FakeServices:
    """The scheduler's services without a server: a cache, namespace labels, recorded API calls."""

    def __init__(self, cache: SchedulerCache | None = None) -> None:
        self.cache = cache or SchedulerCache()
        self.ns_labels: dict[str, dict[str, str]] = {}
        self.bound: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self.nominated: list[tuple[str, str | None]] = []
        self.spawned: list[Coroutine[Any, Any, None]] = []
        self.storage = FakeVolumes()
        self.annotated: list[tuple[str, str, dict[str, str]]] = []

    def volume_lister(self) -> FakeVolumes:
        return self.storage

    async def annotate_claim(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        self.annotated.append((namespace, name, dict(annotations)))

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        return self.ns_labels

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        self.spawned.append(coro)

    async def bind_pod(self, pod: PodInfo, node_name: str) -> None:
        self.bound.append((pod.key, node_name))

    async def delete_pod(self, pod: PodInfo, *, reason: str) -> None:
        self.deleted.append(pod.key)

    async def set_nominated_node(self, pod: PodInfo, node_name: str | None) -> None:
        self.nominated.append((pod.key, node_name))

    def close(self) -> None:
        for coro in self.spawned:
            coro.close()


def framework(profile: Profile | None = None, cache: SchedulerCache | None = None) -> tuple[Framework, FakeServices]:
    services = FakeServices(cache)
    return Framework(profile or Profile(), in_tree(), services), services


def cache_with(nodes: Sequence[Obj], pods: Sequence[PodInfo] = ()) -> SchedulerCache:
    cache = SchedulerCache()
    for n in nodes:
        cache.add_node(n)
    for p in pods:
        cache.add_pod(p)
    return cache

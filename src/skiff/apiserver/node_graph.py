"""Which objects a node may read: the Node authorizer's graph, kept from the watch cache.

Kubernetes' `plugin/pkg/auth/authorizer/node/graph.go`: a node may get a
secret, configmap, persistentvolumeclaim or serviceaccount token only
when a pod bound to it references that object, and a persistentvolume
only when its claim is one of those (a volume's secrets through it).
Edges, as Kubernetes draws them:

    pod -> node                 (spec.nodeName; pods not yet bound have none)
    secret -> pod               (imagePullSecrets, env/envFrom, secret and projected volumes,
                                 the secretRefs of other volume sources)
    configmap -> pod            (env/envFrom, configMap and projected volumes)
    pvc -> pod                  (persistentVolumeClaim volumes, ephemeral volumes' <pod>-<volume>)
    serviceaccount -> pod       (spec.serviceAccountName)
    pv -> pvc                   (spec.claimRef)
    secret -> pv                (a volume source's secretRef, CSI's *SecretRef)

`NodeGraph` is the pure index (references counted per node, so that two
pods of one node sharing a secret keep it reachable until both are gone).
`CachedNodeGraph` fills it from the API server's watch cache: a list of the
current pods and PersistentVolumes, then the cache's events through a sink,
applied as the cache applies them -- a node reading a pod from a watch
finds the pod's edges already drawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchfanout import Subscription
from skiff.apiserver.watchwindow import CachedEvent

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PODS_PREFIX = "/registry/core/pods/"
PVS_PREFIX = "/registry/core/persistentvolumes/"

SECRETS, CONFIGMAPS, CLAIMS, VOLUMES = "secrets", "configmaps", "persistentvolumeclaims", "persistentvolumes"
SERVICE_ACCOUNTS, PODS = "serviceaccounts", "pods"


# -- what one object references (pure) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodEdges:
    """A bound pod's node and the names (in its namespace) of what it references."""

    node: str
    secrets: frozenset[str] = frozenset()
    configmaps: frozenset[str] = frozenset()
    claims: frozenset[str] = frozenset()
    service_account: str = ""

    def refs(self) -> Iterator[tuple[str, str]]:
        yield from ((SECRETS, n) for n in self.secrets)
        yield from ((CONFIGMAPS, n) for n in self.configmaps)
        yield from ((CLAIMS, n) for n in self.claims)
        if self.service_account:
            yield SERVICE_ACCOUNTS, self.service_account


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or ():
            if isinstance(c, Mapping):
                yield c


def _name(ref: Any, key: str = "name") -> str:
    return str(ref.get(key) or "") if isinstance(ref, Mapping) else ""


def _secret_refs(source: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The `secretRef`s and CSI `*SecretRef`s of one volume source."""
    for key, value in source.items():
        if (key == "secretRef" or key.endswith("SecretRef")) and isinstance(value, Mapping):
            yield value


def pod_edges(pod: Mapping[str, Any]) -> PodEdges | None:
    """The edges of a pod bound to a node; None while it is not bound (a pending pod reaches nothing)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") or ""
    if not node:
        return None
    pod_name = str((pod.get("metadata") or {}).get("name") or "")
    secrets: set[str] = {_name(ref) for ref in spec.get("imagePullSecrets") or ()}
    configmaps: set[str] = set()
    claims: set[str] = set()
    for c in _containers(spec):
        for env in c.get("env") or ():
            source = (env.get("valueFrom") if isinstance(env, Mapping) else None) or {}
            secrets.add(_name(source.get("secretKeyRef")))
            configmaps.add(_name(source.get("configMapKeyRef")))
        for env_from in c.get("envFrom") or ():
            if isinstance(env_from, Mapping):
                secrets.add(_name(env_from.get("secretRef")))
                configmaps.add(_name(env_from.get("configMapRef")))
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, Mapping):
            continue
        secrets.add(_name(volume.get("secret"), "secretName"))
        configmaps.add(_name(volume.get("configMap")))
        claims.add(_name(volume.get("persistentVolumeClaim"), "claimName"))
        if isinstance(volume.get("ephemeral"), Mapping) and volume.get("name"):
            claims.add(f"{pod_name}-{volume['name']}")
        for source in (volume.get("projected") or {}).get("sources") or ():
            if isinstance(source, Mapping):
                secrets.add(_name(source.get("secret")))
                configmaps.add(_name(source.get("configMap")))
        azure_file = volume.get("azureFile")
        if isinstance(azure_file, Mapping):
            secrets.add(_name(azure_file, "secretName"))
        for source in volume.values():
            if isinstance(source, Mapping):
                secrets.update(_name(ref) for ref in _secret_refs(source))
    for names in (secrets, configmaps, claims):
        names.discard("")
    return PodEdges(
        node=str(node),
        secrets=frozenset(secrets),
        configmaps=frozenset(configmaps),
        claims=frozenset(claims),
        service_account=str(spec.get("serviceAccountName") or "default"),
    )


@dataclass(frozen=True, slots=True)
class VolumeEdges:
    """A PersistentVolume's claim (namespace, name) and the secrets (namespace, name) its source names."""

    claim: tuple[str, str] | None = None
    secrets: frozenset[tuple[str, str]] = frozenset()


def volume_edges(pv: Mapping[str, Any]) -> VolumeEdges:
    spec = pv.get("spec") or {}
    ref = spec.get("claimRef")
    claim = None
    if isinstance(ref, Mapping) and ref.get("name"):
        claim = (str(ref.get("namespace") or ""), str(ref["name"]))
    secrets: set[tuple[str, str]] = set()
    for source in spec.values():
        if not isinstance(source, Mapping):
            continue
        for secret in _secret_refs(source):
            if secret.get("name"):
                secrets.add((str(secret.get("namespace") or ""), str(secret["name"])))
        if source.get("secretName") and source.get("secretNamespace"):  # azureFile
            secrets.add((str(source["secretNamespace"]), str(source["secretName"])))
    return VolumeEdges(claim, frozenset(secrets))


# -- the index (pure) --------------------------------------------------------------------------


class NodeGraph:
    """Pods and PersistentVolumes by what they reference; answers "does node N reach this object?"."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], PodEdges] = {}
        self.volumes: dict[str, VolumeEdges] = {}
        # (resource, namespace, name) -> node -> how many of its pods reference the object
        self._refs: dict[tuple[str, str, str], dict[str, int]] = {}
        self._volumes_by_secret: dict[tuple[str, str], set[str]] = {}

    def set_pod(self, namespace: str, name: str, edges: PodEdges | None) -> None:
        key = (namespace, name)
        old = self.pods.pop(key, None)
        if old == edges:
            if edges is not None:
                self.pods[key] = edges
            return
        if old is not None:
            for resource, ref in old.refs():
                counts = self._refs.get((resource, namespace, ref))
                if counts is not None:
                    left = counts.get(old.node, 0) - 1
                    if left > 0:
                        counts[old.node] = left
                    else:
                        counts.pop(old.node, None)
                        if not counts:
                            del self._refs[(resource, namespace, ref)]
        if edges is not None:
            self.pods[key] = edges
            for resource, ref in edges.refs():
                counts = self._refs.setdefault((resource, namespace, ref), {})
                counts[edges.node] = counts.get(edges.node, 0) + 1

    def set_volume(self, name: str, edges: VolumeEdges | None) -> None:
        old = self.volumes.pop(name, None)
        if old is not None:
            for secret in old.secrets:
                names = self._volumes_by_secret.get(secret)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._volumes_by_secret[secret]
        if edges is not None:
            self.volumes[name] = edges
            for secret in edges.secrets:
                self._volumes_by_secret.setdefault(secret, set()).add(name)

    def reaches(self, node: str, resource: str, namespace: str, name: str) -> bool:
        """Is there a path from the object to `node`?"""
        if resource == PODS:
            pod = self.pods.get((namespace, name))
            return pod is not None and pod.node == node
        if resource == VOLUMES:
            return self._volume_reaches(node, name)
        if node in self._refs.get((resource, namespace, name), ()):
            return True
        if resource == SECRETS:
            return any(self._volume_reaches(node, pv) for pv in self._volumes_by_secret.get((namespace, name), ()))
        return False

    def _volume_reaches(self, node: str, name: str) -> bool:
        pv = self.volumes.get(name)
        if pv is None or pv.claim is None:
            return False
        return node in self._refs.get((CLAIMS, *pv.claim), ())

    @classmethod
    def build(cls, pods: Iterable[tuple[str, str, Obj]], volumes: Iterable[tuple[str, Obj]]) -> NodeGraph:
        graph = cls()
        for namespace, name, pod in pods:
            graph.set_pod(namespace, name, pod_edges(pod))
        for name, pv in volumes:
            graph.set_volume(name, volume_edges(pv))
        return graph


# -- kept from the watch cache -----------------------------------------------------------------


class CachedNodeGraph:
    """A `NodeGraph` built from the watch cache on first use and then kept by the cache's events."""

    def __init__(self, cache: WatchCache | None = None) -> None:
        self.cache = cache
        self.graph: NodeGraph | None = None
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: asyncio.Lock | None = None

    def attach(self, cache: WatchCache) -> None:
        self.cache = cache

    async def current(self) -> NodeGraph | None:
        """The graph, started (or restarted after the cache reset its watchers) if needed; None while
        the watch cache is not ready."""
        if self.graph is not None:
            return self.graph
        cache = self.cache
        if cache is None or not cache.ready.is_set():
            return None
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.graph is None:
                await self._start(cache)
        return self.graph

    async def fresh(self) -> NodeGraph | None:
        """The graph once the cache holds every write storage had committed (for a second look before
        a denial: a pod bound a moment ago)."""
        cache = self.cache
        if cache is not None and await cache.wait_fresh():
            return await self.current()
        return None

    async def _start(self, cache: WatchCache) -> None:
        await self._stop()
        revision = cache.revision
        pods = [(*_pod_key(kv.key), _loads(kv.value)) for kv in cache.list_current(PODS_PREFIX) or ()]
        volumes = [(kv.key[len(PVS_PREFIX) :], _loads(kv.value)) for kv in cache.list_current(PVS_PREFIX) or ()]
        graph = NodeGraph.build(pods, volumes)
        self.graph = graph
        for prefix, apply in ((PODS_PREFIX, self._apply_pods), (PVS_PREFIX, self._apply_volumes)):
            sub = await cache.subscribe(prefix, revision)
            sink = _sink(apply)
            while not sub.queue.empty():  # anything replayed before the sink was set
                ev = sub.queue.get_nowait()
                if ev is None:
                    self.graph = None
                    break
                apply([ev])
            sub.sink = sink
            self._subscriptions.append(sub)
            self._tasks.append(asyncio.create_task(self._follow(sub, sink, apply), name=f"node graph {prefix}"))

    async def _follow(self, sub: Subscription, sink: Any, apply: Any) -> None:
        """Events the sink could not take (none, normally) and the end of the subscription: the cache
        ended its watchers (a resync), so the graph is rebuilt on next use."""
        while True:
            ev = await sub.queue.get()
            if ev is None:
                break
            apply([ev])
            sub.sink = sink
        self.graph = None

    def _apply_pods(self, events: list[CachedEvent]) -> None:
        graph = self.graph
        if graph is None:
            return
        for ev in events:
            namespace, name = _pod_key(ev.key)
            graph.set_pod(namespace, name, None if ev.type == "DELETE" else pod_edges(_loads(ev.value)))

    def _apply_volumes(self, events: list[CachedEvent]) -> None:
        graph = self.graph
        if graph is None:
            return
        for ev in events:
            name = ev.key[len(PVS_PREFIX) :]
            graph.set_volume(name, None if ev.type == "DELETE" else volume_edges(_loads(ev.value)))

    async def _stop(self) -> None:
        for sub in self._subscriptions:
            sub.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._subscriptions, self._tasks = [], []

    async def close(self) -> None:
        await self._stop()
        self.graph = None


def _sink(apply: Any) -> Any:
    def sink(events: list[CachedEvent]) -> bool:
        try:
            apply(events)
        except Exception:  # a bad object must not stop the graph: it is skipped
            log.exception("node graph: cannot apply %d events", len(events))
        return True

    return sink


def _pod_key(key: str) -> tuple[str, str]:
    namespace, _, name = key[len(PODS_PREFIX) :].partition("/")
    return namespace, name


def _loads(value: bytes) -> Obj:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}

"""A pod as the scheduler reads it: parsed once, then looked at thousands of times.

Filtering one pod may look at hundreds of nodes, and every node holds pods
whose affinity terms, ports and requests matter. Re-reading the JSON dicts
(and re-parsing `"500m"`) on every look would dominate the scheduler's time,
so each pod version is turned into a `PodInfo` when the informer delivers it:
resource requests as integers (as Kubernetes' `resource.PodRequests`),
tolerations, host ports, node selector and affinity, pod (anti-)affinity
terms with compiled label selectors, topology spread constraints.

`Resource` is Kubernetes' `framework.Resource`: millicores, bytes, a pod
count and extended ("scalar") resources, as plain integers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skiff.api import errors
from skiff.api.quantity import QuantityError, milli_value, value
from skiff.api.selectors import LabelSelector, label_selector_from_dict

Obj = dict[str, Any]

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
DEFAULT_MILLI_CPU_REQUEST = 100  # what a container without a cpu request counts as when scoring
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024  # the same for memory (Kubernetes' schedutil defaults)
DEFAULT_SCHEDULER = "default-scheduler"


class Resource:
    """Amounts of compute resources: cpu in millicores, memory and storage in bytes, pods, extended resources."""

    __slots__ = ("allowed_pods", "ephemeral_storage", "memory", "milli_cpu", "scalar")

    def __init__(
        self,
        milli_cpu: int = 0,
        memory: int = 0,
        ephemeral_storage: int = 0,
        allowed_pods: int = 0,
        scalar: dict[str, int] | None = None,
    ) -> None:
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.ephemeral_storage = ephemeral_storage
        self.allowed_pods = allowed_pods
        self.scalar: dict[str, int] = scalar if scalar is not None else {}

    @classmethod
    def from_list(cls, resources: Mapping[str, Any] | None) -> Resource:
        """A ResourceList (`{"cpu": "500m", "memory": "1Gi", "pods": "110"}`); unparsable amounts count as 0."""
        r = cls()
        r.add_list(resources)
        return r

    def add_list(self, resources: Mapping[str, Any] | None) -> None:
        for name, amount in (resources or {}).items():
            try:
                if name == CPU:
                    self.milli_cpu += _milli(amount)
                elif name == MEMORY:
                    self.memory += _value(amount)
                elif name == EPHEMERAL_STORAGE:
                    self.ephemeral_storage += _value(amount)
                elif name == PODS:
                    self.allowed_pods += _value(amount)
                else:
                    self.scalar[name] = self.scalar.get(name, 0) + _value(amount)
            except (QuantityError, TypeError):
                continue

    def add(self, other: Resource) -> None:
        self.milli_cpu += other.milli_cpu
        self.memory += other.memory
        self.ephemeral_storage += other.ephemeral_storage
        self.allowed_pods += other.allowed_pods
        for name, amount in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + amount

    def subtract(self, other: Resource) -> None:
        self.milli_cpu -= other.milli_cpu
        self.memory -= other.memory
        self.ephemeral_storage -= other.ephemeral_storage
        self.allowed_pods -= other.allowed_pods
        for name, amount in other.scalar.items():
            left = self.scalar.get(name, 0) - amount
            if left:
                self.scalar[name] = left
            else:
                self.scalar.pop(name, None)

    def set_max(self, other: Resource) -> None:
        self.milli_cpu = max(self.milli_cpu, other.milli_cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral_storage = max(self.ephemeral_storage, other.ephemeral_storage)
        for name, amount in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), amount)

    def copy(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pods, dict(self.scalar))

    def is_zero(self) -> bool:
        return not (self.milli_cpu or self.memory or self.ephemeral_storage or any(self.scalar.values()))

    def get(self, name: str) -> int:
        """The amount of one resource by its Kubernetes name (cpu in millicores)."""
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        if name == PODS:
            return self.allowed_pods
        return self.scalar.get(name, 0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return (
            self.milli_cpu == other.milli_cpu
            and self.memory == other.memory
            and self.ephemeral_storage == other.ephemeral_storage
            and self.allowed_pods == other.allowed_pods
            and {k: v for k, v in self.scalar.items() if v} == {k: v for k, v in other.scalar.items() if v}
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = f", scalar={self.scalar}" if self.scalar else ""
        return (
            f"Resource(milli_cpu={self.milli_cpu}, memory={self.memory}, "
            f"ephemeral_storage={self.ephemeral_storage}, allowed_pods={self.allowed_pods}{extra})"
        )


@functools.lru_cache(maxsize=8192)
def _milli_text(text: str) -> int:
    return milli_value(text)


@functools.lru_cache(maxsize=8192)
def _value_text(text: str) -> int:
    return value(text)


def _milli(amount: Any) -> int:
    """Millis of a quantity; the same few strings ("100m", "1") recur on every pod, so they are memoized."""
    return _milli_text(amount) if isinstance(amount, str) else milli_value(amount)


def _value(amount: Any) -> int:
    return _value_text(amount) if isinstance(amount, str) else value(amount)


def pod_requests(spec: Mapping[str, Any], *, non_zero: bool = False) -> Resource:
    """What a pod asks of a node (Kubernetes `resource.PodRequests`).

    The sum over containers; init containers run one at a time before them, so the
    pod needs at least the largest init container (plus the restartable "sidecar" init
    containers started before it, which keep running beside the app); then the overhead.
    With `non_zero`, a container without a cpu or memory request counts as 100m / 200Mi,
    which is what scoring uses so that request-less pods still spread.
    """
    total = Resource()
    for container in spec.get("containers") or []:
        total.add(_container_requests(container, non_zero))
    sidecars = Resource()
    init_max = Resource()
    for container in spec.get("initContainers") or []:
        reqs = _container_requests(container, non_zero)
        if container.get("restartPolicy") == "Always":
            total.add(reqs)
            sidecars.add(reqs)
            reqs = sidecars.copy()
        else:
            reqs.add(sidecars)
        init_max.set_max(reqs)
    total.set_max(init_max)
    overhead = spec.get("overhead")
    if overhead:
        total.add_list(overhead)
    return total


def _container_requests(container: Mapping[str, Any], non_zero: bool) -> Resource:
    requests = (container.get("resources") or {}).get("requests") or {}
    reqs = Resource.from_list(requests)
    if non_zero:
        if CPU not in requests:
            reqs.milli_cpu = DEFAULT_MILLI_CPU_REQUEST
        if MEMORY not in requests:
            reqs.memory = DEFAULT_MEMORY_REQUEST
    return reqs


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str  # "Equal" or "Exists"
    value: str
    effect: str  # "" tolerates every effect

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        """Kubernetes `Toleration.ToleratesTaint`."""
        if self.effect and self.effect != effect:
            return False
        if self.key and self.key != key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator in ("", "Equal") and self.value == value


def tolerations_of(spec: Mapping[str, Any]) -> tuple[Toleration, ...]:
    out = []
    for t in spec.get("tolerations") or []:
        if isinstance(t, Mapping):
            out.append(
                Toleration(
                    str(t.get("key") or ""),
                    str(t.get("operator") or "Equal"),
                    str(t.get("value") or ""),
                    str(t.get("effect") or ""),
                )
            )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A PodAffinityTerm with its selectors compiled: which pods, in which namespaces, over which topology."""

    selector: LabelSelector
    namespaces: frozenset[str]
    namespace_selector: LabelSelector | None  # None: only `namespaces`; match_nothing() when absent
    topology_key: str

    def matches(self, pod: PodInfo, namespace_labels: Mapping[str, Mapping[str, str]] | None = None) -> bool:
        """True if `pod` is one of the pods this term is about (namespace and labels)."""
        if pod.namespace not in self.namespaces:
            ns_sel = self.namespace_selector
            if ns_sel is None or ns_sel.nothing:
                return False
            if not ns_sel.empty():
                labels = (namespace_labels or {}).get(pod.namespace)
                if labels is None or not ns_sel.matches(labels):
                    return False
        return self.selector.matches(pod.labels)


@dataclass(frozen=True, slots=True)
class WeightedAffinityTerm:
    term: AffinityTerm
    weight: int


def _affinity_term(namespace: str, raw: Mapping[str, Any]) -> AffinityTerm:
    selector = label_selector_from_dict(raw.get("labelSelector"))
    ns_raw = raw.get("namespaceSelector")
    names = [str(n) for n in raw.get("namespaces") or []]
    if not names and ns_raw is None:
        names = [namespace]
    ns_selector = label_selector_from_dict(ns_raw) if ns_raw is not None else None
    return AffinityTerm(selector, frozenset(names), ns_selector, str(raw.get("topologyKey") or ""))


@dataclass(frozen=True, slots=True)
class HostPort:
    ip: str  # "0.0.0.0" for every address
    protocol: str
    port: int

    def conflicts(self, other: HostPort) -> bool:
        if self.port != other.port or self.protocol != other.protocol:
            return False
        return self.ip == other.ip or self.ip == "0.0.0.0" or other.ip == "0.0.0.0"


def host_ports_of(spec: Mapping[str, Any]) -> tuple[HostPort, ...]:
    out = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in container.get("ports") or []:
            port = p.get("hostPort")
            if isinstance(port, int) and port > 0:
                out.append(HostPort(str(p.get("hostIP") or "0.0.0.0"), str(p.get("protocol") or "TCP"), port))
    return tuple(out)


class PodInfo:
    """One version of a pod, parsed for scheduling. Shared and read-only once built."""

    __slots__ = (
        "host_ports",
        "images",
        "key",
        "labels",
        "name",
        "namespace",
        "node_name",
        "non_zero",
        "parse_error",
        "pod",
        "preferred_affinity",
        "preferred_anti_affinity",
        "priority",
        "requests",
        "required_affinity",
        "required_anti_affinity",
        "scheduler_name",
        "spec",
        "terminating",
        "tolerations",
        "uid",
    )

    def __init__(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.spec: Obj = spec
        self.namespace = str(meta.get("namespace") or "")
        self.name = str(meta.get("name") or "")
        self.uid = str(meta.get("uid") or "")
        self.key = f"{self.namespace}/{self.name}"
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.terminating = bool(meta.get("deletionTimestamp"))
        self.node_name = str(spec.get("nodeName") or "")
        self.scheduler_name = str(spec.get("schedulerName") or DEFAULT_SCHEDULER)
        priority = spec.get("priority")
        self.priority = priority if isinstance(priority, int) and not isinstance(priority, bool) else 0
        self.requests = pod_requests(spec)
        self.non_zero = pod_requests(spec, non_zero=True)
        self.tolerations = tolerations_of(spec)
        self.host_ports = host_ports_of(spec)
        self.images = tuple(str(c.get("image")) for c in spec.get("containers") or [] if c.get("image"))
        self.parse_error: str | None = None
        self.required_affinity: tuple[AffinityTerm, ...] = ()
        self.required_anti_affinity: tuple[AffinityTerm, ...] = ()
        self.preferred_affinity: tuple[WeightedAffinityTerm, ...] = ()
        self.preferred_anti_affinity: tuple[WeightedAffinityTerm, ...] = ()
        affinity = spec.get("affinity") or {}
        if affinity.get("podAffinity") or affinity.get("podAntiAffinity"):
            try:
                self._parse_pod_affinity(affinity)
            except (errors.StatusError, TypeError, AttributeError) as exc:
                self.parse_error = f"invalid pod affinity: {exc}"

    def _parse_pod_affinity(self, affinity: Mapping[str, Any]) -> None:
        ns = self.namespace
        aff = affinity.get("podAffinity") or {}
        anti = affinity.get("podAntiAffinity") or {}
        required = "requiredDuringSchedulingIgnoredDuringExecution"
        preferred = "preferredDuringSchedulingIgnoredDuringExecution"
        self.required_affinity = tuple(_affinity_term(ns, t) for t in aff.get(required) or [])
        self.required_anti_affinity = tuple(_affinity_term(ns, t) for t in anti.get(required) or [])
        self.preferred_affinity = tuple(
            WeightedAffinityTerm(_affinity_term(ns, t.get("podAffinityTerm") or {}), int(t.get("weight") or 0))
            for t in aff.get(preferred) or []
        )
        self.preferred_anti_affinity = tuple(
            WeightedAffinityTerm(_affinity_term(ns, t.get("podAffinityTerm") or {}), int(t.get("weight") or 0))
            for t in anti.get(preferred) or []
        )

    @property
    def has_affinity(self) -> bool:
        """Any pod affinity or anti-affinity term (what InterPodAffinity scoring must look at)."""
        return bool(
            self.required_affinity
            or self.required_anti_affinity
            or self.preferred_affinity
            or self.preferred_anti_affinity
        )

    def with_object(self, pod: Obj) -> PodInfo:
        """A copy reading `pod` as its object, when the caller knows nothing it parses has changed."""
        clone = PodInfo.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.pod = pod
        clone.spec = pod.get("spec") or {}
        return clone

    def assumed_on(self, node_name: str) -> PodInfo:
        """A copy that says it runs on `node_name` (the pod dict itself is shared and left alone)."""
        clone = PodInfo.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.node_name = node_name
        return clone

    def __repr__(self) -> str:
        return f"PodInfo({self.key}, node={self.node_name or '-'})"


def pod_key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"

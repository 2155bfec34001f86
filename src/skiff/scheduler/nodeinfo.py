"""A node as the scheduler reads it: what it offers, what its pods take, and what is on it.

Kubernetes' `framework.NodeInfo`, kept up to date incrementally by the cache:
adding or removing a pod adjusts the requested totals, the host ports in use
and the counts of pods with affinity terms, so a filter asks "does it fit?"
in a few integer comparisons instead of summing the node's pods again.

The hot numbers (allocatable and requested cpu, memory, ephemeral storage,
pod count) are flat attributes rather than nested objects: the filter and
score loops read them for hundreds of nodes per pod.

Every change gives the node a new `generation` (unique across all nodes) and
an empty `memo`, where a plugin may keep what it computed for the node and a
pod shape (its requests, say): the answer holds until the node changes.
Replicas of one Deployment all have the same requests, and between two of
them only the node that took the last one has changed — so the resource
plugins recompute one node per pod instead of hundreds (Kubernetes once had
an "equivalence cache" for the same reason).

`NodeColumns` keeps the same answers a second way, for the batches that are a
plain slice of the cache's node list (most of them): per plugin and pod shape,
one list aligned with the node list, where a changed node's position is
cleared. Reading 500 nodes' answers is then a list slice instead of 500 reads
of 500 memo dicts -- at 5,000 nodes those reads were a third of the
scheduler's CPU.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Hashable, Mapping
from typing import Any

from skiff.scheduler.podinfo import HostPort, PodInfo, Resource

Obj = dict[str, Any]
_GENERATIONS = itertools.count(1)
Taint = tuple[str, str, str]  # key, value, effect

NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")


def taints_of(node: Obj) -> tuple[Taint, ...]:
    out = []
    for t in (node.get("spec") or {}).get("taints") or []:
        if isinstance(t, Mapping) and t.get("key"):
            out.append((str(t["key"]), str(t.get("value") or ""), str(t.get("effect") or "")))
    return tuple(out)


def zone_of(labels: Mapping[str, str]) -> str:
    """`region:\\x00:zone` as Kubernetes' `utilnode.GetZoneKey` (empty when the node has neither label)."""
    region = next((labels[k] for k in REGION_LABELS if k in labels), "")
    zone = next((labels[k] for k in ZONE_LABELS if k in labels), "")
    return f"{region}:\x00:{zone}" if region or zone else ""


class NodeInfo:
    """One node and the pods the scheduler knows are on it (bound or assumed)."""

    __slots__ = (
        "alloc_ephemeral",
        "alloc_memory",
        "alloc_milli_cpu",
        "alloc_pods",
        "alloc_scalar",
        "columns",
        "generation",
        "hard_taints",
        "images",
        "labels",
        "memo",
        "name",
        "node",
        "nz_memory",
        "nz_milli_cpu",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "position",
        "prefer_taints",
        "req_ephemeral",
        "req_memory",
        "req_milli_cpu",
        "req_scalar",
        "taints",
        "unschedulable",
        "used_ports",
        "zone",
    )

    def __init__(self, node: Obj | None = None, *, name: str = "") -> None:
        self.name = name
        self.node: Obj | None = None
        self.labels: dict[str, str] = {}
        self.zone = ""
        self.taints: tuple[Taint, ...] = ()
        self.hard_taints: tuple[Taint, ...] = ()  # NoSchedule and NoExecute: what filtering looks at
        self.prefer_taints: tuple[Taint, ...] = ()
        self.unschedulable = False
        self.images: dict[str, int] = {}  # image name -> size in bytes
        self.alloc_milli_cpu = self.alloc_memory = self.alloc_ephemeral = self.alloc_pods = 0
        self.alloc_scalar: dict[str, int] = {}
        self.req_milli_cpu = self.req_memory = self.req_ephemeral = 0
        self.req_scalar: dict[str, int] = {}
        self.nz_milli_cpu = self.nz_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self.used_ports: dict[HostPort, int] = {}
        self.pods_with_affinity = 0
        self.pods_with_required_anti_affinity = 0
        self.generation = next(_GENERATIONS)  # unique across nodes
        self.memo: dict[Hashable, Any] = {}  # plugin results for this generation (see `remember`)
        self.columns: NodeColumns | None = None  # the node list's columns this node is in, at `position`
        self.position = -1
        if node is not None:
            self.set_node(node)

    def set_node(self, node: Obj) -> None:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.node = node
        self.name = str(meta.get("name") or self.name)
        self.labels = meta.get("labels") or {}
        self.zone = zone_of(self.labels)
        self.taints = taints_of(node)
        self.hard_taints = tuple(t for t in self.taints if t[2] in (NO_SCHEDULE, NO_EXECUTE))
        self.prefer_taints = tuple(t for t in self.taints if t[2] == PREFER_NO_SCHEDULE)
        self.unschedulable = bool(spec.get("unschedulable"))
        alloc = Resource.from_list(status.get("allocatable") or status.get("capacity") or {})
        self.alloc_milli_cpu = alloc.milli_cpu
        self.alloc_memory = alloc.memory
        self.alloc_ephemeral = alloc.ephemeral_storage
        self.alloc_pods = alloc.allowed_pods
        self.alloc_scalar = alloc.scalar
        images: dict[str, int] = {}
        for image in status.get("images") or []:
            size = image.get("sizeBytes") or 0
            for image_name in image.get("names") or []:
                images[str(image_name)] = int(size) if isinstance(size, int) else 0
        self.images = images
        self.generation = next(_GENERATIONS)
        self.memo = {}
        if self.columns is not None:
            self.columns.changed.append(self.position)

    # --- pods ---------------------------------------------------------------------------------
    def add_pod(self, pod: PodInfo) -> None:
        if pod.key in self.pods:
            self.remove_pod(self.pods[pod.key])
        self.pods[pod.key] = pod
        req = pod.requests
        self.req_milli_cpu += req.milli_cpu
        self.req_memory += req.memory
        self.req_ephemeral += req.ephemeral_storage
        for name, amount in req.scalar.items():
            self.req_scalar[name] = self.req_scalar.get(name, 0) + amount
        self.nz_milli_cpu += pod.non_zero.milli_cpu
        self.nz_memory += pod.non_zero.memory
        for port in pod.host_ports:
            self.used_ports[port] = self.used_ports.get(port, 0) + 1
        if pod.has_affinity:
            self.pods_with_affinity += 1
        if pod.required_anti_affinity:
            self.pods_with_required_anti_affinity += 1
        self.generation = next(_GENERATIONS)
        self.memo = {}
        if self.columns is not None:
            self.columns.changed.append(self.position)

    def remove_pod(self, pod: PodInfo) -> bool:
        """Take the pod's share away (looked up by key: the stored version is the one that counted)."""
        stored = self.pods.pop(pod.key, None)
        if stored is None:
            return False
        req = stored.requests
        self.req_milli_cpu -= req.milli_cpu
        self.req_memory -= req.memory
        self.req_ephemeral -= req.ephemeral_storage
        for name, amount in req.scalar.items():
            left = self.req_scalar.get(name, 0) - amount
            if left:
                self.req_scalar[name] = left
            else:
                self.req_scalar.pop(name, None)
        self.nz_milli_cpu -= stored.non_zero.milli_cpu
        self.nz_memory -= stored.non_zero.memory
        for port in stored.host_ports:
            left = self.used_ports.get(port, 0) - 1
            if left > 0:
                self.used_ports[port] = left
            else:
                self.used_ports.pop(port, None)
        if stored.has_affinity:
            self.pods_with_affinity -= 1
        if stored.required_anti_affinity:
            self.pods_with_required_anti_affinity -= 1
        self.generation = next(_GENERATIONS)
        self.memo = {}
        if self.columns is not None:
            self.columns.changed.append(self.position)
        return True

    # --- views --------------------------------------------------------------------------------
    @property
    def allocatable(self) -> Resource:
        return Resource(
            self.alloc_milli_cpu, self.alloc_memory, self.alloc_ephemeral, self.alloc_pods, dict(self.alloc_scalar)
        )

    @property
    def requested(self) -> Resource:
        return Resource(self.req_milli_cpu, self.req_memory, self.req_ephemeral, len(self.pods), dict(self.req_scalar))

    def port_conflicts(self, ports: tuple[HostPort, ...]) -> bool:
        used = self.used_ports
        if not used:
            return False
        for want in ports:
            if want in used:
                return True
            for have in used:
                if want.conflicts(have):
                    return True
        return False

    def clone(self) -> NodeInfo:
        """An independent copy (pods shared, totals copied): for what-if questions such as preemption."""
        other = NodeInfo.__new__(NodeInfo)
        for slot in NodeInfo.__slots__:
            setattr(other, slot, getattr(self, slot))
        other.memo = {}
        other.columns, other.position = None, -1  # a what-if copy is in no list
        other.pods = dict(self.pods)
        other.used_ports = dict(self.used_ports)
        other.req_scalar = dict(self.req_scalar)
        return other

    def __repr__(self) -> str:
        return (
            f"NodeInfo({self.name}, cpu {self.req_milli_cpu}/{self.alloc_milli_cpu}m, "
            f"memory {self.req_memory}/{self.alloc_memory}, pods {len(self.pods)}/{self.alloc_pods})"
        )


MEMO_LIMIT = 64  # entries a node remembers before it forgets them all (bounds memory with many pod shapes)


def memo_key(plugin: object, *shape: object) -> str:
    """A key for `NodeInfo.memo`: the plugin instance (by identity) and the pod shape it depends on.

    A string, because a string caches its hash: one key is looked up on hundreds of nodes per pod.
    """
    return ":".join([str(id(plugin)), *map(str, shape)])


def remember(node: NodeInfo, key: Hashable, value: Any) -> None:
    memo = node.memo
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value


class _Column:
    __slots__ = ("applied", "missing", "peak", "values")

    def __init__(self, size: int) -> None:
        self.values: list[Any] = [None] * size
        self.missing = set(range(size))  # positions holding None
        self.peak = size  # the most `missing` held since it was last copied (a set's table never shrinks)
        self.applied = 0  # how much of the change log is cleared in `values`


class NodeColumns:
    """Plugin answers per pod shape, one list aligned with the cache's node list, valid until a node changes.

    The cache calls `reset` with each new node list (nodes added or removed: every column goes); a node
    of the list records its position in `changed` whenever it changes, and a column clears those
    positions the next time it is read. Values are the ones `remember` would keep in the node's memo.
    """

    def __init__(self) -> None:
        self.nodes: list[NodeInfo] = []
        self.changed: list[int] = []  # positions of nodes changed, in order
        self._columns: dict[str, _Column] = {}

    def reset(self, nodes: list[NodeInfo]) -> None:
        for old in self.nodes:
            old.columns, old.position = None, -1
        self.nodes, self.changed, self._columns = nodes, [], {}
        for i, node in enumerate(nodes):
            node.columns, node.position = self, i

    def column(self, key: str) -> _Column:
        """The column for `key`, with the positions changed since its last read cleared."""
        changed = self.changed
        if len(changed) > 4 * len(self.nodes) + 1024:  # a long log: every column starts afresh
            self._columns.clear()
            changed.clear()
        col = self._columns.get(key)
        if col is None:
            if len(self._columns) >= MEMO_LIMIT:
                self._columns.clear()
            col = self._columns[key] = _Column(len(self.nodes))
        elif col.applied < len(changed):
            values, missing = col.values, col.missing
            for position in changed[col.applied :]:
                values[position] = None
                missing.add(position)
            col.peak = max(col.peak, len(missing))
        col.applied = len(changed)
        return col

    def window(self, key: str, start: int, count: int) -> tuple[list[Any], list[int]]:
        """The values of `count` positions from `start`, wrapping around the end (as the batches do), and
        the offsets in that window where nothing is known."""
        col = self.column(key)
        values = col.values
        size = len(values)
        end = start + count
        window = values[start:end] if end <= size else values[start:] + values[: end - size]
        missing = col.missing
        if len(missing) > count:  # a young column: scanning the window is cheaper
            return window, unknown(window)
        if col.peak > 4 * len(missing) + 64:  # iterating a set walks its whole table: copy it to its size
            missing = col.missing = set(missing)
            col.peak = len(missing)
        return window, sorted(offset for p in missing if (offset := (p - start) % size) < count)

    def put(self, key: str, node: NodeInfo, value: Any) -> None:
        """Remember `value` for `node` (also in its memo); a node not in this list is only memoized."""
        remember(node, key, value)
        col = self._columns.get(key)
        if col is not None and node.columns is self and 0 <= node.position < len(col.values):
            col.values[node.position] = value
            col.missing.discard(node.position)


Span = tuple[NodeColumns, int, int]  # (columns, start, count): a batch that is a plain slice of the node list


def recall(span: Span | None, key: str, nodes: list[NodeInfo]) -> tuple[list[Any], list[int]]:
    """What was remembered for `key` on each of `nodes` (None where nothing), and the offsets of the
    unknown ones: by slice when the nodes are `span`."""
    if span is not None:
        return span[0].window(key, span[1], span[2])
    known = [node.memo.get(key) for node in nodes]
    return known, unknown(known)


def keep(span: Span | None, key: str, node: NodeInfo, value: Any) -> None:
    """Remember `value` for `node` (in its memo, and in the columns when the batch is `span`)."""
    if span is not None:
        span[0].put(key, node, value)
    else:
        remember(node, key, value)


def unknown(values: list[Any]) -> list[int]:
    """The positions of None in `values` (the nodes to compute), found without a Python-level loop."""
    return list(itertools.compress(range(len(values)), map(operator.is_, values, itertools.repeat(None))))

"""The scheduler's picture of the cluster: every node and the pods that take room on it.

Fed by the pod and node informers (bound pods) and by the scheduler itself
(assumed pods). Assuming is what lets the scheduler go on to the next pod
while a binding is still on its way to the API server: the pod counts on its
node at once, so two pods never squeeze into the last free slot. When the
informer then reports the pod bound, the assumed entry is confirmed; when the
binding fails, the pod is forgotten and its room given back.

Kubernetes snapshots this cache at the start of each cycle, because its
informers write from other goroutines. Here everything runs on one event loop
and the cycle is synchronous from PreFilter to Reserve, so the cache does not
change under a cycle and is its own snapshot: nothing is copied per pod.

Nodes are kept in a list interleaved by zone (Kubernetes' node tree), so that
looking at only part of a large cluster still looks across zones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from skiff.scheduler.framework import ActionType
from skiff.scheduler.nodeinfo import NodeColumns, NodeInfo, zone_of
from skiff.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class SchedulerCache:
    def __init__(self) -> None:
        self._infos: dict[str, NodeInfo] = {}  # real nodes, and placeholders for pods on nodes not seen yet
        self._list: list[NodeInfo] = []
        self.columns = NodeColumns()  # plugin answers aligned with `_list` (see skiff.scheduler.nodeinfo)
        self._dirty = False
        self._pods: dict[str, PodInfo] = {}  # key -> the version that counts (bound or assumed)
        self._assumed: set[str] = set()
        self.nodes_with_affinity: set[str] = set()  # nodes with a pod that has any pod (anti-)affinity term
        self.nodes_with_required_anti_affinity: set[str] = set()
        self.image_nodes: dict[str, int] = {}  # image -> how many nodes have it (ImageLocality's spread)
        self.nodes_with_prefer_taints = 0
        self.nodes_with_hard_taints = 0  # NoSchedule/NoExecute: zero lets TaintToleration pass everything at once
        self.nodes_unschedulable = 0
        self._nominated: dict[str, dict[str, PodInfo]] = {}  # node -> pods waiting for room there
        self._nominated_node: dict[str, str] = {}  # pod key -> node

    # --- reading ------------------------------------------------------------------------------
    def node_list(self) -> list[NodeInfo]:
        """Every node, zone-interleaved; the list is shared, do not change it."""
        if self._dirty:
            self._rebuild_list()
        return self._list

    def get(self, name: str) -> NodeInfo | None:
        """The node of that name (None if the scheduler has not seen the Node object)."""
        info = self._infos.get(name)
        return info if info is not None and info.node is not None else None

    @property
    def num_nodes(self) -> int:
        return len(self.node_list())

    def pod(self, key: str) -> PodInfo | None:
        """The counted version of a pod (bound or assumed), by `namespace/name`."""
        return self._pods.get(key)

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    @property
    def num_pods(self) -> int:
        return len(self._pods)

    @property
    def num_assumed(self) -> int:
        return len(self._assumed)

    def _rebuild_list(self) -> None:
        by_zone: dict[str, list[NodeInfo]] = {}
        for info in self._infos.values():
            if info.node is not None:
                by_zone.setdefault(info.zone, []).append(info)
        zones = [by_zone[z] for z in sorted(by_zone)]
        out: list[NodeInfo] = []
        for i in range(max((len(z) for z in zones), default=0)):
            out.extend(z[i] for z in zones if i < len(z))
        self._list = out
        self.columns.reset(out)
        self._dirty = False

    # --- nodes --------------------------------------------------------------------------------
    def add_node(self, node: Obj) -> NodeInfo:
        name = str((node.get("metadata") or {}).get("name") or "")
        info = self._infos.get(name)
        if info is None:
            info = self._infos[name] = NodeInfo(name=name)
        else:
            self._unindex_node(info)
        if info.node is None or info.zone != zone_of((node.get("metadata") or {}).get("labels") or {}):
            self._dirty = True
        info.set_node(node)
        self._index_node(info)
        return info

    def update_node(self, node: Obj) -> ActionType:
        """Apply a changed Node; what changed, as event flags (empty when nothing the scheduler reads)."""
        name = str((node.get("metadata") or {}).get("name") or "")
        old = self._infos.get(name)
        if old is None or old.node is None:
            self.add_node(node)
            return ActionType.ADD
        before = (
            (old.alloc_milli_cpu, old.alloc_memory, old.alloc_ephemeral, old.alloc_pods, dict(old.alloc_scalar)),
            dict(old.labels),
            (old.taints, old.unschedulable),
            _conditions(old.node),
            (old.node.get("metadata") or {}).get("annotations") or {},
            dict(old.images),
        )
        self.add_node(node)
        info = self._infos[name]
        changed = ActionType(0)
        if before[0] != (
            info.alloc_milli_cpu,
            info.alloc_memory,
            info.alloc_ephemeral,
            info.alloc_pods,
            info.alloc_scalar,
        ):
            changed |= ActionType.UPDATE_NODE_ALLOCATABLE
        if before[1] != info.labels:
            changed |= ActionType.UPDATE_NODE_LABEL
        if before[2] != (info.taints, info.unschedulable):
            changed |= ActionType.UPDATE_NODE_TAINT
        if before[3] != _conditions(node):
            changed |= ActionType.UPDATE_NODE_CONDITION
        if before[4] != ((node.get("metadata") or {}).get("annotations") or {}) or before[5] != info.images:
            changed |= ActionType.UPDATE_NODE_ANNOTATION
        return changed

    def remove_node(self, name: str) -> None:
        info = self._infos.get(name)
        if info is None:
            return
        self._unindex_node(info)
        info.node = None
        self._dirty = True
        if not info.pods:
            del self._infos[name]
            self.nodes_with_affinity.discard(name)
            self.nodes_with_required_anti_affinity.discard(name)

    def _index_node(self, info: NodeInfo) -> None:
        for image in info.images:
            self.image_nodes[image] = self.image_nodes.get(image, 0) + 1
        if info.prefer_taints:
            self.nodes_with_prefer_taints += 1
        if info.hard_taints:
            self.nodes_with_hard_taints += 1
        if info.unschedulable:
            self.nodes_unschedulable += 1

    def _unindex_node(self, info: NodeInfo) -> None:
        if info.node is None:
            return
        for image in info.images:
            left = self.image_nodes.get(image, 0) - 1
            if left > 0:
                self.image_nodes[image] = left
            else:
                self.image_nodes.pop(image, None)
        if info.prefer_taints:
            self.nodes_with_prefer_taints -= 1
        if info.hard_taints:
            self.nodes_with_hard_taints -= 1
        if info.unschedulable:
            self.nodes_unschedulable -= 1

    # --- pods ---------------------------------------------------------------------------------
    def add_pod(self, pod: PodInfo) -> None:
        """A bound pod from the informer (also confirms an assumed pod); updates replace the old version."""
        if not pod.node_name:
            return
        old = self._pods.get(pod.key)
        if old is not None:
            self._remove_from_node(old)
        self._assumed.discard(pod.key)
        self._pods[pod.key] = pod
        self._add_to_node(pod)

    update_pod = add_pod

    def remove_pod(self, key: str) -> PodInfo | None:
        """The pod is gone (deleted, finished, or no longer ours to count)."""
        old = self._pods.pop(key, None)
        self._assumed.discard(key)
        if old is not None:
            self._remove_from_node(old)
        return old

    def assume_pod(self, pod: PodInfo, node_name: str) -> PodInfo:
        """Count the pod on `node_name` before its binding is confirmed; the assumed version."""
        assumed = pod.assumed_on(node_name)
        old = self._pods.get(pod.key)
        if old is not None:
            self._remove_from_node(old)
        self._pods[pod.key] = assumed
        self._assumed.add(pod.key)
        self._add_to_node(assumed)
        return assumed

    def forget_pod(self, key: str) -> None:
        """A binding failed: give the room back (only if the pod is still merely assumed)."""
        if key in self._assumed:
            self.remove_pod(key)

    def _add_to_node(self, pod: PodInfo) -> None:
        info = self._infos.get(pod.node_name)
        if info is None:
            info = self._infos[pod.node_name] = NodeInfo(name=pod.node_name)
        info.add_pod(pod)
        self._index_affinity(info)

    def _remove_from_node(self, pod: PodInfo) -> None:
        info = self._infos.get(pod.node_name)
        if info is None:
            return
        info.remove_pod(pod)
        self._index_affinity(info)
        if info.node is None and not info.pods:
            del self._infos[pod.node_name]
            self.nodes_with_affinity.discard(pod.node_name)
            self.nodes_with_required_anti_affinity.discard(pod.node_name)

    def _index_affinity(self, info: NodeInfo) -> None:
        if info.pods_with_affinity:
            self.nodes_with_affinity.add(info.name)
        else:
            self.nodes_with_affinity.discard(info.name)
        if info.pods_with_required_anti_affinity:
            self.nodes_with_required_anti_affinity.add(info.name)
        else:
            self.nodes_with_required_anti_affinity.discard(info.name)

    def infos_with_affinity(self) -> Iterable[NodeInfo]:
        """Known nodes that hold a pod with pod (anti-)affinity terms."""
        for name in self.nodes_with_affinity:
            info = self.get(name)
            if info is not None:
                yield info

    # --- nominated pods (preemption) ---------------------------------------------------------
    def nominate(self, pod: PodInfo, node_name: str | None) -> None:
        """`pod` waits for room that preemption is freeing on `node_name` (None: no longer)."""
        old = self._nominated_node.pop(pod.key, None)
        if old is not None:
            pods = self._nominated.get(old, {})
            pods.pop(pod.key, None)
            if not pods:
                self._nominated.pop(old, None)
        if node_name:
            self._nominated_node[pod.key] = node_name
            self._nominated.setdefault(node_name, {})[pod.key] = pod

    def nominated_on(self, node_name: str) -> list[PodInfo]:
        return list(self._nominated.get(node_name, {}).values())

    @property
    def has_nominations(self) -> bool:
        return bool(self._nominated)

    def infos_with_required_anti_affinity(self) -> Iterable[NodeInfo]:
        for name in self.nodes_with_required_anti_affinity:
            info = self.get(name)
            if info is not None:
                yield info


def _conditions(node: Obj | None) -> list[tuple[str, str]]:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return sorted((str(c.get("type")), str(c.get("status"))) for c in conditions if isinstance(c, dict))

"""VolumeBinding: pods go where their volumes are, and claims that wait for a consumer learn their node.

As Kubernetes' `pkg/scheduler/framework/plugins/volumebinding`, for the parts a
node-local storage setup needs:

- PreFilter reads the pod's persistentVolumeClaim volumes: a missing claim, or
  one being deleted, makes the pod unschedulable; a bound claim's volume is
  remembered; an unbound claim of a class with `volumeBindingMode:
  WaitForFirstConsumer` is delayed to this scheduling; any other unbound claim
  ("pod has unbound immediate PersistentVolumeClaims") waits for the binder.
- Filter keeps the nodes every bound volume's node affinity admits ("node(s) had
  volume node affinity conflict") and, for delayed claims, the nodes where an
  available volume fits or the class has a provisioner that can make one.
- PreBind writes `volume.kubernetes.io/selected-node` on each delayed claim, for
  the binder and the provisioner; the node agent waits (FailedMount) until the
  claim is bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.api import pvbinding as pb
from skiff.scheduler.framework import (
    PV,
    PVC,
    SKIP,
    STORAGE_CLASS,
    ActionType,
    ClusterEvent,
    CycleState,
    FilterPlugin,
    Handle,
    Plugin,
    PreBindPlugin,
    PreFilterPlugin,
    Status,
    unresolvable,
    unschedulable,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo

Obj = dict[str, Any]
STATE_KEY = "VolumeBinding"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
AFFINITY_CONFLICT = "node(s) had volume node affinity conflict"
NO_VOLUME = "node(s) didn't find available persistent volumes to bind"


@dataclass
class _State:
    bound: list[Obj] = field(default_factory=list)  # volumes of bound claims
    delayed: list[Obj] = field(default_factory=list)  # unbound WaitForFirstConsumer claims

    def clone(self) -> _State:
        return self


def claim_names(pod: Obj) -> list[str]:
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return [str(v["persistentVolumeClaim"].get("claimName", "")) for v in volumes if v.get("persistentVolumeClaim")]


class VolumeBinding(PreFilterPlugin, FilterPlugin, PreBindPlugin):
    name = "VolumeBinding"

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> Plugin:
        return cls(handle)  # bindTimeoutSeconds and shape are accepted and not used

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (
            ClusterEvent(PVC, ActionType.ADD | ActionType.UPDATE),
            ClusterEvent(PV, ActionType.ADD | ActionType.UPDATE),
            ClusterEvent(STORAGE_CLASS, ActionType.ADD | ActionType.UPDATE),
            ClusterEvent("Node", ActionType.ADD | ActionType.UPDATE_NODE_LABEL),
        )

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        names = claim_names(pod.pod)
        if not names:
            return SKIP
        lister = self.handle.volume_lister()
        found = _State()
        for name in names:
            pvc = lister.claim(pod.namespace, name)
            if pvc is None:
                return unresolvable(f'persistentvolumeclaim "{name}" not found')
            if pvc["metadata"].get("deletionTimestamp"):
                return unresolvable(f'persistentvolumeclaim "{name}" is being deleted')
            volume_name = (pvc.get("spec") or {}).get("volumeName")
            if volume_name:
                pv = lister.volume(volume_name)
                if pv is None:
                    return unresolvable(f'pvc(s) bound to non-existent pv(s): persistentvolume "{volume_name}"')
                found.bound.append(pv)
                continue
            sc = lister.storage_class(pb.class_of(pvc)) if pb.class_of(pvc) else None
            if sc is None or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                return unschedulable(UNBOUND_IMMEDIATE)
            found.delayed.append(pvc)
        state.data[STATE_KEY] = found
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        found: _State = state.data[STATE_KEY]
        labels = {**pb.node_labels_for(node.name), **node.labels}
        for pv in found.bound:
            if not pb.node_affinity_allows(pv, labels):
                return unresolvable(AFFINITY_CONFLICT)
        if found.delayed:
            lister = self.handle.volume_lister()
            for pvc in found.delayed:
                if pb.find_volume(lister.volumes(), pvc, node_labels=labels) is not None:
                    continue
                sc = lister.storage_class(pb.class_of(pvc)) or {}
                if not sc.get("provisioner") or sc.get("provisioner") == NO_PROVISIONER:
                    return unresolvable(NO_VOLUME)
        return None

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        found: _State | None = state.data.get(STATE_KEY)
        for pvc in found.delayed if found is not None else []:
            meta = pvc["metadata"]
            if (meta.get("annotations") or {}).get(pb.SELECTED_NODE) != node_name:
                await self.handle.annotate_claim(meta["namespace"], meta["name"], {pb.SELECTED_NODE: node_name})
        return None

"""The scheduler's view of storage: claims, volumes and classes from informers, for VolumeBinding.

Their changes are cluster events (`PersistentVolumeClaim`, `PersistentVolume`,
`StorageClass`) that move pods the VolumeBinding plugin rejected back to the
active queue: a claim that appears or is bound, a volume that is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skiff.client import InformerFactory, resources
from skiff.scheduler.framework import PV, PVC, STORAGE_CLASS, ActionType, ClusterEvent

Obj = dict[str, Any]


class InformerVolumeLister:
    def __init__(self, informers: InformerFactory, on_event: Callable[[ClusterEvent], object]) -> None:
        self.claims = informers.informer(resources.PVCS)
        self.pvs = informers.informer(resources.PVS)
        self.classes = informers.informer(resources.STORAGECLASSES)
        self.on_event = on_event
        for informer, kind in ((self.claims, PVC), (self.pvs, PV), (self.classes, STORAGE_CLASS)):
            added = ClusterEvent(kind, ActionType.ADD, f"{kind}Add")
            updated = ClusterEvent(kind, ActionType.UPDATE, f"{kind}Update")
            informer.add_handlers(on_add=self._on_add(added), on_update=self._on_update(updated))

    def _on_add(self, event: ClusterEvent) -> Callable[[Obj], None]:
        def handle(_obj: Obj) -> None:
            self.on_event(event)

        return handle

    def _on_update(self, event: ClusterEvent) -> Callable[[Obj, Obj], None]:
        def handle(_old: Obj, _new: Obj) -> None:
            self.on_event(event)

        return handle

    def claim(self, namespace: str, name: str) -> Obj | None:
        return self.claims.get(f"{namespace}/{name}")

    def volume(self, name: str) -> Obj | None:
        return self.pvs.get(name)

    def volumes(self) -> list[Obj]:
        return self.pvs.list()

    def storage_class(self, name: str) -> Obj | None:
        return self.classes.get(name)

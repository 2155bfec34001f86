"""DefaultBinder: bind by POSTing a Binding to `pods/<name>/binding`, as Kubernetes does.

The API server sets `spec.nodeName` and the `PodScheduled=True` condition in
one write and refuses a pod that is already bound (409), so two schedulers
can never both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skiff.scheduler.framework import BindPlugin, CycleState, Handle, Status
from skiff.scheduler.podinfo import PodInfo

NAME = "DefaultBinder"


class DefaultBinder(BindPlugin):
    name = NAME

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> DefaultBinder:
        return cls(handle)

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        await self.handle.bind_pod(pod, node_name)  # API errors propagate: the caller reports them
        return None

"""ImageLocality: prefer nodes that already have the pod's images (less to pull).

Scored by image size, scaled by how many nodes have the image, so that one
node with a popular image does not attract every pod (Kubernetes' spread
factor). Skipped outright when no node reports any of the pod's images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skiff.scheduler.framework import (
    MAX_NODE_SCORE,
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    Handle,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from skiff.scheduler.nodeinfo import NodeInfo
from skiff.scheduler.podinfo import PodInfo

NAME = "ImageLocality"
MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB
_STATE = "ImageLocality/prescore"


def normalized_image_name(name: str) -> str:
    """`nginx` -> `nginx:latest`; tagged or digested names unchanged."""
    last = name.rsplit("/", 1)[-1]
    if ":" in last or "@" in name:
        return name
    return name + ":latest"


class ImageLocality(PreScorePlugin, ScorePlugin):
    name = NAME

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    @classmethod
    def new(cls, args: Mapping[str, Any], handle: Handle) -> ImageLocality:
        return cls(handle)

    def events_to_register(self) -> Iterable[ClusterEvent]:
        return (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ANNOTATION),)

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        everywhere = self.handle.cache.image_nodes
        names = [normalized_image_name(i) for i in pod.images]
        if not any(n in everywhere for n in names):
            return SKIP
        containers = len(pod.spec.get("containers") or []) + len(pod.spec.get("initContainers") or [])
        state.data[_STATE] = (names, containers, max(self.handle.cache.num_nodes, 1))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        prepared = state.data.get(_STATE)
        if prepared is None:
            return 0
        names: list[str]
        containers: int
        total_nodes: int
        names, containers, total_nodes = prepared
        everywhere = self.handle.cache.image_nodes
        total = 0
        for image in names:
            size = node.images.get(image)
            if size is not None:
                total += int(size * (everywhere.get(image, 0) / total_nodes))
        max_threshold = MAX_CONTAINER_THRESHOLD * max(containers, 1)
        total = min(max(total, MIN_THRESHOLD), max_threshold)
        return MAX_NODE_SCORE * (total - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)

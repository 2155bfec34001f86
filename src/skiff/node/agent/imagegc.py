"""Image garbage collection: the kubelet's image GC for the node's image store.

Why this exists: pulled images fill the node's disk. Like the kubelet's `realImageGCManager`
(pkg/kubelet/images/image_gc_manager.go), every `period` the agent looks at the filesystem
that holds the image store; when its usage is at or above `high_threshold_percent`
(imageGCHighThresholdPercent, 85) it removes images no container on the node uses, least
recently used first (ties: first detected first), until it has freed enough to be back at
`low_threshold_percent` (imageGCLowThresholdPercent, 80). An image first detected less than
`min_age` ago (imageMinimumGCAge, 2 m) is kept. When the images it may remove do not free
enough, it records a Warning `FreeDiskSpaceFailed` on the Node with the kubelet's message; a
second failure in a row also records `ImageGCFailed`, as the kubelet's GC loop does.

`plan` is the pure selection (unit-tested); `ImageGC` reads the disk, asks the runtime which
images are in use, removes what `plan` chose and reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from skiff.images.store import ImageStore
from skiff.node.agent.starting import image_record
from skiff.node.agent.volumes import pod_dir
from skiff.node.runtime.runtime import Runtime

log = logging.getLogger(__name__)

PERIOD = 300.0  # the kubelet's ImageGCPeriod
FREE_DISK_SPACE_FAILED = "FreeDiskSpaceFailed"
IMAGE_GC_FAILED = "ImageGCFailed"
INVALID_DISK_CAPACITY = "InvalidDiskCapacity"


@dataclass(frozen=True, kw_only=True)
class ImageGCPolicy:
    """The kubelet's ImageGCPolicy: thresholds in percent of the image filesystem, min age in seconds."""

    high_threshold_percent: int = 85
    low_threshold_percent: int = 80
    min_age: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.high_threshold_percent <= 100:
            raise ValueError(f"invalid HighThresholdPercent {self.high_threshold_percent}, must be in range [0-100]")
        if not 0 <= self.low_threshold_percent <= 100:
            raise ValueError(f"invalid LowThresholdPercent {self.low_threshold_percent}, must be in range [0-100]")
        if self.low_threshold_percent > self.high_threshold_percent:
            raise ValueError(f"LowThresholdPercent {self.low_threshold_percent} can not be higher than "
                             f"HighThresholdPercent {self.high_threshold_percent}")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """What GC knows of one stored image."""

    digest: str
    size: int
    last_used: float
    first_detected: float


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one GC pass does: `amount_to_free` bytes wanted (0: under the high threshold), `remove` in order."""

    usage_percent: int
    amount_to_free: int
    remove: tuple[str, ...]
    freed: int


class GCFailed(Exception):
    """A GC pass could not do its job; the message is the kubelet's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def plan(
    images: Iterable[Candidate], *, in_use: set[str], capacity: int, available: int, policy: ImageGCPolicy, now: float
) -> Plan:
    """Which images to remove, as the kubelet's GarbageCollect + freeSpace choose them."""
    if capacity <= 0:
        raise GCFailed(INVALID_DISK_CAPACITY, "invalid capacity 0 on image filesystem")
    available = min(available, capacity)
    usage = 100 - available * 100 // capacity
    if usage < policy.high_threshold_percent:
        return Plan(usage_percent=usage, amount_to_free=0, remove=(), freed=0)
    amount = capacity * (100 - policy.low_threshold_percent) // 100 - available
    chosen: list[str] = []
    freed = 0
    for image in sorted(images, key=lambda i: (i.last_used, i.first_detected)):
        if freed >= amount:
            break
        if image.digest in in_use or now - image.first_detected < policy.min_age:
            continue
        chosen.append(image.digest)
        freed += image.size
    return Plan(usage_percent=usage, amount_to_free=amount, remove=tuple(chosen), freed=freed)


def disk_usage(path: Path) -> tuple[int, int]:
    """(capacity, available) bytes of the filesystem holding `path`, as the kubelet's ImageFsStats."""
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


async def images_in_use(runtime: Runtime, state_dir: Path) -> set[str]:
    """Digests of the images of every container the runtime has, running or exited (the kubelet's in-use set)."""
    def read(path: Path) -> str:
        try:
            return str(json.loads(path.read_text()).get("imageID") or "")
        except (OSError, ValueError):
            return ""

    used: set[str] = set()
    for info in await runtime.list():
        image_id = await asyncio.to_thread(read, image_record(pod_dir(state_dir, info.pod_uid), info.id))
        if image_id:
            used.add(image_id.rsplit("@", 1)[-1])
    return used


Event = Callable[[str, str, str], Awaitable[None]]  # (type, reason, message)


class ImageGC:
    """Runs `plan` against a real store; `in_use()` gives the digests that the node's containers use."""

    def __init__(
        self,
        store: ImageStore,
        *,
        in_use: Callable[[], Awaitable[set[str]]],
        event: Event,
        policy: ImageGCPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.in_use = in_use
        self.event = event
        self.policy = policy or ImageGCPolicy()
        self.clock = clock
        self._first_detected: dict[str, float] = {}
        self._failed_before = False

    async def detect(self) -> list[Candidate]:
        """The stored images, each with when this GC first saw it (images in use count as just used)."""
        now = self.clock()
        stored = await self.store.list()
        self._first_detected = {i.digest: self._first_detected.get(i.digest, now) for i in stored}
        seen = self._first_detected
        return [Candidate(digest=i.digest, size=i.size, last_used=i.last_used, first_detected=seen[i.digest])
                for i in stored]  # fmt: skip

    async def collect(self) -> Plan:
        """One pass: remove what `plan` chooses; raise GCFailed (after its event) if it freed too little."""
        candidates = await self.detect()
        in_use = await self.in_use()
        capacity, available = await asyncio.to_thread(disk_usage, self.store.root)
        try:
            chosen = plan(candidates, in_use=in_use, capacity=capacity, available=available, policy=self.policy,
                          now=self.clock())  # fmt: skip
        except GCFailed as e:
            await self.event("Warning", e.reason, str(e))
            raise
        if chosen.amount_to_free:
            log.info("disk usage on image filesystem is %d%%, over the high threshold (%d%%): freeing %d bytes "
                     "down to the low threshold (%d%%)", chosen.usage_percent, self.policy.high_threshold_percent,
                     chosen.amount_to_free, self.policy.low_threshold_percent)  # fmt: skip
        freed = 0
        for digest in chosen.remove:
            try:
                await self.store.remove(digest)
            except KeyError:  # removed meanwhile
                continue
            freed += next(c.size for c in candidates if c.digest == digest)
            self._first_detected.pop(digest, None)
            log.info("image GC removed %s", digest)
        if freed < chosen.amount_to_free:
            message = (f"Failed to garbage collect required amount of images. Attempted to free "
                       f"{chosen.amount_to_free} bytes, but only found {freed} bytes eligible to free.")  # fmt: skip
            await self.event("Warning", FREE_DISK_SPACE_FAILED, message)
            raise GCFailed(FREE_DISK_SPACE_FAILED, message)
        return chosen

    async def run(self, stop: asyncio.Event, period: float = PERIOD) -> None:
        """Every `period` until `stop`; a failure twice in a row is an ImageGCFailed event, as the kubelet's."""
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=period)
                return
            except TimeoutError:
                pass
            try:
                await self.collect()
                self._failed_before = False
            except GCFailed as e:
                if self._failed_before:
                    await self.event("Warning", IMAGE_GC_FAILED, str(e))
                self._failed_before = True
            except Exception:  # a broken pass is logged; the loop goes on
                log.exception("image garbage collection failed")
                self._failed_before = True

"""Periodic compaction of storage history, as the Kubernetes API server does for etcd.

Every interval the store is compacted to the revision that was current one
interval earlier, so at least one interval of history is always kept for
watches and paginated lists; anything older answers 410 Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from skiff.storage.interface import Backend, StorageError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300.0


class Compactor:
    def __init__(
        self, backend: Backend, interval: float = DEFAULT_INTERVAL, on_compact: Callable[[int], None] | None = None
    ) -> None:
        self.backend = backend
        self.interval = interval
        self.on_compact = on_compact  # told the new compacted revision (the watch cache's floor follows it)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="compactor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        previous = await self.backend.current_revision()
        while True:
            await asyncio.sleep(self.interval)
            try:
                if previous > await self.backend.compacted_revision():
                    await self.backend.compact(previous)
                    if self.on_compact is not None:
                        self.on_compact(previous)
                    log.info("compacted storage history up to revision %d", previous)
                previous = await self.backend.current_revision()
            except StorageError as exc:
                log.warning("compaction failed: %s", exc)

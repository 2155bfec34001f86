"""One relist of the runtime for all pods, waking the workers of the pods whose containers changed (PLEG).

The kubelet does not look at each running pod every second: its pod lifecycle event generator lists
the runtime once per period for the whole node, compares every container's state with the previous
listing and sends an event to the worker of each pod that had one (a container started, exited or
went away); a pod without events is synced again only at the periodic resync (`sync.RESYNC`).
`Relister.run` is that loop: one `Observer` listing per `PERIOD` seconds, and `on_change(uid)` (the
pod workers' `wake`) for each pod a container of which appeared, changed state or disappeared.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from skiff.node.agent.observing import Observer

log = logging.getLogger(__name__)

PERIOD = 1.0  # the kubelet's relist period


class Relister:
    def __init__(self, observer: Observer, on_change: Callable[[str], None], period: float = PERIOD) -> None:
        self.observer = observer
        self.on_change = on_change
        self.period = period
        self._last: dict[str, tuple[str, str]] = {}  # container id -> (pod uid, state)

    async def relist(self) -> set[str]:
        """List the runtime now; wake and return the pods whose containers changed since the last relist."""
        listing = await self.observer.listing(max_age=0.0)
        now: dict[str, tuple[str, str]] = {info.id: (info.pod_uid, str(info.state)) for info in listing}
        changed = {uid for cid, (uid, state) in now.items() if self._last.get(cid) != (uid, state)}
        changed |= {uid for cid, (uid, _) in self._last.items() if cid not in now}
        self._last = now
        for uid in sorted(changed):
            self.on_change(uid)
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.relist()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relisting the runtime failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.period)
            except TimeoutError:
                pass

"""When the proxy syncs: soon after a change, never more often than a floor, and fully now and then.

kube-proxy's `BoundedFrequencyRunner`. Informer events arrive in bursts
(a Deployment rolling out changes many EndpointSlices in a second); each one
calls `request()`, and the loop runs the sync once per burst: `batch_delay`
(~100 ms) after the first change, and at least `min_interval` (1 s) after the
previous sync began. Every `full_interval` seconds, and after a failed sync
(retried after `min_interval`), the sync is called with `full=True`: the
proxy then checks the kernel's state and rewrites everything if rules were
removed behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
SyncFn = Callable[[bool], Awaitable[object]]  # called with full=True/False


class SyncLoop:
    def __init__(
        self,
        sync: SyncFn,
        *,
        min_interval: float = 1.0,
        batch_delay: float = 0.1,
        full_interval: float = 30.0,
    ) -> None:
        self.sync = sync
        self.min_interval = min_interval
        self.batch_delay = batch_delay
        self.full_interval = full_interval
        self.runs = 0
        self._wanted = asyncio.Event()
        self._full = True

    def request(self, *_: object) -> None:
        """Ask for a sync (usable directly as an informer handler)."""
        self._wanted.set()

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep unless `stop` is set first; whether the loop should go on."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
        return not stop.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until `stop` is set; the first sync (a full one) happens at once."""
        loop = asyncio.get_running_loop()
        last = float("-inf")
        next_full = loop.time()
        self._wanted.set()
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._wanted.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    [waiter, stopper], timeout=max(0.0, next_full - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                return
            if self._wanted.is_set() and self.runs and not await self._sleep(self.batch_delay, stop):
                return
            if not await self._sleep(last + self.min_interval - loop.time(), stop):
                return
            self._wanted.clear()
            full = self._full or loop.time() >= next_full
            last = loop.time()
            self.runs += 1
            try:
                await self.sync(full)
            except Exception:
                log.exception("proxy sync failed; retrying with a full sync")
                self._full = True
                self._wanted.set()
                continue
            self._full = False
            if full:
                next_full = loop.time() + self.full_interval

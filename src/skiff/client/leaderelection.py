"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's `leaderelection`.

When several servers run side by side, only one may run the controllers (two
ReplicaSet controllers would both create the missing pods). Each candidate
runs a `LeaderElector` on the same Lease:

- acquire: the Lease is free (no holder), or its holder has not renewed it for
  `leaseDurationSeconds` by *our* clock (we time how long the record stays
  unchanged, so clock skew between machines does not matter), or it is ours;
  then write ourselves in with the Lease's resourceVersion, so of two
  candidates racing only one update succeeds (the other gets 409 Conflict);
- lead: `on_started_leading(stopped)` runs while we renew every
  `retry_period`; if renewing keeps failing for `renew_deadline`, we have lost
  (another may take over once `lease_duration` passes): `stopped` is set, the
  work is given a moment to end, then cancelled, and `on_stopped_leading()` runs;
- release: on a graceful stop the Lease is handed back at once (empty holder),
  so a standby takes over within one retry period instead of a lease duration.

Only components that may run several copies need this; it is off unless used.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

from skiff.api import errors
from skiff.client.errors import ServerUnreachable
from skiff.client.events import now_micro
from skiff.client.resources import LEASES
from skiff.client.rest import Client
from skiff.client.tasks import call_handler, cancel_and_wait, spawn

log = logging.getLogger(__name__)
Obj = dict[str, Any]
StartedLeading = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
StoppedLeading = Callable[[], object]
JITTER = 1.2


class LeaderElector:
    def __init__(
        self,
        client: Client,
        lease_namespace: str,
        lease_name: str,
        identity: str,
        lease_duration: float = 15,
        renew_deadline: float = 10,
        retry_period: float = 2,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period * JITTER:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period")
        if not identity:
            raise ValueError("a leader elector needs an identity")
        self.client = client
        self.namespace = lease_namespace
        self.lease_name = lease_name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed: Obj = {}  # the Lease spec last seen
        self._observed_at = 0.0  # loop time when it last changed
        self._leading = False

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def holder(self) -> str:
        """The holder identity last observed on the Lease ("" when free or not read yet)."""
        return str(self._observed.get("holderIdentity") or "")

    async def run(
        self,
        on_started_leading: StartedLeading,
        on_stopped_leading: StoppedLeading | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Wait to become leader, lead until the Lease is lost, `stop` is set or the work ends; then return.

        `on_started_leading(stopped)` gets an event set when leadership ends; it should return soon after.
        The Lease is released on the way out (stop, cancellation, or the work ending) if it is still ours.
        Call `run` again to stand for election again.
        """
        stop = stop or asyncio.Event()
        if not await self._acquire(stop):
            return
        stopped = asyncio.Event()
        work = spawn(on_started_leading(stopped), name=f"leader/{self.lease_name}/{self.identity}", logger=log)
        log.info("%s became the leader of lease %s/%s", self.identity, self.namespace, self.lease_name)
        try:
            await self._renew(stop, work)
        finally:
            self._leading = False
            stopped.set()
            _done, pending = await asyncio.wait([work], timeout=self.retry_period)
            await cancel_and_wait(pending)
            await self.release()  # only if still ours: a standby need not wait out the lease
            log.info("%s stopped leading lease %s/%s", self.identity, self.namespace, self.lease_name)
            if on_stopped_leading is not None:
                await call_handler(on_stopped_leading, what="on_stopped_leading", logger=log)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            if await self._attempt(self.renew_deadline):
                self._leading = True
                return True
            await _sleep_unless(stop, self.retry_period * random.uniform(1.0, JITTER))
        return False

    async def _renew(self, stop: asyncio.Event, work: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await _sleep_unless(stop, self.retry_period, work)
            if stop.is_set() or work.done():
                return
            deadline = loop.time() + self.renew_deadline
            while not await self._attempt(deadline - loop.time()):
                if loop.time() + self.retry_period >= deadline or stop.is_set():
                    log.warning("%s failed to renew lease %s/%s", self.identity, self.namespace, self.lease_name)
                    return
                await _sleep_unless(stop, self.retry_period)

    async def _attempt(self, budget: float) -> bool:
        """One try to acquire or renew, bounded by `budget` seconds; errors count as "not now"."""
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(), max(budget, 0.001))
        except (errors.StatusError, ServerUnreachable, TimeoutError) as exc:
            log.info("%s: lease %s/%s: %s", self.identity, self.namespace, self.lease_name, exc or "timed out")
            return False

    async def _try_acquire_or_renew(self) -> bool:
        now = now_micro()
        wanted: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        try:
            lease = await self.client.get(LEASES, self.lease_name, namespace=self.namespace)
        except errors.NotFound:
            body = {"metadata": {"name": self.lease_name, "namespace": self.namespace}, "spec": wanted}
            try:
                created = await self.client.create(LEASES, body)
            except errors.AlreadyExists:
                return False
            self._observe(created.get("spec") or wanted)
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        loop_now = asyncio.get_running_loop().time()
        if holder and holder != self.identity and self._observed_at + duration > loop_now:
            return False  # someone else holds it and renews it
        if holder == self.identity:
            wanted["acquireTime"] = spec.get("acquireTime") or now
            wanted["leaseTransitions"] = spec.get("leaseTransitions") or 0
        else:
            wanted["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = {**spec, **wanted}
        try:
            updated = await self.client.update(LEASES, lease)
        except errors.Conflict:
            return False  # another candidate wrote first
        self._observe(updated.get("spec") or lease["spec"])
        return True

    def _observe(self, spec: Obj) -> None:
        if spec != self._observed:
            self._observed = dict(spec)
            self._observed_at = asyncio.get_running_loop().time()

    async def release(self) -> bool:
        """Hand the Lease back (empty holder) if we hold it; True if released."""
        try:
            lease = await self.client.get(LEASES, self.lease_name, namespace=self.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return False
            now = now_micro()
            spec.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
            lease["spec"] = spec
            self._observe((await self.client.update(LEASES, lease)).get("spec") or spec)
        except (errors.StatusError, ServerUnreachable) as exc:
            log.warning("%s could not release lease %s/%s: %s", self.identity, self.namespace, self.lease_name, exc)
            return False
        return True


async def _sleep_unless(stop: asyncio.Event, delay: float, *others: asyncio.Future[Any]) -> None:
    """Sleep `delay` seconds, waking early when `stop` is set or one of `others` finishes."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiter, *others], timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()

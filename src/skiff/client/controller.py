"""The shape every controller has: informers → handlers enqueue keys → workers reconcile keys.

A controller subclasses `Controller`, says which informers it watches, and
overrides `reconcile(key)`:

    class ReplicaSetController(Controller):
        name = "replicaset"

        def __init__(self, client, factory):
            super().__init__(workers=5)
            self.client = client
            self.rs = self.watch(factory.informer(REPLICASETS))
            self.pods = self.watch_owned(factory.informer(PODS), "ReplicaSet")

        async def reconcile(self, key):
            rs = self.rs.get(key)          # from the cache; deepcopy before changing
            ...

`reconcile` is level-triggered: it receives only a key, re-reads the current
state from the caches, and makes the world match. Returning means done
(`forget`: the key's backoff resets); raising means retry later with
per-key exponential backoff (`add_rate_limited`); raising `RequeueAfter(s)`
means "look again in s seconds" without counting a failure. One key is never
reconciled by two workers at once (see `skiff.client.workqueue`).
"""

from __future__ import annotations

import asyncio
import logging

from skiff.api import errors
from skiff.client.cache import Obj, object_key
from skiff.client.informer import Informer
from skiff.client.ratelimit import RateLimiter
from skiff.client.tasks import cancel_and_wait, spawn, wait_or_stop
from skiff.client.workqueue import ShutDown, WorkQueue


class RequeueAfter(Exception):
    """Raised by `reconcile` to look at the key again after `delay` seconds (not a failure)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"requeue after {delay}s")
        self.delay = delay


def controller_owner(obj: Obj, kind: str | None = None) -> dict[str, str] | None:
    """The ownerReference marked `controller: true` (of `kind`, if given), or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and (kind is None or ref.get("kind") == kind):
            return dict(ref)
    return None


class Controller:
    """Base class: a named work queue, informers to wait for, workers calling `reconcile`."""

    name: str = "controller"
    workers: int = 1
    shutdown_timeout: float = 10.0  # how long running reconciles may finish after stop

    def __init__(
        self, *, name: str | None = None, workers: int | None = None, rate_limiter: RateLimiter | None = None
    ) -> None:
        if name is not None:
            self.name = name
        if workers is not None:
            self.workers = workers
        self.rate_limiter = rate_limiter
        self.queue: WorkQueue[str] = WorkQueue(name=self.name, rate_limiter=rate_limiter)
        self.informers: list[Informer] = []
        self.log = logging.getLogger(f"skiff.controllers.{self.name}")

    async def reconcile(self, key: str) -> None:
        """Make the object under `key` (`namespace/name` or `name`) what it should be. Override this."""
        raise NotImplementedError

    # --- wiring -------------------------------------------------------------------------------
    def wait_for(self, informer: Informer) -> Informer:
        """Wait for `informer` to sync before reconciling (no handlers added)."""
        if informer not in self.informers:
            self.informers.append(informer)
        return informer

    def watch(self, informer: Informer) -> Informer:
        """Enqueue every object of `informer` that is added, updated (or resynced) or deleted."""
        self.wait_for(informer)
        informer.add_handlers(
            on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new), on_delete=self.enqueue
        )
        return informer

    def watch_owned(self, informer: Informer, owner_kind: str) -> Informer:
        """Enqueue the controller owner (of `owner_kind`) of every changed object of `informer`."""
        self.wait_for(informer)

        def on_update(old: Obj, new: Obj) -> None:
            self.enqueue_owner(new, owner_kind)
            if controller_owner(old, owner_kind) != controller_owner(new, owner_kind):
                self.enqueue_owner(old, owner_kind)  # adopted or released: the old owner must look too

        informer.add_handlers(
            on_add=lambda obj: self.enqueue_owner(obj, owner_kind),
            on_update=on_update,
            on_delete=lambda obj: self.enqueue_owner(obj, owner_kind),
        )
        return informer

    # --- enqueueing ---------------------------------------------------------------------------
    def enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def enqueue_key(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    def enqueue_owner(self, obj: Obj, kind: str, *, namespaced: bool = True) -> str | None:
        """Enqueue the controller owner of `kind` from `obj`'s ownerReferences; its key, or None if it has none.

        The owner is taken to be in `obj`'s namespace (ownerReferences cannot cross namespaces);
        `namespaced=False` for cluster-scoped owners. Reconcile should check the owner's uid.
        """
        ref = controller_owner(obj, kind)
        if ref is None or not ref.get("name"):
            return None
        ns = (obj.get("metadata") or {}).get("namespace")
        key = f"{ns}/{ref['name']}" if namespaced and ns else ref["name"]
        self.queue.add(key)
        return key

    # --- running ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Start informers not running yet, wait for all to sync, run the workers until `stop` is set."""
        if self.queue.shutting_down:
            self.queue = WorkQueue(name=self.name, rate_limiter=self.rate_limiter)
        started = [i for i in self.informers if not i.running]
        for informer in started:
            informer.start()
        workers: list[asyncio.Task[None]] = []
        try:
            synced = await wait_or_stop(asyncio.gather(*(i.wait_synced() for i in self.informers)), stop)
            if synced is None:
                return
            self.log.info("%s: caches synced, starting %d workers", self.name, self.workers)
            workers = [
                spawn(self._worker(), name=f"{self.name}/worker-{n}", logger=self.log) for n in range(self.workers)
            ]
            await stop.wait()
        finally:
            self.queue.shutdown()
            if workers:
                _done, pending = await asyncio.wait(workers, timeout=self.shutdown_timeout)
                await cancel_and_wait(pending)
            for informer in started:
                await informer.stop()
            self.log.info("%s: stopped", self.name)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> bool:
        """Reconcile one key and requeue it as its outcome asks; True on success."""
        try:
            await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except RequeueAfter as req:
            self.queue.forget(key)
            self.queue.add_after(key, req.delay)
            return True
        except (errors.Conflict, errors.AlreadyExists) as exc:
            retries = self.queue.num_requeues(key)
            self.log.info("%s: reconcile %s: %s (retry %d)", self.name, key, exc, retries + 1)
            self.queue.add_rate_limited(key)
            return False
        except Exception:
            retries = self.queue.num_requeues(key)
            self.log.exception("%s: reconcile %s failed (retry %d)", self.name, key, retries + 1)
            self.queue.add_rate_limited(key)
            return False
        self.queue.forget(key)
        return True

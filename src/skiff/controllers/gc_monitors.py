"""The garbage collector's monitors: one informer per kind it can collect, kept in step with discovery.

The collector must see every object that may own or depend on another, of
every kind at once, custom resources included. `Monitors` finds the kinds
the server serves with list, watch and delete (events are ignored), and
gives each an informer whose events feed the dependency graph: a kind
another controller already watches reuses that shared informer; every other
kind gets a metadata-only informer (`PartialObjectMetadata`). Discovery runs
again every `resync_period` seconds and soon after any
CustomResourceDefinition changes; monitors and kinds of API groups whose
discovery failed are kept until it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from skiff.api import errors
from skiff.client import Client, Informer, InformerFactory, Resource, ServerUnreachable
from skiff.client.resources import CRDS
from skiff.controllers.discovery import Discovered, MetadataClient, discover

Obj = dict[str, Any]
Handlers = tuple[Callable[[Obj], None], Callable[[Obj, Obj], None], Callable[[Obj], None]]

IGNORED: frozenset[tuple[str, str]] = frozenset({("", "events"), ("events.k8s.io", "events")})


@dataclass
class Monitor:
    resource: Resource
    informer: Informer
    own: bool  # a metadata informer of this collector's (else a shared one it only listens to)


class Monitors:
    """The monitored kinds of one collector, and the discovery that keeps them current."""

    def __init__(
        self,
        client: Client,
        metadata: MetadataClient,
        shared: InformerFactory,
        *,
        handlers: Callable[[Resource], Handlers],
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        name: str,
        log: logging.Logger,
    ) -> None:
        self.client = client
        self.metadata = metadata
        self.shared = shared
        self.handlers = handlers  # the (add, update, delete) informer handlers for a kind
        self.spawn = spawn  # runs a background coroutine, guarded
        self.name = name
        self.log = log
        self.monitors: dict[Resource, Monitor] = {}
        self.kinds: dict[tuple[str, str], Resource] = {}
        self.rediscover = asyncio.Event()
        crds = self.shared.informer(CRDS)  # a new kind of custom resource: look for it soon
        crds.add_handlers(
            on_add=lambda _o: self.rediscover.set(),
            on_update=lambda old, new: None if old is new else self.rediscover.set(),
            on_delete=lambda _o: self.rediscover.set(),
        )

    def synced(self) -> bool:
        """Whether every monitor has listed its kind (the graph knows every dependent that exists)."""
        return all(m.informer.has_synced for m in self.monitors.values())

    async def stop(self) -> None:
        """Stop the informers of this collector's own (shared ones belong to their factory)."""
        for monitor in self.monitors.values():
            if monitor.own:
                await monitor.informer.stop()

    async def first_discovery(self, stop: asyncio.Event) -> Discovered | None:
        delay = 0.5
        while not stop.is_set():
            try:
                return await discover(self.client)
            except (errors.StatusError, ServerUnreachable) as exc:
                self.log.warning("%s: discovery failed: %s; retrying in %.1fs", self.name, exc, delay)
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                delay = min(delay * 2, 10.0)
        return None

    async def wait_synced(self, stop: asyncio.Event, *, within: float) -> bool:
        """Wait up to `within` seconds for every monitor's first list; False if stopped meanwhile.

        A kind that cannot be listed must not stall collection of all the others: past the timeout
        the workers start anyway. Deleting an object never relies on the graph alone (owners are
        looked up live), and the steps that do (foreground and orphan finalizers) wait for `synced()`.
        """
        deadline = asyncio.get_running_loop().time() + within
        while not self.synced():
            if stop.is_set():
                return False
            if asyncio.get_running_loop().time() > deadline:
                behind = sorted(r.plural for r, m in self.monitors.items() if not m.informer.has_synced)
                self.log.warning("%s: not synced after %.0fs: %s; starting anyway", self.name, within,
                                 ", ".join(behind))  # fmt: skip
                break
            await asyncio.sleep(0.05)
        return not stop.is_set()

    async def discovery_loop(self, stop: asyncio.Event, resync_period: float) -> None:
        """Discover again every `resync_period` seconds, or soon after a CRD changed; until `stop`."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(resync_period):
                    await self.rediscover.wait()
                await asyncio.sleep(0.5)  # let a burst of CRD changes settle
            except TimeoutError:
                pass
            self.rediscover.clear()
            try:
                found = await discover(self.client)
            except (errors.StatusError, ServerUnreachable) as exc:
                self.log.warning("%s: discovery failed: %s", self.name, exc)
                continue
            self.sync(found)

    def sync(self, found: Discovered) -> None:
        """Monitor every deletable kind found; keep monitors (and kinds) of groups that failed discovery."""
        if found.failed:
            self.log.warning("%s: %s", self.name, found.error())
        failed_groups = {gv.rpartition("/")[0] for gv in found.failed}
        self.kinds = {k: r for k, r in self.kinds.items() if k[0] in failed_groups} | found.kinds()
        wanted = {
            r.resource
            for r in found.resources
            if r.supports("list", "watch", "delete") and (r.resource.group, r.resource.plural) not in IGNORED
        }
        for resource in sorted(wanted - set(self.monitors), key=lambda r: (r.group, r.plural)):
            self.monitors[resource] = self._monitor(resource)
        for resource, monitor in list(self.monitors.items()):
            if resource not in wanted and resource.group not in failed_groups:
                del self.monitors[resource]
                if monitor.own:
                    self.spawn(monitor.informer.stop(), f"stop {resource.plural} monitor")
        self.log.debug("%s: monitoring %d kinds", self.name, len(self.monitors))

    def _monitor(self, resource: Resource) -> Monitor:
        on_add, on_update, on_delete = self.handlers(resource)
        shared = next(
            (
                i
                for i in self.shared.informers()
                if i.resource == resource and not (i.namespace or i.label_selector or i.field_selector)
            ),
            None,
        )
        if shared is not None:
            shared.add_handlers(on_add=on_add, on_update=on_update, on_delete=on_delete)
            for obj in shared.list():  # what it holds already (its own replay comes later: harmless twice)
                on_add(obj)
            if not shared.running:
                shared.start()  # nobody started it yet (the collector running alone); the factory stops it
            monitor = Monitor(resource, shared, own=False)
        else:
            informer = Informer(self.metadata, resource)
            informer.add_handlers(on_add=on_add, on_update=on_update, on_delete=on_delete)
            informer.start()
            monitor = Monitor(resource, informer, own=True)
        return monitor

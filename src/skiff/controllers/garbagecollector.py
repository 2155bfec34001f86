"""The garbage collector: dependents go when their owners go, as ownerReferences and deletion policy say.

Kubernetes' garbage collector (pkg/controller/garbagecollector), over skiff's
client runtime:

- **monitors** (`gc_monitors`): one informer per kind the server serves with
  list, watch and delete (found by discovery, so custom resources are
  included), shared with other controllers where they watch it already.
- **graph**: informer events update `gc_graph.DependencyGraph`, which says
  which objects to look at; keys `delete/<uid>` and `orphan/<uid>` go on the
  controller's work queue.
- **attempt to delete** (`delete/<uid>`): GET the object live; classify each
  owner by a live GET too (absent or another uid: dangling; being deleted in
  the foreground: waiting; else solid). An object with a solid owner keeps
  living, minus its references to absent owners; one whose owners are all
  gone is deleted (Background, or as its own finalizers ask), guarded by
  uid and resourceVersion preconditions (the calls: `gc_objects`). Nothing is deleted because an
  informer has not seen an owner yet: absence is always confirmed by the
  server.
- **foreground**: an owner with a deletionTimestamp and the
  `foregroundDeletion` finalizer has its dependents deleted (in the
  foreground themselves when they have dependents); once no dependent with
  `blockOwnerDeletion` remains, the finalizer is removed and the owner goes.
- **orphan** (`orphan/<uid>`): references to an owner with the `orphan`
  finalizer are removed from all its dependents, then the finalizer.
- namespaced owners must be in their dependents' namespace: a reference
  across namespaces is treated as absent, with a Warning event
  `OwnerRefInvalidNamespace` on the dependent (as Kubernetes since 1.20).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from skiff.client import Controller, RequeueAfter, Resource
from skiff.client.ratelimit import ItemExponentialFailureRateLimiter
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.controllers.context import ControllerContext
from skiff.controllers.discovery import MetadataClient
from skiff.controllers.gc_graph import (
    FOREGROUND,
    ORPHAN,
    DependencyGraph,
    Effects,
    Node,
    ObjectRef,
    OwnerRef,
    Policy,
    finalizers,
    owner_refs,
    plan,
)
from skiff.controllers.gc_monitors import Handlers, Monitors
from skiff.controllers.gc_objects import LiveObjects, RefList
from skiff.controllers.gc_objects import meta_of as _meta

log = logging.getLogger(__name__)
Obj = dict[str, Any]

COMPONENT = "garbage-collector-controller"


class _Wait(Exception):
    """Not a failure: look at the key again after its backoff (an owner not observed yet, a kind not known yet)."""


class _Invalid(Exception):
    """An error retrying cannot fix (a cluster-scoped object owned by a namespaced kind)."""


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 10

    def __init__(self, ctx: ControllerContext, *, resync_period: float = 30.0, sync_timeout: float = 30.0) -> None:
        super().__init__()
        self.client = ctx.client
        self.recorder = ctx.recorder(COMPONENT)
        self.graph = DependencyGraph()
        self.resync_period = resync_period
        self.sync_timeout = sync_timeout
        self.pending = ItemExponentialFailureRateLimiter(0.005, 30.0)  # backoff of keys that wait, not fail
        self._background: set[asyncio.Task[Any]] = set()
        metadata = MetadataClient(ctx.client)
        self.monitors = Monitors(
            ctx.client, metadata, ctx.informers,
            handlers=self._handlers, spawn=self._spawn, name=self.name, log=self.log,
        )  # fmt: skip
        self.objects = LiveObjects(metadata, resolve=self._resource)

    # --- running ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Discover kinds, start monitors, wait for them to sync (bounded), then reconcile until `stop`."""
        loop: asyncio.Task[None] | None = None
        try:
            found = await self.monitors.first_discovery(stop)
            if found is None:
                return
            self.monitors.sync(found)
            if not await self.monitors.wait_synced(stop, within=self.sync_timeout):
                return
            loop = spawn(
                self.monitors.discovery_loop(stop, self.resync_period), name=f"{self.name}/discovery", logger=self.log
            )
            await super().run(stop)
        finally:
            if loop is not None:
                await cancel_and_wait([loop])
            await cancel_and_wait(list(self._background))
            await self.monitors.stop()

    def _handlers(self, resource: Resource) -> Handlers:
        api_version, kind = resource.api_version, resource.kind

        def on_add(obj: Obj) -> None:
            self._apply(self.graph.observe(api_version, kind, _meta(obj)))

        def on_update(old: Obj, new: Obj) -> None:
            if old is not new:  # a resync changes nothing the graph cares about
                self._apply(self.graph.observe(api_version, kind, _meta(new), _meta(old)))

        def on_delete(obj: Obj) -> None:
            self._apply(self.graph.observe_deleted(api_version, kind, _meta(obj)))

        return on_add, on_update, on_delete

    def synced(self) -> bool:
        """Whether every monitor has listed its kind (the graph knows every dependent that exists)."""
        return self.monitors.synced()

    def _apply(self, fx: Effects) -> None:
        for uid in fx.attempt_to_delete:
            self.queue.add(f"delete/{uid}")
        for uid in fx.attempt_to_delete_later:
            self.queue.add_rate_limited(f"delete/{uid}")
        for uid in fx.attempt_to_orphan:
            self.queue.add(f"orphan/{uid}")
        for dependent, ref in fx.invalid_namespace:
            self._spawn(self._report_invalid(dependent, ref), "OwnerRefInvalidNamespace event")

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = spawn(coro, name=f"{self.name}/{what}", logger=self.log)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_invalid(self, dependent: ObjectRef, ref: OwnerRef) -> None:
        owner = ref.identity(dependent.namespace)
        await self.recorder.record(
            dependent.as_object(),
            type="Warning",
            reason="OwnerRefInvalidNamespace",
            message=f'ownerRef {owner} does not exist in namespace "{dependent.namespace}"',
        )

    # --- reconciling --------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        verb, _, uid = key.partition("/")
        try:
            if verb == "delete":
                await self._attempt_to_delete(uid)
            elif verb == "orphan":
                await self._attempt_to_orphan(uid)
        except _Wait as wait:
            delay = self.pending.when(key)
            self.log.debug("%s: %s: %s; again in %.3fs", self.name, key, wait or "waiting", delay)
            raise RequeueAfter(delay) from None
        except _Invalid as exc:
            self.log.info("%s: %s: %s", self.name, key, exc)
        self.pending.forget(key)

    def _resource(self, api_version: str, kind: str) -> Resource:
        resource = self.monitors.kinds.get((api_version.rpartition("/")[0], kind))
        if resource is None:
            self.monitors.rediscover.set()
            raise _Wait(f"the server serves no kind {kind} in {api_version}")
        return resource

    async def _attempt_to_delete(self, uid: str) -> None:
        node = self.graph.get(uid)
        if node is None or (node.being_deleted and not node.deleting_dependents):
            return  # gone from the graph, or on its way out: its deletion event will follow
        identity = node.identity
        resource = self._resource(identity.api_version, identity.kind)
        latest = await self._get(resource, identity)
        if latest is None:
            self._apply(self.graph.virtual_delete(identity))
            return
        node = self.graph.get(uid)
        if node is None:
            return
        if node.deleting_dependents:
            await self._delete_dependents(node)
        else:
            await self._collect(node, resource, latest)
        if not node.observed:
            raise _Wait("not observed by an informer yet")  # until it is, or the server says it is gone

    async def _delete_dependents(self, node: Node) -> None:
        """A foreground deletion: remove the finalizer once no blocking dependent is left."""
        if not self.synced():
            raise _Wait("monitors not synced: a dependent may not be known yet")
        blocking = self.graph.blocking_dependents(node)
        if not blocking:
            self.log.info("%s: %s has no blocking dependents left; removing %s", self.name, node.identity, FOREGROUND)
            await self.objects.remove_finalizer(node.identity, FOREGROUND)
            return
        for dep in blocking:
            if not dep.deleting_dependents:
                self.queue.add(f"delete/{dep.uid}")

    async def _collect(self, node: Node, resource: Resource, latest: Obj) -> None:
        """Delete `node` if all its owners are gone; drop its references to absent owners otherwise."""
        meta = _meta(latest)
        refs = owner_refs(meta)
        if not refs:
            return
        solid: list[OwnerRef] = []
        dangling: list[OwnerRef] = []
        waiting: list[OwnerRef] = []
        for ref in refs:
            try:
                owner = await self._owner(ref, node)
            except _Invalid:
                await self._report_invalid(node.identity, ref)
                raise
            if owner is None:
                dangling.append(ref)
            elif _meta(owner).get("deletionTimestamp") and FOREGROUND in finalizers(_meta(owner)):
                waiting.append(ref)
            else:
                solid.append(ref)
        decision = plan(
            node, finalizers(meta), solid=solid, dangling=dangling, waiting=waiting,
            dependents=self.graph.dependents(node),
        )  # fmt: skip
        identity = node.identity
        if decision.action == "keep":
            return
        if decision.action == "remove_refs":
            drop = set(decision.remove_uids)
            self.log.debug("%s: removing references to %s from %s", self.name, sorted(drop), identity)
            await self.objects.patch_refs(resource, identity, lambda rs: [r for r in rs if r.get("uid") not in drop])
            return
        if decision.unblock_first:
            await self.objects.patch_refs(resource, identity, _unblocked)
        assert decision.policy is not None
        self.log.debug("%s: deleting %s (propagationPolicy %s)", self.name, identity, decision.policy)
        await self._delete(resource, identity, latest, decision.policy)

    async def _owner(self, ref: OwnerRef, item: Node) -> Obj | None:
        """The owner `ref` names, looked up live in `item`'s namespace; None if it does not exist."""
        cluster_key = ref.identity("")
        namespaced_key = ref.identity(item.identity.namespace)
        if cluster_key in self.graph.absent or namespaced_key in self.graph.absent:
            return None
        resource = self._resource(ref.api_version, ref.kind)
        if resource.namespaced and not item.identity.namespace:
            raise _Invalid(f"cluster-scoped {item.identity} refers to namespaced owner {ref.kind} {ref.name}")
        key = namespaced_key if resource.namespaced else cluster_key
        owner = await self._get(resource, key)
        if owner is None or _meta(owner).get("uid") != ref.uid:
            self.graph.absent.add(key)
            return None
        return owner

    async def _get(self, resource: Resource, identity: ObjectRef) -> Obj | None:
        return await self.objects.get(resource, identity)

    async def _delete(self, resource: Resource, identity: ObjectRef, latest: Obj, policy: Policy) -> None:
        if not await self.objects.delete(resource, identity, latest, policy):
            self._apply(self.graph.virtual_delete(identity))  # gone already

    # --- orphaning ----------------------------------------------------------------------------
    async def _attempt_to_orphan(self, uid: str) -> None:
        """Remove references to the owner from all its dependents, then its `orphan` finalizer."""
        node = self.graph.get(uid)
        if node is None:
            return
        if not self.synced():
            raise _Wait("monitors not synced: a dependent may not be known yet")
        owner = node.identity
        dependents = self.graph.dependents(node)
        results = await asyncio.gather(*(self._orphan(dep, owner.uid) for dep in dependents), return_exceptions=True)
        failures = [f"{dep.identity}: {r}" for dep, r in zip(dependents, results, strict=True) if r is not None]
        for r in results:
            if isinstance(r, asyncio.CancelledError):
                raise r
        if failures:
            raise RuntimeError(f"failed to orphan dependents of owner {owner}: {'; '.join(failures)}")
        self.log.info("%s: orphaned %d dependents of %s", self.name, len(dependents), owner)
        await self.objects.remove_finalizer(owner, ORPHAN)

    async def _orphan(self, dependent: Node, owner_uid: str) -> None:
        resource = self._resource(dependent.identity.api_version, dependent.identity.kind)
        await self.objects.patch_refs(
            resource, dependent.identity, lambda rs: [r for r in rs if r.get("uid") != owner_uid]
        )


def _unblocked(refs: RefList) -> RefList:
    """References with blockOwnerDeletion turned off (to break a possible foreground cycle)."""
    return [{**r, "blockOwnerDeletion": False} if r.get("blockOwnerDeletion") else r for r in refs]


def new(ctx: ControllerContext) -> GarbageCollector:
    return GarbageCollector(ctx)

"""The garbage collector: dependents go when their owners go, as ownerReferences and deletion policy say.

Kubernetes' garbage collector (pkg/controller/garbagecollector), over skiff's
client runtime:

- **monitors**: one informer per kind the server serves with list, watch and
  delete (found by discovery, so custom resources are included; events are
  ignored). A kind another controller already watches reuses that shared
  informer; every other kind gets a metadata-only informer
  (`PartialObjectMetadata`). Discovery runs again every `resync_period`
  seconds and soon after any CustomResourceDefinition changes.
- **graph**: informer events update `gc_graph.DependencyGraph`, which says
  which objects to look at; keys `delete/<uid>` and `orphan/<uid>` go on the
  controller's work queue.
- **attempt to delete** (`delete/<uid>`): GET the object live; classify each
  owner by a live GET too (absent or another uid: dangling; being deleted in
  the foreground: waiting; else solid). An object with a solid owner keeps
  living, minus its references to absent owners; one whose owners are all
  gone is deleted (Background, or as its own finalizers ask), guarded by
  uid and resourceVersion preconditions. Nothing is deleted because an
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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from skiff.api import errors
from skiff.client import Controller, Informer, RequeueAfter, Resource, ServerUnreachable
from skiff.client.ratelimit import ItemExponentialFailureRateLimiter
from skiff.client.resources import CRDS
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.controllers.context import ControllerContext
from skiff.controllers.discovery import Discovered, MetadataClient, discover
from skiff.controllers.gc_graph import (
    FOREGROUND,
    ORPHAN,
    DependencyGraph,
    Effects,
    Meta,
    Node,
    ObjectRef,
    OwnerRef,
    Policy,
    finalizers,
    owner_refs,
    plan,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]
RefList = list[dict[str, Any]]

IGNORED: frozenset[tuple[str, str]] = frozenset({("", "events"), ("events.k8s.io", "events")})
COMPONENT = "garbage-collector-controller"
PATCH_ATTEMPTS = 5


class _Wait(Exception):
    """Not a failure: look at the key again after its backoff (an owner not observed yet, a kind not known yet)."""


class _Invalid(Exception):
    """An error retrying cannot fix (a cluster-scoped object owned by a namespaced kind)."""


@dataclass
class Monitor:
    resource: Resource
    informer: Informer
    own: bool  # a metadata informer of this collector's (else a shared one it only listens to)


def _meta(obj: Obj) -> Meta:
    meta: Meta = obj.get("metadata") or {}
    return meta


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 10

    def __init__(self, ctx: ControllerContext, *, resync_period: float = 30.0, sync_timeout: float = 30.0) -> None:
        super().__init__()
        self.client = ctx.client
        self.metadata = MetadataClient(ctx.client)
        self.shared = ctx.informers
        self.recorder = ctx.recorder(COMPONENT)
        self.graph = DependencyGraph()
        self.monitors: dict[Resource, Monitor] = {}
        self.kinds: dict[tuple[str, str], Resource] = {}
        self.resync_period = resync_period
        self.sync_timeout = sync_timeout
        self.pending = ItemExponentialFailureRateLimiter(0.005, 30.0)  # backoff of keys that wait, not fail
        self._rediscover = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        crds = self.shared.informer(CRDS)  # a new kind of custom resource: look for it soon
        crds.add_handlers(
            on_add=lambda _o: self._rediscover.set(),
            on_update=lambda old, new: None if old is new else self._rediscover.set(),
            on_delete=lambda _o: self._rediscover.set(),
        )

    # --- running ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Discover kinds, start monitors, wait for them to sync (bounded), then reconcile until `stop`."""
        loop: asyncio.Task[None] | None = None
        try:
            found = await self._first_discovery(stop)
            if found is None:
                return
            self._sync_monitors(found)
            if not await self._wait_synced(stop):
                return
            loop = spawn(self._discovery_loop(stop), name=f"{self.name}/discovery", logger=self.log)
            await super().run(stop)
        finally:
            if loop is not None:
                await cancel_and_wait([loop])
            await cancel_and_wait(list(self._background))
            for monitor in self.monitors.values():
                if monitor.own:
                    await monitor.informer.stop()

    async def _first_discovery(self, stop: asyncio.Event) -> Discovered | None:
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

    async def _wait_synced(self, stop: asyncio.Event) -> bool:
        """Wait up to `sync_timeout` for every monitor's first list; False if stopped meanwhile.

        A kind that cannot be listed must not stall collection of all the others: past the timeout
        the workers start anyway. Deleting an object never relies on the graph alone (owners are
        looked up live), and the steps that do (foreground and orphan finalizers) wait for `synced()`.
        """
        deadline = asyncio.get_running_loop().time() + self.sync_timeout
        while not self.synced():
            if stop.is_set():
                return False
            if asyncio.get_running_loop().time() > deadline:
                behind = sorted(r.plural for r, m in self.monitors.items() if not m.informer.has_synced)
                self.log.warning("%s: not synced after %.0fs: %s; starting anyway", self.name, self.sync_timeout,
                                 ", ".join(behind))  # fmt: skip
                break
            await asyncio.sleep(0.05)
        return not stop.is_set()

    async def _discovery_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.resync_period):
                    await self._rediscover.wait()
                await asyncio.sleep(0.5)  # let a burst of CRD changes settle
            except TimeoutError:
                pass
            self._rediscover.clear()
            try:
                found = await discover(self.client)
            except (errors.StatusError, ServerUnreachable) as exc:
                self.log.warning("%s: discovery failed: %s", self.name, exc)
                continue
            self._sync_monitors(found)

    def _sync_monitors(self, found: Discovered) -> None:
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
                    self._spawn(monitor.informer.stop(), f"stop {resource.plural} monitor")
        self.log.debug("%s: monitoring %d kinds", self.name, len(self.monitors))

    def _monitor(self, resource: Resource) -> Monitor:
        on_add, on_update, on_delete = self._handlers(resource)
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

    def _handlers(
        self, resource: Resource
    ) -> tuple[Callable[[Obj], None], Callable[[Obj, Obj], None], Callable[[Obj], None]]:
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
        return all(m.informer.has_synced for m in self.monitors.values())

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
        resource = self.kinds.get((api_version.rpartition("/")[0], kind))
        if resource is None:
            self._rediscover.set()
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
            await self._remove_finalizer(node.identity, FOREGROUND)
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
            await self._patch_refs(resource, identity, lambda rs: [r for r in rs if r.get("uid") not in drop])
            return
        if decision.unblock_first:
            await self._patch_refs(resource, identity, _unblocked)
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

    # --- API calls ----------------------------------------------------------------------------
    async def _get(self, resource: Resource, identity: ObjectRef) -> Obj | None:
        """The object's metadata, or None if it does not exist (under that name with that uid)."""
        if resource.namespaced and not identity.namespace:
            return None  # a namespaced kind named without a namespace cannot exist
        namespace = identity.namespace if resource.namespaced else None
        try:
            obj = await self.metadata.get(resource, identity.name, namespace=namespace)
        except errors.NotFound:
            return None
        return obj if _meta(obj).get("uid") == identity.uid else None

    async def _delete(self, resource: Resource, identity: ObjectRef, latest: Obj, policy: Policy) -> None:
        namespace = identity.namespace if resource.namespaced else None
        preconditions = {"uid": identity.uid, "resourceVersion": str(_meta(latest).get("resourceVersion") or "")}
        try:
            try:
                await self.metadata.delete(
                    resource, identity.name, namespace=namespace, propagation_policy=policy,
                    preconditions=preconditions,
                )  # fmt: skip
                return
            except errors.Conflict:
                fresh = await self._get(resource, identity)
                if fresh is None:
                    self._apply(self.graph.virtual_delete(identity))
                    return
                if owner_refs(_meta(fresh)) != owner_refs(_meta(latest)):
                    raise RequeueAfter(0.0) from None  # its owners changed: decide again
                # changed, but not in who owns it: delete without the resourceVersion guard
                await self.metadata.delete(
                    resource, identity.name, namespace=namespace, propagation_policy=policy,
                    preconditions={"uid": identity.uid},
                )  # fmt: skip
        except errors.NotFound:
            self._apply(self.graph.virtual_delete(identity))

    async def _patch_refs(self, resource: Resource, identity: ObjectRef, change: Callable[[RefList], RefList]) -> None:
        """Rewrite the object's ownerReferences (guarded by its uid and resourceVersion); gone is fine."""
        for _ in range(PATCH_ATTEMPTS):
            latest = await self._get(resource, identity)
            if latest is None:
                return
            meta = _meta(latest)
            refs = [dict(r) for r in meta.get("ownerReferences") or []]
            new = change([dict(r) for r in refs])
            if new == refs:
                return
            patch = {"metadata": {"ownerReferences": new or None, "uid": identity.uid,
                                  "resourceVersion": meta.get("resourceVersion")}}  # fmt: skip
            try:
                await self._patch(resource, identity, patch)
                return
            except errors.NotFound:
                return
            except errors.Conflict:
                continue
        raise errors.Conflict(f"{identity} kept changing while its ownerReferences were updated")

    async def _remove_finalizer(self, identity: ObjectRef, finalizer: str) -> None:
        for _ in range(PATCH_ATTEMPTS):
            resource = self._resource(identity.api_version, identity.kind)
            latest = await self._get(resource, identity)
            if latest is None:
                return
            meta = _meta(latest)
            current = finalizers(meta)
            if finalizer not in current:
                return
            rest = [f for f in current if f != finalizer]
            patch = {"metadata": {"finalizers": rest or None, "resourceVersion": meta.get("resourceVersion")}}
            try:
                await self._patch(resource, identity, patch)
                return
            except errors.NotFound:
                return
            except errors.Conflict:
                continue
        raise errors.Conflict(f"{identity} kept changing while the {finalizer} finalizer was removed")

    async def _patch(self, resource: Resource, identity: ObjectRef, patch: Obj) -> None:
        namespace = identity.namespace if resource.namespaced else None
        await self.metadata.patch(resource, identity.name, patch, namespace=namespace, patch_type="merge")

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
        await self._remove_finalizer(owner, ORPHAN)

    async def _orphan(self, dependent: Node, owner_uid: str) -> None:
        resource = self._resource(dependent.identity.api_version, dependent.identity.kind)
        await self._patch_refs(resource, dependent.identity, lambda rs: [r for r in rs if r.get("uid") != owner_uid])


def _unblocked(refs: RefList) -> RefList:
    """References with blockOwnerDeletion turned off (to break a possible foreground cycle)."""
    return [{**r, "blockOwnerDeletion": False} if r.get("blockOwnerDeletion") else r for r in refs]


def new(ctx: ControllerContext) -> GarbageCollector:
    return GarbageCollector(ctx)

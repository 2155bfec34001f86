"""The namespace controller: a deleted namespace is emptied, then finalized, then gone.

Deleting a namespace only marks it (deletionTimestamp, phase Terminating);
the apiserver keeps it while `spec.finalizers` holds `kubernetes`. This
controller does what Kubernetes' does (pkg/controller/namespace/deletion):

1. find every namespaced kind the server serves (discovery, so custom
   resources count) that can be deleted;
2. delete the namespace's pods first and wait until they are gone (ordered
   namespace deletion: workloads stop before the policies and secrets they
   rely on disappear), then `deletecollection` every other kind
   (propagationPolicy Background; list + delete one by one where
   deletecollection is not served);
3. list what remains: objects held by finalizers or still terminating are
   waited for, retrying with backoff;
4. report progress in `status.conditions` with Kubernetes' condition types
   and reasons (NamespaceDeletionDiscoveryFailure,
   NamespaceDeletionContentFailure, NamespaceContentRemaining,
   NamespaceFinalizersRemaining, NamespaceDeletionGroupVersionParsingFailure);
5. when nothing is left, `PUT namespaces/<name>/finalize` without
   `kubernetes` in spec.finalizers, and the apiserver removes the namespace.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors
from skiff.client import Client, Controller, RequeueAfter, ServerUnreachable
from skiff.client.events import now_rfc3339
from skiff.client.ratelimit import ItemExponentialFailureRateLimiter
from skiff.client.resources import NAMESPACES, PODS
from skiff.controllers.context import ControllerContext
from skiff.controllers.discovery import APIResource, CachedDiscovery, MetadataClient

log = logging.getLogger(__name__)
Obj = dict[str, Any]

FINALIZER = "kubernetes"
FINALIZER_ESTIMATE = 15.0  # seconds assumed for finalizers to finish (Kubernetes' finalizerEstimateSeconds)
STATUS_ATTEMPTS = 5

# condition types this controller maintains, in Kubernetes' order, with the "all is well" reason and message
CONDITION_TYPES = (
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
)
OK: dict[str, tuple[str, str]] = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered", "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": (
        "ContentDeleted", "All content successfully deleted, may be waiting on finalization",
    ),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentRemoved", "All content successfully removed"),
}  # fmt: skip


@dataclass
class Remaining:
    """What one kind left behind in the namespace after a deletion pass."""

    count: int = 0
    finalizers: Counter[str] = field(default_factory=Counter)
    estimate: float = 0.0  # seconds until it is expected to be gone


@dataclass
class Outcome:
    """One pass over a namespace's content."""

    remaining: dict[str, Remaining] = field(default_factory=dict)  # group resource -> what is left
    errors: list[str] = field(default_factory=list)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)  # condition type -> (reason, message)

    @property
    def estimate(self) -> float:
        return max((r.estimate for r in self.remaining.values()), default=0.0)

    def conditions(self) -> dict[str, tuple[str, str]]:
        """Condition type -> (reason, message) for every condition that is True (failing)."""
        out = dict(self.failures)
        left = {gr: r for gr, r in self.remaining.items() if r.count}
        if left:
            listing = ", ".join(sorted(f"{gr} has {r.count} resource instances" for gr, r in left.items()))
            out["NamespaceContentRemaining"] = ("SomeResourcesRemain", f"Some resources are remaining: {listing}")
        held: Counter[str] = Counter()
        for r in left.values():
            held.update(r.finalizers)
        if held:
            listing = ", ".join(sorted(f"{f} in {n} resource instances" for f, n in held.items() if n))
            out["NamespaceFinalizersRemaining"] = ("SomeFinalizerRemain", f"Some finalizers are remaining: {listing}")
        if self.errors and "NamespaceDeletionContentFailure" not in out:
            msgs = sorted(self.errors)
            out["NamespaceDeletionContentFailure"] = (
                "ContentDeletionFailed",
                f"Failed to delete all resource types, {len(msgs)} remaining: {', '.join(msgs)}",
            )
        return out


def updated_conditions(current: list[Obj], failing: dict[str, tuple[str, str]]) -> list[Obj] | None:
    """`current` conditions with every maintained type set (True if failing, else its OK form); None if unchanged."""
    conditions = copy.deepcopy(current)
    changed = False
    for ctype in CONDITION_TYPES:
        status, (reason, message) = ("True", failing[ctype]) if ctype in failing else ("False", OK[ctype])
        old = next((c for c in conditions if c.get("type") == ctype), None)
        if old is None:
            conditions.append({"type": ctype, "status": status, "lastTransitionTime": now_rfc3339(),
                               "reason": reason, "message": message})  # fmt: skip
            changed = True
        elif (old.get("status"), old.get("reason"), old.get("message")) != (status, reason, message):
            if old.get("status") != status:
                old["lastTransitionTime"] = now_rfc3339()
            old.update(status=status, reason=reason, message=message)
            changed = True
    return conditions if changed else None


def _seconds_until(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    try:
        when = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(when.timestamp() - time.time(), 0.0)


class ContentDeleter:
    """Deletes everything of every namespaced kind in one namespace; reports what is left."""

    def __init__(self, client: Client, discovery: CachedDiscovery) -> None:
        self.client = client
        self.metadata = MetadataClient(client)
        self.discovery = discovery
        self._no_deletecollection: set[str] = set()  # group resources that answered 404/405 to it

    async def delete_all(self, namespace: str) -> Outcome:
        outcome = Outcome()
        try:
            found = await self.discovery.get()
        except (errors.StatusError, ServerUnreachable) as exc:
            outcome.failures["NamespaceDeletionDiscoveryFailure"] = ("DiscoveryFailed", str(exc))
            outcome.errors.append(str(exc))
            return outcome
        if found.failed:
            outcome.failures["NamespaceDeletionDiscoveryFailure"] = (
                "DiscoveryFailed",
                f"Discovery failed for some groups, {len(found.failed)} failing: {found.error()}",
            )
        kinds = [r for r in found.resources if r.resource.namespaced and r.supports("delete")]
        pods = [r for r in kinds if r.resource == PODS]
        for batch in (pods, [r for r in kinds if r.resource != PODS]):
            for api in batch:
                try:
                    left = await self._delete_kind(api, namespace)
                except (errors.StatusError, ServerUnreachable) as exc:
                    outcome.errors.append(f"{api.group_resource}: {exc}")
                    continue
                if left.count:
                    outcome.remaining[api.group_resource] = left
            if outcome.remaining:
                return outcome  # pods first: the rest waits until they are gone
        return outcome

    async def _delete_kind(self, api: APIResource, namespace: str) -> Remaining:
        resource = api.resource
        if api.supports("deletecollection") and api.group_resource not in self._no_deletecollection:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
            try:
                await self.metadata.request("DELETE", resource.path(namespace), body=body)
            except (errors.NotFound, errors.MethodNotAllowed):
                self._no_deletecollection.add(api.group_resource)
                await self._delete_each(api, namespace)
        else:
            await self._delete_each(api, namespace)
        if not api.supports("list"):
            return Remaining()
        items = [item async for item in self.metadata.iter_list(resource, namespace=namespace)]
        left = Remaining(count=len(items))
        for item in items:
            meta = item.get("metadata") or {}
            left.finalizers.update(meta.get("finalizers") or [])
            left.estimate = max(left.estimate, _seconds_until(meta.get("deletionTimestamp")))
        if items and not left.estimate:
            if not left.finalizers and not all((i.get("metadata") or {}).get("deletionTimestamp") for i in items):
                raise errors.InternalError(
                    f"unexpected items still remain in namespace: {namespace} for gvr: {resource.group}/"
                    f"{resource.version}, Resource={resource.plural}"
                )
            left.estimate = FINALIZER_ESTIMATE if left.finalizers else 1.0  # else: still terminating
        return left

    async def _delete_each(self, api: APIResource, namespace: str) -> None:
        if not api.supports("list"):
            return
        async for item in self.metadata.iter_list(api.resource, namespace=namespace):
            meta = item.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            try:
                await self.metadata.delete(
                    api.resource, meta["name"], namespace=namespace, propagation_policy="Background",
                    preconditions={"uid": meta["uid"]} if meta.get("uid") else None,
                )  # fmt: skip
            except (errors.NotFound, errors.Conflict):
                pass


class NamespaceController(Controller):
    name = "namespace"
    workers = 4

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.namespaces = self.watch(ctx.informers.informer(NAMESPACES))
        self.deleter = ContentDeleter(ctx.client, CachedDiscovery(ctx.client, ttl=2.0))
        self.waits = ItemExponentialFailureRateLimiter(0.2, 5.0)  # how soon to look at remaining content again

    async def reconcile(self, key: str) -> None:
        cached = self.namespaces.get(key)
        if cached is None or not cached["metadata"].get("deletionTimestamp"):
            self.waits.forget(key)
            return
        try:
            ns = await self.client.get(NAMESPACES, key)  # the latest: other finalizers may edit it too
        except errors.NotFound:
            return
        if not ns["metadata"].get("deletionTimestamp") or FINALIZER not in _spec_finalizers(ns):
            return
        ns = await self._ensure_terminating(ns)
        outcome = await self.deleter.delete_all(key)
        ns = await self._set_conditions(ns, outcome.conditions())
        if outcome.errors:
            delay = self.waits.when(key)
            self.log.warning("%s: deleting content of %s: %s (again in %.1fs)", self.name, key,
                             "; ".join(outcome.errors), delay)  # fmt: skip
            raise RequeueAfter(delay)
        if outcome.remaining:
            delay = min(self.waits.when(key), outcome.estimate / 2 + 1)
            self.log.debug("%s: %s still has content (%s); again in %.1fs", self.name, key,
                           ", ".join(sorted(outcome.remaining)), delay)  # fmt: skip
            raise RequeueAfter(delay)
        await self._finalize(ns)
        self.waits.forget(key)
        self.log.info("%s: namespace %s is empty and finalized", self.name, key)

    async def _ensure_terminating(self, ns: Obj) -> Obj:
        if (ns.get("status") or {}).get("phase") == "Terminating":
            return ns
        return await self._update_status(ns, lambda status: status.__setitem__("phase", "Terminating"))

    async def _set_conditions(self, ns: Obj, failing: dict[str, tuple[str, str]]) -> Obj:
        if updated_conditions((ns.get("status") or {}).get("conditions") or [], failing) is None:
            return ns

        def change(status: Obj) -> None:
            conditions = updated_conditions(status.get("conditions") or [], failing)
            if conditions is not None:
                status["conditions"] = conditions

        try:
            return await self._update_status(ns, change)
        except errors.StatusError as exc:  # conditions are a report: a failure to write one holds nothing up
            self.log.warning("%s: could not update the conditions of %s: %s", self.name, ns["metadata"]["name"], exc)
            return ns

    async def _update_status(self, ns: Obj, change: Callable[[Obj], None]) -> Obj:
        for _ in range(STATUS_ATTEMPTS):
            updated = copy.deepcopy(ns)
            change(updated.setdefault("status", {}))
            if updated == ns:
                return ns
            try:
                result: Obj = await self.client.update_status(NAMESPACES, updated)
                return result
            except errors.Conflict:
                latest = await self.client.get(NAMESPACES, ns["metadata"]["name"])
                if latest["metadata"].get("uid") != ns["metadata"].get("uid"):
                    raise errors.Conflict("namespace uid has changed across retries") from None
                ns = latest
        raise errors.Conflict(f"namespace {ns['metadata']['name']} kept changing")

    async def _finalize(self, ns: Obj) -> None:
        for _ in range(STATUS_ATTEMPTS):
            finalized = copy.deepcopy(ns)
            finalized.setdefault("spec", {})["finalizers"] = [f for f in _spec_finalizers(ns) if f != FINALIZER]
            try:
                await self.client.update(NAMESPACES, finalized, subresource="finalize")
                return
            except errors.NotFound:
                return  # finalized and removed by someone else
            except errors.Conflict:
                ns = await self.client.get(NAMESPACES, ns["metadata"]["name"])
        raise errors.Conflict(f"namespace {ns['metadata']['name']} kept changing")


def _spec_finalizers(ns: Obj) -> list[str]:
    return list((ns.get("spec") or {}).get("finalizers") or [])


def new(ctx: ControllerContext) -> NamespaceController:
    return NamespaceController(ctx)

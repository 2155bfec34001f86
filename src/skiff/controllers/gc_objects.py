"""The garbage collector's API calls: live reads and guarded writes of objects named by their identity.

The collector never trusts its caches to say that something is gone:
`LiveObjects.get` asks the server (an object under that name with another
uid does not exist for it). Every write is guarded so that it applies to the
incarnation the decision was made on: deletions carry uid and
resourceVersion preconditions (on a conflict the object is read again and,
if its owners did not change, deleted with the uid guard alone);
ownerReference and finalizer patches are merge patches carrying the
resourceVersion, retried a few times on conflicts. All calls go through the
metadata client, so they work for every kind, custom resources included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from skiff.api import errors
from skiff.client import RequeueAfter, Resource
from skiff.controllers.discovery import MetadataClient
from skiff.controllers.gc_graph import Meta, ObjectRef, Policy, finalizers, owner_refs

Obj = dict[str, Any]
RefList = list[dict[str, Any]]
PATCH_ATTEMPTS = 5


def meta_of(obj: Mapping[str, Any]) -> Meta:
    meta: Meta = obj.get("metadata") or {}
    return meta


class LiveObjects:
    """Reads and writes of the objects the collector decides about."""

    def __init__(self, metadata: MetadataClient, *, resolve: Callable[[str, str], Resource]) -> None:
        self.metadata = metadata
        self.resolve = resolve  # (apiVersion, kind) -> the served resource

    async def get(self, resource: Resource, identity: ObjectRef) -> Obj | None:
        """The object's metadata, or None if it does not exist (under that name with that uid)."""
        if resource.namespaced and not identity.namespace:
            return None  # a namespaced kind named without a namespace cannot exist
        namespace = identity.namespace if resource.namespaced else None
        try:
            obj = await self.metadata.get(resource, identity.name, namespace=namespace)
        except errors.NotFound:
            return None
        return obj if meta_of(obj).get("uid") == identity.uid else None

    async def delete(self, resource: Resource, identity: ObjectRef, latest: Obj, policy: Policy) -> bool:
        """Delete the object as `latest` shows it; False if it turned out to be gone already.

        Raises RequeueAfter(0) if its owners changed since `latest`: the decision must be made again.
        """
        namespace = identity.namespace if resource.namespaced else None
        preconditions = {"uid": identity.uid, "resourceVersion": str(meta_of(latest).get("resourceVersion") or "")}
        try:
            try:
                await self.metadata.delete(
                    resource, identity.name, namespace=namespace, propagation_policy=policy,
                    preconditions=preconditions,
                )  # fmt: skip
                return True
            except errors.Conflict:
                fresh = await self.get(resource, identity)
                if fresh is None:
                    return False
                if owner_refs(meta_of(fresh)) != owner_refs(meta_of(latest)):
                    raise RequeueAfter(0.0) from None  # its owners changed: decide again
                # changed, but not in who owns it: delete without the resourceVersion guard
                await self.metadata.delete(
                    resource, identity.name, namespace=namespace, propagation_policy=policy,
                    preconditions={"uid": identity.uid},
                )  # fmt: skip
                return True
        except errors.NotFound:
            return False

    async def patch_refs(self, resource: Resource, identity: ObjectRef, change: Callable[[RefList], RefList]) -> None:
        """Rewrite the object's ownerReferences (guarded by its uid and resourceVersion); gone is fine."""
        for _ in range(PATCH_ATTEMPTS):
            latest = await self.get(resource, identity)
            if latest is None:
                return
            meta = meta_of(latest)
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

    async def remove_finalizer(self, identity: ObjectRef, finalizer: str) -> None:
        for _ in range(PATCH_ATTEMPTS):
            resource = self.resolve(identity.api_version, identity.kind)
            latest = await self.get(resource, identity)
            if latest is None:
                return
            meta = meta_of(latest)
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

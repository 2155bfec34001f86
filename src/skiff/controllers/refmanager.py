"""Claiming objects by selector: adopt matching orphans, release owned objects that stopped matching.

A controller owns what carries its controller ownerReference, but its
selector is what the user wrote. Kubernetes' `ControllerRefManager`
(pkg/controller/controller_ref_manager.go) reconciles the two on every
sync, and so does `claim` here:

- owned by this controller and matching: kept;
- owned by this controller but no longer matching: released (the
  ownerReference is removed), unless the controller is being deleted;
- owned by another controller: left alone;
- an orphan that matches, is not being deleted, and lives in the
  controller's namespace: adopted (a controller ownerReference is added) —
  after one fresh read of the controller from the server confirms that it
  still exists with the same uid and is not being deleted, so that a
  controller deleted a moment ago does not adopt pods the garbage
  collector is about to orphan or delete.

The patches are strategic merge patches keyed by ownerReference uid that
also carry the object's uid, so they apply to this incarnation of the
object or fail (Kubernetes sends the same patches).

The informer handlers' side of the same rules is `OwnerEnqueuer`: which
controllers a change of a child concerns, so that they claim it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from skiff.api import errors
from skiff.api.selectors import LabelSelector
from skiff.client import Client, Informer, Resource, controller_owner, object_key

Obj = dict[str, Any]
log = logging.getLogger(__name__)

BY_NAMESPACE = "namespace"  # the owners' informer index that `OwnerEnqueuer` looks candidates up in


class RefManager:
    """Claims objects of `resource` for one controller object (`owner`, as read from the cache)."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        owner: Obj,
        owner_resource: Resource,
        match: Callable[[Obj], bool],
    ) -> None:
        self.client = client
        self.resource = resource
        self.owner = owner
        self.owner_resource = owner_resource
        self.match = match
        meta = owner.get("metadata") or {}
        self.uid: str = meta.get("uid", "")
        self.namespace: str | None = meta.get("namespace")
        self.deleting = bool(meta.get("deletionTimestamp"))
        self._adoption_checked: Exception | bool | None = False  # False: not yet; None: fine; else the error

    def owner_ref(self) -> Obj:
        meta = self.owner.get("metadata") or {}
        return {
            "apiVersion": self.owner_resource.api_version,
            "kind": self.owner_resource.kind,
            "name": meta.get("name", ""),
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    async def claim(self, objs: Iterable[Obj]) -> list[Obj]:
        """The objects this controller owns after adopting and releasing; raises the first error at the end."""
        claimed: list[Obj] = []
        first_error: Exception | None = None
        for obj in objs:
            try:
                got = await self._claim_one(obj)
            except errors.NotFound:
                continue
            except Exception as exc:
                first_error = first_error or exc
                continue
            if got is not None:
                claimed.append(got)
        if first_error is not None:
            raise first_error
        return claimed

    async def _claim_one(self, obj: Obj) -> Obj | None:
        meta = obj.get("metadata") or {}
        ref = controller_owner(obj)
        if ref is not None:
            if ref.get("uid") != self.uid:
                return None
            if self.match(obj):
                return obj
            if not self.deleting:
                await self.release(obj)
            return None
        if self.deleting or not self.match(obj) or meta.get("deletionTimestamp"):
            return None
        if self.namespace and meta.get("namespace") != self.namespace:
            return None
        return await self.adopt(obj)

    async def _can_adopt(self) -> None:
        """One fresh read of the owner per claim: it must still be this uid and not being deleted."""
        if self._adoption_checked is False:
            meta = self.owner.get("metadata") or {}
            kind = self.owner_resource.kind
            try:
                fresh = await self.client.get(self.owner_resource, meta.get("name", ""), namespace=self.namespace)
            except errors.NotFound:
                self._adoption_checked = errors.Conflict(f"{kind} {meta.get('name')} is gone: cannot adopt")
            else:
                fmeta = fresh.get("metadata") or {}
                if fmeta.get("uid") != self.uid:
                    self._adoption_checked = errors.Conflict(
                        f"original {kind} {self.namespace}/{meta.get('name')} is gone: "
                        f"got uid {fmeta.get('uid')}, wanted {self.uid}"
                    )
                elif fmeta.get("deletionTimestamp"):
                    when = fmeta["deletionTimestamp"]
                    self._adoption_checked = errors.Conflict(
                        f"{kind} {self.namespace}/{meta.get('name')} has just been deleted at {when}"
                    )
                else:
                    self._adoption_checked = None
        if isinstance(self._adoption_checked, Exception):
            raise self._adoption_checked

    async def adopt(self, obj: Obj) -> Obj:
        await self._can_adopt()
        meta = obj["metadata"]
        patch = {"metadata": {"ownerReferences": [self.owner_ref()], "uid": meta.get("uid")}}
        log.debug("adopting %s %s/%s", self.resource.kind, meta.get("namespace"), meta.get("name"))
        return await self.client.patch(
            self.resource, meta["name"], patch, namespace=meta.get("namespace"), patch_type="strategic"
        )

    async def release(self, obj: Obj) -> None:
        meta = obj["metadata"]
        patch = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": self.uid}], "uid": meta.get("uid")}}
        log.debug("releasing %s %s/%s", self.resource.kind, meta.get("namespace"), meta.get("name"))
        try:
            await self.client.patch(
                self.resource, meta["name"], patch, namespace=meta.get("namespace"), patch_type="strategic"
            )
        except errors.Invalid:
            pass  # the object was deleted and recreated (another uid): nothing of ours to release


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


class OwnerEnqueuer:
    """Which controllers a change of a child concerns: a child's informer handlers enqueue them through this.

    A child (a ReplicaSet's pod, a Deployment's ReplicaSet) concerns the controller its controller
    ownerReference names, if the owners' cache holds that controller with that uid; an orphan
    concerns every controller of its namespace whose selector matches its labels, since any of them
    may adopt it. When a child's controller reference changes, the old controller and the new one
    (or, for a child orphaned, the ones that may adopt it) are concerned: Kubernetes' updatePod
    (ReplicaSet) and updateReplicaSet (Deployment). `owners` must have the `BY_NAMESPACE` index.
    """

    def __init__(
        self,
        owners: Informer,
        *,
        kind: str,
        api_group: str | None = None,
        selector_of: Callable[[Obj], LabelSelector],
        enqueue: Callable[[str], None],
    ) -> None:
        self.owners = owners
        self.kind = kind
        self.api_group = api_group  # None: a controller reference of `kind` in any group
        self.selector_of = selector_of
        self.enqueue = enqueue

    def owner_key(self, child: Obj) -> str | None:
        """The key of the controller of `child`, if the cache knows it (same uid)."""
        ref = controller_owner(child, self.kind)
        if ref is None:
            return None
        if self.api_group is not None and not ref.get("apiVersion", "").startswith(f"{self.api_group}/"):
            return None
        key = f"{child['metadata'].get('namespace')}/{ref.get('name')}"
        owner = self.owners.get(key)
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def enqueue_owner(self, child: Obj) -> str | None:
        """Enqueue the controller of `child` if the cache knows it; its key."""
        key = self.owner_key(child)
        if key is not None:
            self.enqueue(key)
        return key

    def enqueue_matching(self, child: Obj) -> None:
        """An orphan: every controller in its namespace whose selector matches it may adopt it."""
        labels = _labels(child)
        if not labels:
            return
        for owner in self.owners.by_index(BY_NAMESPACE, (child.get("metadata") or {}).get("namespace", "")):
            if self.selector_of(owner).matches(labels):
                self.enqueue(object_key(owner))

    def child_updated(self, old: Obj, new: Obj) -> None:
        """Enqueue the controllers a change of a (live) child from `old` to `new` concerns."""
        old_ref, new_ref = controller_owner(old), controller_owner(new)
        if old_ref != new_ref and old_ref is not None:
            self.enqueue_owner(old)  # released, or taken over: the old controller counts it out
        if new_ref is not None:
            self.enqueue_owner(new)
            return
        if _labels(old) != _labels(new) or old_ref != new_ref:
            self.enqueue_matching(new)

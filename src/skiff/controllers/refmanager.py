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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from skiff.api import errors
from skiff.client import Client, Resource, controller_owner

Obj = dict[str, Any]
log = logging.getLogger(__name__)


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

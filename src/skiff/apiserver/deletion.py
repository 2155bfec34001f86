"""Deletion as Kubernetes does it: preconditions, finalizers, propagation and grace.

An object with finalizers (or one its strategy says must wait, such as a
namespace with content or a pod still running on a node) is not removed: it
gets a `deletionTimestamp` and stays until the finalizers are gone, which
the update path in `store.py` notices. `Orphan` and `Foreground`
propagation add the `orphan` / `foregroundDeletion` finalizers for the
garbage collector to act on. Everything else is deleted at once, guarded by
the revision that was read.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from skiff.api import errors
from skiff.apiserver import objects
from skiff.apiserver.admission_plugins.chain import Attributes
from skiff.apiserver.objects import Obj
from skiff.apiserver.options import PATCH_RETRIES, DeleteOptions, ListOptions, conflict, strategy_of
from skiff.apiserver.registry import ResourceType
from skiff.storage.interface import KeyNotFoundError, KeyValue, RevisionConflictError

if TYPE_CHECKING:
    from skiff.apiserver.store import Store

POLICIES = (None, "", "Background", "Foreground", "Orphan")


async def delete(
    store: Store, rt: ResourceType, namespace: str | None, name: str, opts: DeleteOptions
) -> tuple[Obj, bool]:
    """Delete or begin deleting; returns (object or Status, deleted now)."""
    _check_policy(opts)
    refused = strategy_of(rt).refuse_delete(name)
    if refused is not None:  # as Kubernetes' REST.Delete overrides: deletecollection does not ask
        raise errors.Forbidden(
            f'{rt.group_resource} "{name}" is forbidden: {refused}', name=name, group=rt.group or None, kind=rt.plural
        )
    return await _delete(store, rt, namespace, name, opts)


def _check_policy(opts: DeleteOptions) -> None:
    if opts.propagation_policy not in POLICIES:
        raise errors.BadRequest(
            f'propagationPolicy: Unsupported value: "{opts.propagation_policy}": supported values: '
            '"Background", "Foreground", "Orphan"'
        )


async def _delete(
    store: Store, rt: ResourceType, namespace: str | None, name: str, opts: DeleteOptions
) -> tuple[Obj, bool]:
    _check_policy(opts)
    for _attempt in range(PATCH_RETRIES):
        kv = await store.get_kv(rt, namespace, name)
        obj = objects.decode(rt, kv)
        _check_preconditions(rt, name, obj, opts)
        if store.admission_chain is not None:  # NodeRestriction: a node deletes only its own pods
            await store.admission_chain.validate(Attributes("DELETE", rt, obj, obj, dry_run=opts.dry_run,
                                                            user=opts.user))  # fmt: skip
        try:
            return await _delete_once(store, rt, kv, obj, opts)
        except (RevisionConflictError, KeyNotFoundError):
            continue
    raise conflict(rt, name, "too many concurrent changes; please try again")


def _check_preconditions(rt: ResourceType, name: str, obj: Obj, opts: DeleteOptions) -> None:
    meta = obj["metadata"]
    pre = opts.preconditions or {}
    group = rt.group or None
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise errors.Conflict(
            f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
            name=name,
            group=group,
            kind=rt.plural,
        )
    if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]:
        raise errors.Conflict(
            f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
            f"ResourceVersion in object meta: {meta['resourceVersion']}",
            name=name,
            group=group,
            kind=rt.plural,
        )


def _finalizers_for(current: list[str], policy: str | None) -> list[str]:
    finalizers = list(current)
    if policy == "Orphan" and "orphan" not in finalizers:
        finalizers.append("orphan")
    elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
        finalizers.append("foregroundDeletion")
    if policy in ("Background", "Foreground"):
        finalizers = [f for f in finalizers if f != "orphan"]
    return finalizers


async def _delete_once(store: Store, rt: ResourceType, kv: KeyValue, obj: Obj, opts: DeleteOptions) -> tuple[Obj, bool]:
    strategy = strategy_of(rt)
    meta = obj["metadata"]
    updated = copy.deepcopy(obj)
    umeta = updated["metadata"]
    must_wait = strategy.begin_delete(updated)  # may add a finalizer of its own (CRDs)
    finalizers = _finalizers_for(umeta.get("finalizers") or [], opts.propagation_policy)
    grace = strategy.grace_period(obj, opts.grace_period_seconds)
    if not finalizers and not must_wait and grace == 0:
        if not opts.dry_run:
            deleted = await store.backend.delete(kv.key, kv.mod_revision)
            meta["resourceVersion"] = str(deleted.mod_revision)
            await strategy.after_delete(obj)
        return deleted_result(rt, obj), True
    if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
        return obj, False  # already being deleted; nothing new to record
    if not umeta.get("deletionTimestamp"):
        when = datetime.now(UTC) + timedelta(seconds=grace)
        umeta["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        umeta["deletionGracePeriodSeconds"] = grace
        if "generation" in umeta:
            umeta["generation"] += 1
    umeta["finalizers"] = finalizers
    if not finalizers:
        umeta.pop("finalizers")
    if opts.dry_run:
        return updated, False
    new_kv = await store.backend.update(kv.key, objects.encode(rt, updated), kv.mod_revision)
    umeta["resourceVersion"] = str(new_kv.mod_revision)
    return updated, False


def deleted_result(rt: ResourceType, obj: Obj) -> Obj:
    """What a DELETE answers: the object for kinds that say so (pods), else a Success Status."""
    if strategy_of(rt).return_deleted_object:
        return obj
    meta = obj.get("metadata", {})
    details: Obj = {"name": meta.get("name"), "kind": rt.plural, "uid": meta.get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


async def delete_collection(
    store: Store, rt: ResourceType, namespace: str | None, list_opts: ListOptions, opts: DeleteOptions
) -> Obj:
    listed = await store.list(rt, namespace, list_opts)
    items = []
    for obj in listed["items"]:
        meta = obj["metadata"]
        try:
            result, _ = await _delete(store, rt, meta.get("namespace"), meta["name"], opts)
        except errors.NotFound:
            continue
        items.append(result if result.get("kind") != "Status" else obj)
    return objects.list_object(rt, items, int(listed["metadata"]["resourceVersion"]))

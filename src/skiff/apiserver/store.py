"""The generic store: every REST verb written once, for every kind.

Like Kubernetes' `registry/generic/registry/store.go`: create, get, list,
update, patch, delete (with finalizers, grace and propagation) and
deletecollection over the storage backend, with a `Strategy` per kind for
what differs. Nothing is written unless every check passed; conflicts on the
storage revision become 409s, history that is gone becomes 410.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from skiff.api import errors, fieldselectors, selectors, validation
from skiff.apiserver import admission, objects
from skiff.apiserver.objects import Obj
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.strategy import Strategy
from skiff.storage.interface import (
    Backend,
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
)

NAMESPACES = ("", "v1", "namespaces")
PATCH_RETRIES = 8


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore (Kubernetes' default when unset is Warn)
    field_manager: str = ""
    user: Any = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListOptions:
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    preconditions: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False


def strategy_of(rt: ResourceType) -> Strategy:
    return rt.strategy or Strategy()


def not_found(rt: ResourceType, name: str) -> errors.NotFound:
    return errors.NotFound(
        f'{rt.group_resource} "{name}" not found', name=name, group=rt.group or None, kind=rt.plural
    )


def conflict(rt: ResourceType, name: str, why: str) -> errors.Conflict:
    return errors.Conflict(
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
        name=name,
        group=rt.group,
        kind=rt.plural,
    )


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


class Store:
    def __init__(self, backend: Backend, registry: Registry) -> None:
        self.backend = backend
        self.registry = registry

    # ------------------------------------------------------------------ reads
    async def get_kv(self, rt: ResourceType, namespace: str | None, name: str) -> KeyValue:
        kv = await self.backend.get(rt.key(namespace, name))
        if kv is None:
            raise not_found(rt, name)
        return kv

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return objects.decode(rt, await self.get_kv(rt, namespace, name))

    async def list(self, rt: ResourceType, namespace: str | None, opts: ListOptions) -> Obj:
        strategy = strategy_of(rt)
        labels = selectors.parse_label_selector(opts.label_selector)
        fields = fieldselectors.parse_field_selector(opts.field_selector, strategy.selectable_fields)
        prefix = rt.prefix(namespace)
        revision = 0
        start: str | None = None
        if opts.continue_token:
            revision, start = objects.decode_continue(opts.continue_token, prefix)
        elif opts.resource_version and opts.resource_version_match == "Exact":
            revision = objects.parse_resource_version(opts.resource_version)
        elif opts.resource_version:
            objects.parse_resource_version(opts.resource_version)
            if opts.resource_version_match not in ("", "NotOlderThan"):
                raise errors.BadRequest(
                    f'resourceVersionMatch: Unsupported value: "{opts.resource_version_match}": '
                    'supported values: "Exact", "NotOlderThan"'
                )
        unfiltered = labels.empty() and fields.empty()
        want = max(opts.limit, 0)
        items: list[Obj] = []
        more = False
        last_key = ""
        count = 0
        while True:
            chunk = 0
            if want:
                chunk = want - len(items) if unfiltered else max(want - len(items), 100)
            res = await self._list_chunk(prefix, revision, chunk, start, opts)
            revision = res.revision
            count = count or res.count
            for kv in res.items:
                if want and len(items) >= want:
                    more = True
                    break
                last_key = kv.key
                obj = objects.decode(rt, kv)
                if unfiltered or self._matches(strategy, labels, fields, obj):
                    items.append(obj)
            else:
                if res.more and res.items and (not want or len(items) < want):
                    start = res.items[-1].key + "\x00"
                    continue
                more = res.more
            break
        cont = objects.encode_continue(revision, last_key + "\x00") if more else ""
        remaining = None
        if more and unfiltered and count and not opts.continue_token:
            remaining = max(count - len(items), 0)
        return objects.list_object(rt, items, revision, cont, remaining)

    async def _list_chunk(
        self, prefix: str, revision: int, limit: int, start: str | None, opts: ListOptions
    ) -> ListResult:
        try:
            return await self.backend.list(prefix, revision=revision, limit=limit, start_key=start)
        except CompactedError:
            if opts.continue_token:
                raise errors.Gone(
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter."
                ) from None
            raise errors.Gone(f"The resourceVersion for the provided list is too old: {revision}") from None
        except FutureRevisionError:
            current = await self.backend.current_revision()
            raise errors.Timeout(
                f"Too large resource version: {revision}, current: {current}", retry_after=1
            ) from None

    @staticmethod
    def _matches(strategy: Strategy, labels: Any, fields: Any, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if not labels.matches(meta.get("labels") or {}):
            return False
        return bool(fields.empty() or fields.matches(strategy.field_attrs(obj)))

    def matcher(self, rt: ResourceType, label_selector: str, field_selector: str) -> Any:
        """A predicate over objects for watches; validates the selectors (400 on error)."""
        strategy = strategy_of(rt)
        labels = selectors.parse_label_selector(label_selector)
        fields = fieldselectors.parse_field_selector(field_selector, strategy.selectable_fields)
        if labels.empty() and fields.empty():
            return None
        return lambda obj: self._matches(strategy, labels, fields, obj)

    # ----------------------------------------------------------------- create
    async def create(self, rt: ResourceType, namespace: str | None, body: Obj, opts: WriteOptions) -> Obj:
        strategy = strategy_of(rt)
        obj = admission.check_type_meta(rt, body)
        meta = obj["metadata"]
        if rt.namespaced:
            ns = meta.get("namespace") or namespace
            if namespace and ns != namespace:
                raise errors.BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if strategy.create_only:
            return admission.answer_virtual(rt, obj, opts.user)
        admission.default_and_validate_schema(rt, obj, opts)
        if rt.namespaced and meta.get("namespace"):
            # Kubernetes' NamespaceLifecycle admission: before name generation and validation
            await self._check_namespace(meta["namespace"], rt, meta.get("name") or "")
        generate = not meta.get("name") and meta.get("generateName")
        if generate:
            meta["name"] = validation.generate_name(meta["generateName"])
        for key in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = objects.new_uid()
        meta["creationTimestamp"] = objects.now_rfc3339()
        admission.omit_empty_metadata(obj)
        strategy.prepare_for_create(obj)
        admission.validate(rt, obj, strategy.validate(obj))
        for attempt in range(5):
            if opts.dry_run:
                if await self.backend.get(rt.key(meta.get("namespace"), meta["name"])) is not None:
                    raise self._exists(rt, meta["name"])
                return obj
            try:
                kv = await self.backend.create(
                    rt.key(meta.get("namespace"), meta["name"]), objects.encode(rt, obj)
                )
            except KeyExistsError:
                if generate and attempt < 4:
                    meta["name"] = validation.generate_name(meta["generateName"])
                    continue
                raise self._exists(rt, meta["name"]) from None
            meta["resourceVersion"] = str(kv.mod_revision)
            return obj
        raise errors.InternalError("could not generate a unique name")  # pragma: no cover

    @staticmethod
    def _exists(rt: ResourceType, name: str) -> errors.AlreadyExists:
        return errors.AlreadyExists(
            f'{rt.group_resource} "{name}" already exists', name=name, group=rt.group or None, kind=rt.plural
        )

    async def _check_namespace(self, namespace: str, rt: ResourceType, name: str) -> None:
        ns_rt = self.registry.get(*NAMESPACES)
        assert ns_rt is not None
        kv = await self.backend.get(ns_rt.key(None, namespace))
        if kv is None:
            raise errors.NotFound(f'namespaces "{namespace}" not found', name=namespace, kind="namespaces")
        ns = objects.decode(ns_rt, kv)
        if ns["metadata"].get("deletionTimestamp"):
            what = f'{rt.group_resource} "{name}"' if name else rt.group_resource
            raise errors.Forbidden(
                f"{what} is forbidden: unable to create new content in namespace {namespace} "
                "because it is being terminated",
                name=name or None,
                group=rt.group or None,
                kind=rt.plural,
            )

    # ----------------------------------------------------------------- update
    async def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj,
        opts: WriteOptions,
        *,
        subresource: str = "",
    ) -> Obj:
        obj = admission.check_type_meta(rt, body)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.BadRequest(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        kv = await self.get_kv(rt, namespace, name)
        wanted = meta.get("resourceVersion")
        if wanted:
            objects.parse_resource_version(wanted)
            if int(wanted) != kv.mod_revision:
                raise conflict(rt, name, MODIFIED)
        return await self._write(rt, kv, obj, opts, subresource=subresource)

    async def _write(
        self, rt: ResourceType, kv: KeyValue, obj: Obj, opts: WriteOptions, *, subresource: str = "",
        patched: bool = False,
    ) -> Obj:
        """Check and write `obj` over the stored `kv`; raises RevisionConflictError if it moved."""
        strategy = strategy_of(rt)
        old = objects.decode(rt, kv)
        if subresource == "status":
            obj = strategy.prepare_for_status_update(obj, old)
        else:
            admission.default_and_validate_schema(rt, obj, opts, patched=patched)
            admission.omit_empty_metadata(obj)
        meta, old_meta = obj["metadata"], old["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if rt.namespaced:
            meta["namespace"] = old_meta.get("namespace")
        if subresource != "status":
            strategy.prepare_for_update(obj, old)
            admission.validate(rt, obj, strategy.validate_update(obj, old))
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise admission.invalid(
                    rt,
                    obj,
                    [
                        (
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            f"Forbidden: no new finalizers can be added if the object is being deleted, "
                            f"found new finalizers {sorted(added)!r}",
                        )
                    ],
                )
        meta["resourceVersion"] = str(kv.mod_revision)
        if obj == old:
            return old  # a no-op update writes nothing, as in Kubernetes
        if opts.dry_run:
            return obj
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and self._deletable_now(rt, obj):
            deleted = await self.backend.delete(kv.key, kv.mod_revision)
            meta["resourceVersion"] = str(deleted.mod_revision)
            return obj
        new_kv = await self.backend.update(kv.key, objects.encode(rt, obj), kv.mod_revision)
        meta["resourceVersion"] = str(new_kv.mod_revision)
        return obj

    @staticmethod
    def _deletable_now(rt: ResourceType, obj: Obj) -> bool:
        """An object whose finalizers are gone is removed, unless it is a pod still in its grace period."""
        if rt.kind == "Pod" and rt.group == "" and (obj.get("spec") or {}).get("nodeName"):
            return bool(obj["metadata"].get("deletionGracePeriodSeconds", 0) == 0)
        return True

    # ------------------------------------------------------------------ patch
    async def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        opts: WriteOptions,
        *,
        subresource: str = "",
        force: bool = False,
    ) -> tuple[Obj, bool]:
        """Apply a patch with retries on conflict; returns (object, created)."""
        from skiff.apiserver import patching

        for _attempt in range(PATCH_RETRIES):
            kv = await self.backend.get(rt.key(namespace, name))
            if kv is None:
                if patch_type == patching.APPLY and not subresource:
                    body = patching.apply_to(rt, None, patch)
                    body.setdefault("metadata", {})["name"] = name
                    return await self.create(rt, namespace, body, opts), True
                raise not_found(rt, name)
            current = objects.decode(rt, kv)
            patched = patching.apply(rt, current, patch_type, patch)
            if not isinstance(patched, dict):
                raise errors.BadRequest("the patch did not produce an object")
            pmeta = patched.setdefault("metadata", {})
            if not isinstance(pmeta, dict):
                raise errors.BadRequest("metadata must be an object")
            wanted = pmeta.get("resourceVersion")
            if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name, MODIFIED)
            if pmeta.get("name", name) != name:
                raise errors.BadRequest(
                    f"the name of the object ({pmeta.get('name')}) does not match the name on the URL ({name})"
                )
            if pmeta.get("uid", current["metadata"].get("uid")) != current["metadata"].get("uid"):
                raise errors.Conflict(
                    f"Precondition failed: UID in precondition: {pmeta.get('uid')}, "
                    f"UID in object meta: {current['metadata'].get('uid')}"
                )
            pmeta["name"] = name
            try:
                return await self._write(rt, kv, patched, opts, subresource=subresource, patched=True), False
            except RevisionConflictError:
                if wanted:
                    raise conflict(rt, name, MODIFIED) from None
                continue
        raise conflict(rt, name, "too many concurrent changes; please try again")

    # ----------------------------------------------------------------- delete
    async def delete(
        self, rt: ResourceType, namespace: str | None, name: str, opts: DeleteOptions
    ) -> tuple[Obj, bool]:
        """Delete or begin deleting; returns (object or Status, deleted now)."""
        for _attempt in range(PATCH_RETRIES):
            kv = await self.get_kv(rt, namespace, name)
            obj = objects.decode(rt, kv)
            meta = obj["metadata"]
            pre = opts.preconditions or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.Conflict(
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
                    name=name,
                    group=rt.group or None,
                    kind=rt.plural,
                )
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]:
                raise errors.Conflict(
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                    name=name,
                    group=rt.group or None,
                    kind=rt.plural,
                )
            try:
                return await self._delete_once(rt, kv, obj, opts)
            except (RevisionConflictError, KeyNotFoundError):
                continue
        raise conflict(rt, name, "too many concurrent changes; please try again")

    async def _delete_once(
        self, rt: ResourceType, kv: KeyValue, obj: Obj, opts: DeleteOptions
    ) -> tuple[Obj, bool]:
        meta = obj["metadata"]
        updated = copy.deepcopy(obj)
        umeta = updated["metadata"]
        finalizers = list(umeta.get("finalizers") or [])
        policy = opts.propagation_policy
        if policy not in (None, "", "Background", "Foreground", "Orphan"):
            raise errors.BadRequest(
                f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                '"Background", "Foreground", "Orphan"'
            )
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy in ("Background", "Foreground"):
            finalizers = [f for f in finalizers if f != "orphan" or policy == "Orphan"]
        if rt.kind == "Namespace" and rt.group == "" and (updated.get("spec") or {}).get("finalizers"):
            updated.setdefault("status", {})["phase"] = "Terminating"
            finalizers = finalizers or []
            pending_spec = True
        else:
            pending_spec = False
        grace = self._grace(rt, obj, opts)
        if not finalizers and not pending_spec and grace == 0:
            if opts.dry_run:
                return self._deleted_result(rt, obj), True
            deleted = await self.backend.delete(kv.key, kv.mod_revision)
            meta["resourceVersion"] = str(deleted.mod_revision)
            return self._deleted_result(rt, obj), True
        if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
            return obj, False  # already being deleted; nothing new to record
        now = datetime.now(UTC)
        if not umeta.get("deletionTimestamp"):
            umeta["deletionTimestamp"] = (now + timedelta(seconds=grace)).strftime("%Y-%m-%dT%H:%M:%SZ")
            umeta["deletionGracePeriodSeconds"] = grace
            if "generation" in umeta:
                umeta["generation"] += 1
        umeta["finalizers"] = finalizers
        if not finalizers:
            umeta.pop("finalizers")
        if opts.dry_run:
            return updated, False
        new_kv = await self.backend.update(kv.key, objects.encode(rt, updated), kv.mod_revision)
        umeta["resourceVersion"] = str(new_kv.mod_revision)
        return updated, False

    @staticmethod
    def _grace(rt: ResourceType, obj: Obj, opts: DeleteOptions) -> int:
        """Only pods bound to a node wait out a grace period (the node agent ends them)."""
        if not (rt.kind == "Pod" and rt.group == ""):
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return 0
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return 0
        if opts.grace_period_seconds is not None:
            return max(int(opts.grace_period_seconds), 0)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    @staticmethod
    def _deleted_result(rt: ResourceType, obj: Obj) -> Obj:
        if rt.extra.get("return_deleted_object", rt.kind in ("Pod", "Namespace")):
            return obj
        meta = obj.get("metadata", {})
        details: Obj = {"name": meta.get("name"), "kind": rt.plural, "uid": meta.get("uid")}
        if rt.group:
            details["group"] = rt.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    async def delete_collection(
        self, rt: ResourceType, namespace: str | None, list_opts: ListOptions, opts: DeleteOptions
    ) -> Obj:
        listed = await self.list(rt, namespace, list_opts)
        items = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            try:
                result, _ = await self.delete(rt, meta.get("namespace"), meta["name"], opts)
            except errors.NotFound:
                continue
            items.append(result if result.get("kind") != "Status" else obj)
        return objects.list_object(rt, items, int(listed["metadata"]["resourceVersion"]))

"""The generic store: every REST verb written once, for every kind.

Like Kubernetes' `registry/generic/registry/store.go`: create, get, list,
update, patch, delete (with finalizers, grace and propagation) and
deletecollection over the storage backend, with a `Strategy` per kind for
what differs. Nothing is written unless every check passed; conflicts on the
storage revision become 409s, history that is gone becomes 410.

Reads are consistent reads from the watch cache when there is one (see
`watchcache`): gets, the reads before a write, the namespace check of a
create and unpaginated lists wait until the cache has caught up with
storage's current revision, then answer from memory. So are paginated
lists (`storelist`): the first page at the cache's revision, the later ones (and
`resourceVersionMatch=Exact`) at the list's revision while the cache's
event window reaches back to it (`cachelist`); older ones read storage,
which answers the same or 410 Expired once compacted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

from skiff.api import errors, validation
from skiff.apiserver import admission, deletion, objects, ownership, storelist
from skiff.apiserver.admission_plugins.chain import Attributes, Chain
from skiff.apiserver.objects import Obj
from skiff.apiserver.options import (
    MODIFIED,
    NAMESPACES,
    PATCH_RETRIES,
    DeleteOptions,
    ListOptions,
    WriteOptions,
    conflict,
    not_found,
    strategy_of,
)
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.strategy import Finish
from skiff.apiserver.watchcache import WatchCache
from skiff.storage.interface import (
    Backend,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
)


class Store:
    def __init__(self, backend: Backend, registry: Registry, cache: WatchCache | None = None) -> None:
        self.backend = backend
        self.registry = registry
        self.cache = cache
        self._terminating: dict[str, tuple[int, bool]] = {}  # namespace key -> (mod_revision, being deleted)
        # admission plugins (Priority, DefaultTolerationSeconds…); set once the app has built them
        self.admission_chain: Chain | None = None
        # answers the authorization.k8s.io reviews (access_review.AccessReviews); set by the server
        self.access_reviews: Callable[[ResourceType, Obj, Any], Awaitable[Obj]] | None = None

    # ------------------------------------------------------------------ reads
    async def read(self, key: str) -> KeyValue | None:
        """The current value of `key`: from the watch cache once it has caught up, else from storage."""
        cache = self.cache
        if cache is not None and await cache.wait_fresh():
            return cache.get_current(key)
        return await self.backend.get(key)

    async def get_kv(self, rt: ResourceType, namespace: str | None, name: str) -> KeyValue:
        kv = await self.read(rt.key(namespace, name))
        if kv is None:
            raise not_found(rt, name)
        return kv

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return objects.decode(rt, await self.get_kv(rt, namespace, name))

    async def list(self, rt: ResourceType, namespace: str | None, opts: ListOptions, *, encoded: bool = False) -> Obj:
        """The list `opts` ask for (`storelist`). `encoded`: for a JSON answer -- items may be the stored bytes
        as they would be answered (`storedjson`), orjson Fragments, instead of decoded objects."""
        return await storelist.list_objects(self.backend, self.cache, rt, namespace, opts, encoded=encoded)

    @staticmethod
    def matcher(rt: ResourceType, label_selector: str, field_selector: str) -> Any:
        """A predicate over objects for watches (`storelist.matcher`); validates the selectors (400 on error)."""
        return storelist.matcher(rt, label_selector, field_selector)

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
            if self.access_reviews is not None:
                return await self.access_reviews(rt, obj, opts.user)
            return admission.answer_virtual(rt, obj, opts.user)
        admission.default_and_validate_schema(rt, obj, opts)
        if rt.namespaced and meta.get("namespace"):
            # Kubernetes' NamespaceLifecycle admission: before name generation and validation
            await self._check_namespace(meta["namespace"], rt, meta.get("name") or "")
        admission.omit_empty_metadata(obj)
        # what the request sent is its manager's, before admission adds to it (as Kubernetes' create handler)
        if opts.apply is not None:
            ownership.apply(rt, None, obj, opts)
        else:
            ownership.track(rt, None, obj, opts)
        chain = self.admission_chain
        if chain is not None:
            await chain.admit(Attributes("CREATE", rt, obj, dry_run=opts.dry_run, user=opts.user))
        generate = not meta.get("name") and meta.get("generateName")
        if generate:
            meta["name"] = validation.generate_name(meta["generateName"])
        for key in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = objects.new_uid()
        meta["creationTimestamp"] = objects.now_rfc3339()
        admission.omit_empty_metadata(obj)
        strategy.prepare_for_create(obj)
        strategy.record_requester(obj, opts.user)
        admission.validate(rt, obj, strategy.validate(obj))
        await strategy.authorize_write(obj, None, opts.user)
        if chain is not None:
            await chain.validate(Attributes("CREATE", rt, obj, dry_run=opts.dry_run, user=opts.user))
        finish = await strategy.begin_create(obj, dry_run=opts.dry_run)
        return await self._finishing(finish, self._store_new(rt, obj, opts, bool(generate)))

    @staticmethod
    async def _finishing(finish: Finish | None, write: Coroutine[Any, Any, Obj]) -> Obj:
        """Run `write`, then end what a strategy's begin_* hook started (allocations) as the write ended."""
        if finish is None:
            return await write
        try:
            result = await write
        except (errors.StatusError, KeyExistsError, KeyNotFoundError, RevisionConflictError):
            await finish(False)  # certainly not stored
            raise
        # any other failure (storage unreachable, the request cancelled) leaves the outcome unknown:
        # nothing is released here, the strategy's repair pass (Services: service_repair) settles it
        await finish(True)
        return result

    async def _store_new(self, rt: ResourceType, obj: Obj, opts: WriteOptions, generate: bool) -> Obj:
        meta = obj["metadata"]
        for attempt in range(5):
            if opts.dry_run:
                if await self.read(rt.key(meta.get("namespace"), meta["name"])) is not None:
                    raise self._exists(rt, meta["name"])
                return obj
            try:
                kv = await self.backend.create(rt.key(meta.get("namespace"), meta["name"]), objects.encode(rt, obj))
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
        kv = await self.read(ns_rt.key(None, namespace))
        if kv is None:
            raise errors.NotFound(f'namespaces "{namespace}" not found', name=namespace, kind="namespaces")
        known = self._terminating.get(kv.key)
        if known is None or known[0] != kv.mod_revision:  # decode each namespace version once, not per create
            if len(self._terminating) >= 10_000:
                self._terminating.clear()
            known = self._terminating[kv.key] = (
                kv.mod_revision,
                bool(objects.decode(ns_rt, kv)["metadata"].get("deletionTimestamp")),
            )
        if known[1]:
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
        wanted = meta.get("resourceVersion")
        if wanted:
            objects.parse_resource_version(wanted)
        for _attempt in range(PATCH_RETRIES):
            kv = await self.get_kv(rt, namespace, name)
            if wanted and int(wanted) != kv.mod_revision:
                raise conflict(rt, name, MODIFIED)
            # the write fills in fields from the stored object: a retry starts again from the body as sent
            attempt = obj if wanted else objects.loads(objects.dumps(obj))
            try:
                return await self._write(rt, kv, attempt, opts, subresource=subresource)
            except RevisionConflictError:
                # the object moved between the read and the write (as in Kubernetes' GuaranteedUpdate):
                # with a resourceVersion precondition that is a 409, without one read again and retry
                if wanted:
                    raise conflict(rt, name, MODIFIED) from None
        raise conflict(rt, name, "too many concurrent changes; please try again")

    async def _write(
        self,
        rt: ResourceType,
        kv: KeyValue,
        obj: Obj,
        opts: WriteOptions,
        *,
        subresource: str = "",
        patched: bool = False,
    ) -> Obj:
        """Check and write `obj` over the stored `kv`; raises RevisionConflictError if it moved."""
        strategy = strategy_of(rt)
        old = objects.decode(rt, kv)
        if subresource:
            applied = obj.get("metadata", {}).get("managedFields") if opts.apply is not None else None
            obj = strategy.prepare_for_subresource_update(subresource, obj, old)
            if applied is not None:  # a server-side apply to the subresource: keep the ownership it recorded
                obj["metadata"] = {**obj["metadata"], "managedFields": applied}
        else:
            admission.default_and_validate_schema(rt, obj, opts, patched=patched)
            admission.omit_empty_metadata(obj)
        ownership.track(rt, old, obj, opts, subresource)
        meta, old_meta = obj["metadata"], old["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if rt.namespaced:
            meta["namespace"] = old_meta.get("namespace")
        chain = self.admission_chain
        attrs = Attributes("UPDATE", rt, obj, old, dry_run=opts.dry_run, user=opts.user, subresource=subresource)
        if chain is not None:
            await chain.admit(attrs)
        if not subresource:
            strategy.prepare_for_update(obj, old)
            admission.validate(rt, obj, strategy.validate_update(obj, old))
            await strategy.authorize_write(obj, old, opts.user)
        else:
            admission.validate(rt, obj, strategy.validate_subresource_update(subresource, obj, old))
        if chain is not None:
            await chain.validate(attrs)
        finish = await strategy.begin_update(obj, old, dry_run=opts.dry_run) if not subresource else None
        return await self._finishing(finish, self._store_update(rt, kv, obj, old, opts))

    async def _store_update(self, rt: ResourceType, kv: KeyValue, obj: Obj, old: Obj, opts: WriteOptions) -> Obj:
        strategy = strategy_of(rt)
        meta, old_meta = obj["metadata"], old["metadata"]
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
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and strategy.deletable_now(obj):
            deleted = await self.backend.delete(kv.key, kv.mod_revision)
            meta["resourceVersion"] = str(deleted.mod_revision)
            await strategy.after_delete(obj)
            return obj
        new_kv = await self.backend.update(kv.key, objects.encode(rt, obj), kv.mod_revision)
        meta["resourceVersion"] = str(new_kv.mod_revision)
        return obj

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
            kv = await self.read(rt.key(namespace, name))
            if kv is None:
                if patch_type == patching.APPLY and not subresource:
                    body = patching.apply_to(rt, None, patch)
                    body.setdefault("metadata", {})["name"] = name
                    return await self.create(rt, namespace, body, replace(opts, apply=patch, force=force)), True
                raise not_found(rt, name)
            current = objects.decode(rt, kv)
            patched = patching.apply(rt, current, patch_type, patch)
            if not isinstance(patched, dict):
                raise errors.BadRequest("the patch did not produce an object")
            write_opts = opts
            if patch_type == patching.APPLY:
                write_opts = replace(opts, apply=patch, force=force)
                patched = ownership.apply(rt, current, patched, write_opts, subresource)
            pmeta = patched.setdefault("metadata", {})
            if not isinstance(pmeta, dict):
                raise errors.BadRequest("metadata must be an object")
            # a precondition only if the patch itself names a resourceVersion (the patched object always has one)
            wanted = pmeta.get("resourceVersion") if patching.sets_resource_version(patch_type, patch) else None
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
                return await self._write(rt, kv, patched, write_opts, subresource=subresource, patched=True), False
            except RevisionConflictError:
                if wanted:
                    raise conflict(rt, name, MODIFIED) from None
                continue
        raise conflict(rt, name, "too many concurrent changes; please try again")

    # ----------------------------------------------------------------- delete
    async def delete(self, rt: ResourceType, namespace: str | None, name: str, opts: DeleteOptions) -> tuple[Obj, bool]:
        """Delete or begin deleting; returns (object or Status, deleted now)."""
        return await deletion.delete(self, rt, namespace, name, opts)

    async def delete_collection(
        self, rt: ResourceType, namespace: str | None, list_opts: ListOptions, opts: DeleteOptions
    ) -> Obj:
        return await deletion.delete_collection(self, rt, namespace, list_opts, opts)

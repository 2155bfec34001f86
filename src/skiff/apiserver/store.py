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
lists: the first page at the cache's revision, the later ones (and
`resourceVersionMatch=Exact`) at the list's revision while the cache's
event window reaches back to it (`cachelist`); older ones read storage,
which answers the same or 410 Expired once compacted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

from skiff.api import errors, fieldselectors, selectors, validation
from skiff.apiserver import admission, deletion, objects, ownership, storedjson
from skiff.apiserver.admission_plugins.chain import Attributes, Chain
from skiff.apiserver.cachelist import Page
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
from skiff.apiserver.storedjson import Item
from skiff.apiserver.strategy import Finish, Strategy
from skiff.apiserver.watchcache import WatchCache
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
        """The list `opts` ask for. `encoded`: for a JSON answer -- items may be the stored bytes as they would
        be answered (`storedjson`), orjson Fragments, instead of decoded objects."""
        strategy = strategy_of(rt)
        labels = selectors.parse_label_selector(opts.label_selector)
        fields = fieldselectors.parse_field_selector(opts.field_selector, strategy.selectable_fields)
        self._check_list_options(opts)
        prefix = rt.prefix(namespace)
        revision = 0  # the revision to list at; 0: the latest
        at_least = 0  # NotOlderThan: the oldest revision the list may be at
        start: str | None = None
        if opts.continue_token:
            if opts.resource_version not in ("", "0"):
                raise errors.BadRequest("specifying resource version is not allowed when using continue")
            revision, start = objects.decode_continue(opts.continue_token, prefix)
            revision = max(revision, 0)  # -1: the rest at the latest revision (after an expired continue)
        elif opts.resource_version:
            rv = objects.parse_resource_version(opts.resource_version)
            match = opts.resource_version_match
            # Exact, or the legacy exact match of a paginated list from a resourceVersion other than 0
            if match == "Exact" or (match == "" and opts.limit > 0 and rv > 0):
                revision = rv
            else:
                at_least = rv
        unfiltered = labels.empty() and fields.empty()

        def select(kv: KeyValue) -> Item | None:
            if encoded and unfiltered and (raw := storedjson.answered(rt, kv)) is not None:
                return raw  # written into the JSON list as is
            obj = objects.decode(rt, kv)
            if not unfiltered and not self._matches(strategy, labels, fields, obj):
                return None
            return (storedjson.answered(rt, kv) or obj) if encoded and not unfiltered else obj

        limit = max(opts.limit, 0)
        listed = None
        if self.cache is not None:
            listed = await self._list_cached(self.cache, rt, prefix, revision, start, limit, select, unfiltered)
        if listed is None:
            listed = await self._list_storage(rt, prefix, revision, start, opts, select, unfiltered)
        current = int(listed["metadata"]["resourceVersion"])
        if current < at_least:  # read after catching up with storage: storage is not there yet either
            raise errors.Timeout(f"Too large resource version: {at_least}, current: {current}", retry_after=1)
        return listed

    @staticmethod
    def _check_list_options(opts: ListOptions) -> None:
        """Kubernetes' ValidateListOptions for a list: 422 Invalid naming every rule broken."""
        match = opts.resource_version_match
        if not match:
            return
        errs: list[tuple[str, str, str]] = []
        forbidden = "FieldValueForbidden", "resourceVersionMatch"
        if not opts.resource_version:
            errs.append((*forbidden, "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if opts.continue_token:
            errs.append((*forbidden, "Forbidden: resourceVersionMatch is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            errs.append(
                (
                    "FieldValueNotSupported",
                    "resourceVersionMatch",
                    f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan", ""',
                )
            )
        if match == "Exact" and opts.resource_version == "0":
            errs.append((*forbidden, 'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
        if errs:
            raise errors.field_error("ListOptions", "", errs, group="meta.k8s.io")

    async def _list_cached(
        self,
        cache: WatchCache,
        rt: ResourceType,
        prefix: str,
        revision: int,
        start: str | None,
        limit: int,
        select: Callable[[KeyValue], Item | None],
        unfiltered: bool,
    ) -> Obj | None:
        """A list (or a page of one) from the watch cache; None: read storage.

        At the latest revision once the cache has caught up with storage (a consistent read), or at
        `revision` while the cache's window still reaches back to it (the later pages of a list)."""
        if not revision or revision > cache.revision:
            if not await cache.wait_fresh():
                return None
        at = revision or cache.revision
        # no await from here: the page is read from one state of the cache
        page: Page[Item] | None = cache.list_page(prefix, at, start, limit, select)
        if page is None:
            return None
        cont = objects.encode_continue(at, page.last_key + "\x00") if page.more else ""
        remaining = page.remaining if page.more and unfiltered else None
        return objects.list_object(rt, page.items, at, cont, remaining)

    async def _list_storage(
        self,
        rt: ResourceType,
        prefix: str,
        revision: int,
        start: str | None,
        opts: ListOptions,
        select: Callable[[KeyValue], Item | None],
        unfiltered: bool,
    ) -> Obj:
        """The same list read from storage (no cache, or a revision the cache's window no longer holds)."""
        want = max(opts.limit, 0)
        items: list[Item] = []
        more = False
        last_key = ""
        count = 0
        continue_key = start or ""
        while True:
            chunk = 0
            if want:
                chunk = want - len(items) if unfiltered else max(want - len(items), 100)
            res = await self._list_chunk(prefix, revision, chunk, start, opts, continue_key)
            revision = res.revision
            count = count or res.count
            for kv in res.items:
                if want and len(items) >= want:
                    more = True
                    break
                last_key = kv.key
                obj = select(kv)
                if obj is not None:
                    items.append(obj)
            else:
                if res.more and res.items and (not want or len(items) < want):
                    start = res.items[-1].key + "\x00"
                    continue
                more = res.more
            break
        cont = objects.encode_continue(revision, last_key + "\x00") if more else ""
        remaining = None
        if more and unfiltered and count:  # as etcd counts: the keys from the page's start on, less the page
            remaining = max(count - len(items), 0)
        return objects.list_object(rt, items, revision, cont, remaining)

    async def _list_chunk(
        self, prefix: str, revision: int, limit: int, start: str | None, opts: ListOptions, continue_key: str
    ) -> ListResult:
        try:
            return await self.backend.list(prefix, revision=revision, limit=limit, start_key=start)
        except CompactedError:
            if opts.continue_token:
                # Kubernetes' answer: the rest of the list at the latest revision is offered, inconsistent
                raise errors.Gone(
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter, or use the continue token "
                    "in this response to retrieve the remainder of the results. Continuing with the provided "
                    "token results in an inconsistent list - objects that were created, modified, or deleted "
                    "between the time the first chunk was returned and now may show up in the list.",
                    continue_token=objects.encode_continue(-1, continue_key),
                ) from None
            raise errors.Gone(f"The resourceVersion for the provided list is too old: {revision}") from None
        except FutureRevisionError:
            current = await self.backend.current_revision()
            raise errors.Timeout(f"Too large resource version: {revision}, current: {current}", retry_after=1) from None

    @staticmethod
    def _matches(strategy: Strategy, labels: Any, fields: Any, obj: Obj, used: tuple[str, ...] | None = None) -> bool:
        meta = obj.get("metadata", {})
        if not labels.matches(meta.get("labels") or {}):
            return False
        return bool(fields.empty() or fields.matches(strategy.field_attrs(obj, used)))

    def matcher(self, rt: ResourceType, label_selector: str, field_selector: str) -> Any:
        """A predicate over objects for watches; validates the selectors (400 on error)."""
        strategy = strategy_of(rt)
        labels = selectors.parse_label_selector(label_selector)
        fields = fieldselectors.parse_field_selector(field_selector, strategy.selectable_fields)
        if labels.empty() and fields.empty():
            return None
        used = tuple(fields.fields())  # a watch on spec.nodeName reads that one field of each event, not all of them
        return lambda obj: self._matches(strategy, labels, fields, obj, used)

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

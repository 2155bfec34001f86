"""Lists: the generic store's list verb, with its selectors, pages and the checks of its options.

Why this exists: a list is the store's largest verb and shares nothing with
the writes but the backend and the watch cache. Kubernetes' rules live here:
ValidateListOptions (422), resourceVersion and resourceVersionMatch (Exact,
NotOlderThan, the legacy exact match of a paginated list), continue tokens
(the list's revision and the next key; an expired one answers 410 with a
token for the rest at the latest revision), remainingItemCount without
selectors, and selectors applied before the limit counts.

A list is read from the watch cache when it can be (`cachelist`: the latest
revision once the cache has caught up with storage, or an older one while
its event window reaches back), else from storage, which gives the same
answer or 410 Expired once compacted. Items may be the stored bytes as the
API answers them (`storedjson`) when the caller encodes JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skiff.api import errors, fieldselectors, selectors
from skiff.apiserver import objects, storedjson
from skiff.apiserver.cachelist import Page
from skiff.apiserver.objects import Obj
from skiff.apiserver.options import ListOptions, strategy_of
from skiff.apiserver.registry import ResourceType
from skiff.apiserver.storedjson import Item
from skiff.apiserver.strategy import Strategy
from skiff.apiserver.watchcache import WatchCache
from skiff.storage.interface import Backend, CompactedError, FutureRevisionError, KeyValue, ListResult


async def list_objects(
    backend: Backend,
    cache: WatchCache | None,
    rt: ResourceType,
    namespace: str | None,
    opts: ListOptions,
    *,
    encoded: bool = False,
) -> Obj:
    """The list `opts` ask for. `encoded`: for a JSON answer -- items may be the stored bytes as they would
    be answered (`storedjson`), orjson Fragments, instead of decoded objects."""
    strategy = strategy_of(rt)
    labels = selectors.parse_label_selector(opts.label_selector)
    fields = fieldselectors.parse_field_selector(opts.field_selector, strategy.selectable_fields)
    check_list_options(opts)
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
        if not unfiltered and not matches(strategy, labels, fields, obj):
            return None
        return (storedjson.answered(rt, kv) or obj) if encoded and not unfiltered else obj

    limit = max(opts.limit, 0)
    listed = None
    if cache is not None:
        listed = await _list_cached(cache, rt, prefix, revision, start, limit, select, unfiltered)
    if listed is None:
        listed = await _list_storage(backend, rt, prefix, revision, start, opts, select, unfiltered)
    current = int(listed["metadata"]["resourceVersion"])
    if current < at_least:  # read after catching up with storage: storage is not there yet either
        raise errors.Timeout(f"Too large resource version: {at_least}, current: {current}", retry_after=1)
    return listed


def check_list_options(opts: ListOptions) -> None:
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
    backend: Backend,
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
        res = await _list_chunk(backend, prefix, revision, chunk, start, opts, continue_key)
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
    backend: Backend, prefix: str, revision: int, limit: int, start: str | None, opts: ListOptions, continue_key: str
) -> ListResult:
    try:
        return await backend.list(prefix, revision=revision, limit=limit, start_key=start)
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
        current = await backend.current_revision()
        raise errors.Timeout(f"Too large resource version: {revision}, current: {current}", retry_after=1) from None


def matches(strategy: Strategy, labels: Any, fields: Any, obj: Obj, used: tuple[str, ...] | None = None) -> bool:
    meta = obj.get("metadata", {})
    if not labels.matches(meta.get("labels") or {}):
        return False
    return bool(fields.empty() or fields.matches(strategy.field_attrs(obj, used)))


def matcher(rt: ResourceType, label_selector: str, field_selector: str) -> Any:
    """A predicate over objects for watches; validates the selectors (400 on error)."""
    strategy = strategy_of(rt)
    labels = selectors.parse_label_selector(label_selector)
    fields = fieldselectors.parse_field_selector(field_selector, strategy.selectable_fields)
    if labels.empty() and fields.empty():
        return None
    used = tuple(fields.fields())  # a watch on spec.nodeName reads that one field of each event, not all of them
    return lambda obj: matches(strategy, labels, fields, obj, used)

"""The REST handlers: one set of HTTP verbs for every resource type.

A request is parsed into a target (kind, namespace, name, subresource) and
query options, handed to the generic store, and the answer is shaped for the
client (object, list, Table, PartialObjectMetadata). Subresources that are
views of their parent (scale, binding, finalize) live in `subresources.py`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from skiff.api import errors, tables, validation
from skiff.apiserver import content, paths, subresources
from skiff.apiserver.auth import USER
from skiff.apiserver.objects import Obj, partial_metadata
from skiff.apiserver.options import DeleteOptions, ListOptions, WriteOptions, strategy_of
from skiff.apiserver.patching import TYPES as PATCH_TYPES
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchstream import serve_watch


def _truthy(value: str | None) -> bool:
    return value in ("true", "1", "True")


APPLY_PATCH = "application/apply-patch+yaml"
_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def write_options(request: web.Request) -> WriteOptions:
    q = request.query
    dry = q.getall("dryRun", [])
    for d in dry:
        if d != "All":
            raise errors.BadRequest(f'dryRun: Unsupported value: "{d}": supported values: "All"')
    field_manager = q.get("fieldManager", "")
    errs = validation.validate_field_manager(field_manager) if field_manager else []
    if request.method == "PATCH" and not field_manager and content.media_type(request) == APPLY_PATCH:
        errs.append(validation.required("fieldManager", "is required for apply patch"))
    if errs:  # as Kubernetes: `PatchOptions.meta.k8s.io "" is invalid: fieldManager: ...`
        raise errors.field_error(_OPTIONS_KIND.get(request.method, "CreateOptions"), "", errs, group="meta.k8s.io")
    return WriteOptions(
        dry_run=bool(dry),
        field_validation=q.get("fieldValidation", "Warn") or "Warn",
        field_manager=field_manager,
        user=request.get(USER),
        user_agent=request.headers.get("User-Agent", ""),
    )


def list_options(request: web.Request) -> ListOptions:
    q = request.query
    limit = q.get("limit", "0") or "0"
    try:
        n = int(limit)
    except ValueError:
        raise errors.BadRequest(f"invalid limit {limit!r}: must be an integer") from None
    return ListOptions(
        label_selector=q.get("labelSelector", ""),
        field_selector=q.get("fieldSelector", ""),
        limit=n,
        continue_token=q.get("continue", ""),
        resource_version=q.get("resourceVersion", ""),
        resource_version_match=q.get("resourceVersionMatch", ""),
    )


class Rest:
    def __init__(self, store: Store, registry: Registry, cache: WatchCache) -> None:
        self.store = store
        self.registry = registry
        self.cache = cache

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = paths.parse(self.registry, request.path)
        method = request.method
        if target.legacy_watch:
            if method != "GET":
                raise errors.MethodNotAllowed(f"{method} is not supported on watch paths")
            return await serve_watch(request, self.store, self.cache, target)
        if target.subresource and target.subresource not in strategy_of(target.rt).object_subresources:
            return await subresources.handle(self, request, target)
        if target.name is None:
            return await self._collection(request, target, method)
        return await self._item(request, target, method)

    def _check_verb(self, rt: ResourceType, verb: str) -> None:
        if verb not in rt.verbs:
            raise errors.MethodNotAllowed(
                f"the server does not allow this method on the requested resource ({verb} {rt.group_resource})"
            )

    async def _collection(self, request: web.Request, t: paths.Target, method: str) -> web.StreamResponse:
        rt = t.rt
        if method == "GET":
            if _truthy(request.query.get("watch")):
                self._check_verb(rt, "watch")
                return await serve_watch(request, self.store, self.cache, t)
            self._check_verb(rt, "list")
            shape = content.accept(request)
            listed = await self.store.list(rt, t.namespace, list_options(request), encoded=shape == "json")
            return self.respond_list(request, rt, listed, shape)
        if method == "POST":
            self._check_verb(rt, "create")
            shape = content.accept(request)
            body = content.decode_body(await content.read_body(request), content.media_type(request))
            opts = write_options(request)
            obj = await self.store.create(rt, t.namespace, body, opts)
            # 201 for every create, the review kinds too: Kubernetes' create handler answers StatusCreated
            return self.respond(request, rt, obj, shape, status=201, warnings=opts.warnings)
        if method == "DELETE":
            self._check_verb(rt, "deletecollection")
            shape = content.accept(request)
            dopts = await delete_options(request)
            listed = await self.store.delete_collection(rt, t.namespace, list_options(request), dopts)
            return self.respond_list(request, rt, listed, shape)
        raise errors.MethodNotAllowed(f"{method} is not supported on a collection")

    async def _item(self, request: web.Request, t: paths.Target, method: str) -> web.StreamResponse:
        rt, name = t.rt, t.name
        assert name is not None
        sub = t.subresource
        if sub == "status" and "status" not in rt.subresources:
            raise paths.not_found_path()
        shape = content.accept(request)
        if method == "GET":
            self._check_verb(rt, "get")
            obj = await self.store.get(rt, t.namespace, name)
            return self.respond(request, rt, obj, shape)
        if method == "PUT":
            self._check_verb(rt, "update")
            body = content.decode_body(await content.read_body(request), content.media_type(request))
            opts = write_options(request)
            obj = await self.store.update(rt, t.namespace, name, body, opts, subresource=sub)
            return self.respond(request, rt, obj, shape, warnings=opts.warnings)
        if method == "PATCH":
            self._check_verb(rt, "patch")
            patch_type = content.media_type(request)
            if patch_type not in PATCH_TYPES:
                raise errors.UnsupportedMediaType(
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{', '.join(PATCH_TYPES)}"
                )
            body = content.decode_body(await content.read_body(request), patch_type)
            opts = write_options(request)
            obj, created = await self.store.patch(
                rt,
                t.namespace,
                name,
                patch_type,
                body,
                opts,
                subresource=sub,
                force=_truthy(request.query.get("force")),
            )
            return self.respond(request, rt, obj, shape, status=201 if created else 200, warnings=opts.warnings)
        if method == "DELETE":
            self._check_verb(rt, "delete")
            dopts = await delete_options(request)
            result, now = await self.store.delete(rt, t.namespace, name, dopts)
            if result.get("kind") == "Status":
                return content.json_response(result)
            return self.respond(request, rt, result, shape, status=200 if now else 202)
        raise errors.MethodNotAllowed(f"{method} is not supported on {rt.group_resource}")

    # ------------------------------------------------------------- shaping
    def respond(
        self,
        request: web.Request,
        rt: ResourceType,
        obj: Obj,
        shape: str,
        *,
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        if shape == "table" and obj.get("kind") != "Status":
            table = self.table(request, rt, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")})
            return content.json_response(table, status=status, content_type=content.TABLE_CT, warnings=warnings)
        if shape == "partial" and obj.get("kind") != "Status":
            return content.json_response(partial_metadata(obj), status=status, warnings=warnings)
        return content.json_response(obj, status=status, warnings=warnings)

    def respond_list(self, request: web.Request, rt: ResourceType, listed: Obj, shape: str) -> web.Response:
        if shape == "table":
            table = self.table(request, rt, listed["items"], listed["metadata"])
            return content.json_response(table, content_type=content.TABLE_CT)
        if shape == "partial":
            return content.json_response(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": listed["metadata"],
                    "items": [partial_metadata(o) for o in listed["items"]],
                }
            )
        return content.json_response(listed)

    def table(self, request: web.Request, rt: ResourceType, items: list[Obj], list_meta: dict[str, Any]) -> Obj:
        include = tables.include_object_param(request.query.get("includeObject"))
        return tables.to_table(
            rt.group,
            rt.kind,
            items,
            include_object=include,
            list_meta=list_meta,
            printer_columns=rt.extra.get("printer_columns"),
        )


async def delete_options(request: web.Request) -> DeleteOptions:
    q = request.query
    body: Any = {}
    raw = await content.read_body(request)
    if raw.strip():
        body = content.decode_body(raw, content.media_type(request))
        if not isinstance(body, dict):
            raise errors.BadRequest("DeleteOptions must be a JSON object")
    grace = q.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
    policy = q.get("propagationPolicy", body.get("propagationPolicy"))
    orphan = q.get("orphanDependents", body.get("orphanDependents"))
    if policy is None and orphan is not None:
        policy = "Orphan" if _truthy(str(orphan).lower()) else "Background"
    dry = q.getall("dryRun", []) or body.get("dryRun") or []
    for d in dry:
        if d != "All":
            raise errors.BadRequest(f'dryRun: Unsupported value: "{d}": supported values: "All"')
    try:
        grace_int = int(grace) if grace is not None else None
    except (TypeError, ValueError):
        raise errors.BadRequest(f"invalid gracePeriodSeconds {grace!r}: must be an integer") from None
    pre = body.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise errors.BadRequest("preconditions must be an object")
    return DeleteOptions(
        grace_period_seconds=grace_int,
        propagation_policy=policy,
        preconditions=pre,
        dry_run=bool(dry),
        user=request.get(USER),
    )

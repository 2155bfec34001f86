"""Subresources that are views of their parent object: scale, binding, finalize.

`/scale` reads and writes a parent's replica count as an `autoscaling/v1
Scale` (paths configurable per kind, so custom resources can have one);
`pods/<name>/binding` assigns a pod to a node once; `namespaces/<name>/finalize`
edits `spec.finalizers`. Each write goes through the generic store with the
parent's resourceVersion as the guard.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from skiff.api import errors, patch
from skiff.apiserver import content, objects, patching, pod_proxy, tokenrequest
from skiff.apiserver.options import MODIFIED, PATCH_RETRIES, conflict
from skiff.apiserver.paths import Target, not_found_path
from skiff.storage.interface import RevisionConflictError

if TYPE_CHECKING:
    from skiff.apiserver.handlers import Rest

Obj = dict[str, Any]

DEFAULT_SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


def _get(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def format_selector(selector: Any) -> str:
    if isinstance(selector, str):
        return selector
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def to_scale(parent: Obj, paths: dict[str, str]) -> Obj:
    meta = parent["metadata"]
    selector = _get(parent, paths.get("labelSelectorPath", "")) if paths.get("labelSelectorPath") else None
    if selector is None:
        selector = (parent.get("spec") or {}).get("selector")
    status: Obj = {"replicas": _get(parent, paths["statusReplicasPath"]) or 0}
    sel = format_selector(selector)
    if sel:
        status["selector"] = sel
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": _get(parent, paths["specReplicasPath"]) or 0},
        "status": status,
    }


async def handle(rest: Rest, request: web.Request, t: Target) -> web.StreamResponse:
    if t.name is None:
        raise not_found_path()
    if t.subresource == "scale":
        return await _scale(rest, request, t)
    if t.rt.group == "" and t.rt.plural == "pods" and t.subresource in pod_proxy.SUBRESOURCES:
        return await pod_proxy.handle(rest, request, t)
    if t.subresource == "binding" and request.method == "POST":
        return await _binding(rest, request, t)
    if t.subresource == "finalize" and request.method == "PUT":
        return await _finalize(rest, request, t)
    if t.subresource == "token" and t.rt.plural == "serviceaccounts":
        return await tokenrequest.handle(rest, request, t)
    raise errors.MethodNotAllowed(f"{request.method} is not supported on {t.rt.plural}/{t.subresource}")


async def _scale(rest: Rest, request: web.Request, t: Target) -> web.StreamResponse:
    rt, name = t.rt, t.name
    assert name is not None
    paths = {**DEFAULT_SCALE, **(rt.extra.get("scale") or {})}
    store = rest.store
    if request.method == "GET":
        return content.json_response(to_scale(await store.get(rt, t.namespace, name), paths))
    if request.method not in ("PUT", "PATCH"):
        raise errors.MethodNotAllowed(f"{request.method} is not supported on {rt.plural}/scale")
    media = content.media_type(request)
    body = content.decode_body(await content.read_body(request), media)
    from skiff.apiserver.handlers import write_options

    opts = write_options(request)
    for _ in range(PATCH_RETRIES):
        kv = await store.get_kv(rt, t.namespace, name)
        parent = objects.decode(rt, kv)
        scale = to_scale(parent, paths)
        if request.method == "PUT":
            new_scale = body
        elif media == patching.JSON_PATCH:
            new_scale = patch.json_patch(scale, body)
        elif media in (patching.MERGE, patching.STRATEGIC, patching.APPLY):
            new_scale = patch.merge_patch(scale, body)
        else:
            raise errors.UnsupportedMediaType(f"unsupported patch type {media}")
        if not isinstance(new_scale, dict):
            raise errors.BadRequest("the Scale must be an object")
        # a PATCH is a precondition only if it names a resourceVersion (the patched Scale always has one)
        precondition = request.method == "PUT" or patching.sets_resource_version(media, body)
        wanted = (new_scale.get("metadata") or {}).get("resourceVersion") if precondition else None
        if wanted and str(wanted) != parent["metadata"]["resourceVersion"]:
            raise conflict(rt, name, MODIFIED)
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.field_error(
                "Scale",
                name,
                [
                    (
                        "FieldValueInvalid",
                        "spec.replicas",
                        f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    )
                ],
                group="autoscaling",
            )
        updated = copy.deepcopy(parent)
        _set(updated, paths["specReplicasPath"], replicas)
        try:
            written = await store._write(rt, kv, updated, replace(opts, via="scale"))
        except RevisionConflictError:
            if wanted:
                raise conflict(rt, name, MODIFIED) from None
            continue
        return content.json_response(to_scale(written, paths))
    raise conflict(rt, name, MODIFIED)


async def _binding(rest: Rest, request: web.Request, t: Target) -> web.StreamResponse:
    rt, name = t.rt, t.name
    assert name is not None
    body = content.decode_body(await content.read_body(request), content.media_type(request))
    target = (body or {}).get("target") or {}
    node = target.get("name")
    if not node:
        raise errors.field_error("Binding", name, [("FieldValueRequired", "target.name", "Required value")])
    for _ in range(PATCH_RETRIES):
        kv = await rest.store.get_kv(rt, t.namespace, name)
        pod = objects.decode(rt, kv)
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict(rt, name, "pod is being deleted, cannot be assigned to a host")
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise conflict(rt, name, f'pod {name} is already assigned to node "{current}"')
        pod.setdefault("spec", {})["nodeName"] = node
        conditions = [
            c
            for c in (pod.setdefault("status", {}).get("conditions") or [])
            if c.get("type") != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": objects.now_rfc3339(),
            }
        )
        pod["status"]["conditions"] = conditions
        try:
            await rest.store.backend.update(kv.key, objects.encode(rt, pod), kv.mod_revision)
        except RevisionConflictError:
            continue
        return content.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
            status=201,
        )
    raise conflict(rt, name, MODIFIED)


async def _finalize(rest: Rest, request: web.Request, t: Target) -> web.StreamResponse:
    rt, name = t.rt, t.name
    assert name is not None
    body = content.decode_body(await content.read_body(request), content.media_type(request))
    finalizers = ((body or {}).get("spec") or {}).get("finalizers") or []
    for _ in range(PATCH_RETRIES):
        kv = await rest.store.get_kv(rt, t.namespace, name)
        ns = objects.decode(rt, kv)
        ns.setdefault("spec", {})["finalizers"] = finalizers
        if not finalizers:
            ns["spec"].pop("finalizers")
        try:
            if (
                ns["metadata"].get("deletionTimestamp")
                and not finalizers
                and not ns["metadata"].get("finalizers")
            ):
                await rest.store.backend.delete(kv.key, kv.mod_revision)
            else:
                new_kv = await rest.store.backend.update(kv.key, objects.encode(rt, ns), kv.mod_revision)
                ns["metadata"]["resourceVersion"] = str(new_kv.mod_revision)
        except RevisionConflictError:
            continue
        return content.json_response(ns)
    raise conflict(rt, name, MODIFIED)

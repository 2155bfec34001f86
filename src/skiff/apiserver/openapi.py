"""OpenAPI v3 documents, one per served group-version, for kubectl.

kubectl reads them for `explain`, for building strategic merge patches in
`apply`, and above all to decide that the server validates fields: it looks
for the kind's PATCH operation (tagged `x-kubernetes-group-version-kind`)
with a `fieldValidation` query parameter and then sends
`fieldValidation=Strict`; for a kind in no v3 document it falls back to
OpenAPI v2 (`openapi_v2.py`).

Documents are derived from the registry (custom resources appear and go at
run time) and from the Kubernetes JSON-schema definitions, converted to
OpenAPI 3 components. Each document is encoded once and cached with its
content hash until the registry changes; the hash in `?hash=` URLs lets
kubectl cache them for good, as against the real API server.
"""

from __future__ import annotations

import hashlib
import json
import time
from email.utils import formatdate
from functools import cache
from typing import Any

from aiohttp import web

from skiff.api import errors
from skiff.api.definitions import load_definitions
from skiff.apiserver.openapi_v2 import handle_v2
from skiff.apiserver.registry import Registry, ResourceType

Obj = dict[str, Any]
REF = "#/components/schemas/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
PATCH_TYPES = "apply-patch+yaml json-patch+json merge-patch+json strategic-merge-patch+json".split()
# subresource -> (group, version, kind, schema) of its body (None: the resource's own kind), operations
SUBRESOURCES: dict[str, tuple[tuple[str, str, str, str] | None, tuple[str, ...]]] = {
    "status": (None, ("read", "replace", "patch")),
    "scale": (
        ("autoscaling", "v1", "Scale", "io.k8s.api.autoscaling.v1.Scale"),
        ("read", "replace", "patch"),
    ),
    "binding": (("", "v1", "Binding", "io.k8s.api.core.v1.Binding"), ("create",)),
    "eviction": (("policy", "v1", "Eviction", "io.k8s.api.policy.v1.Eviction"), ("create",)),
}
# query parameter -> schema type (the real server describes each at length; kubectl only needs the names)
PARAM_TYPES = dict.fromkeys(
    "allowWatchBookmarks force orphanDependents sendInitialEvents watch".split(), "boolean"
)
PARAM_TYPES |= dict.fromkeys("gracePeriodSeconds limit timeoutSeconds".split(), "integer")
LIST = "allowWatchBookmarks continue fieldSelector labelSelector limit resourceVersion resourceVersionMatch"
LIST_PARAMS = (*LIST.split(), "sendInitialEvents", "timeoutSeconds", "watch")
WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
DELETE_PARAMS = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
# operation -> (HTTP method, x-kubernetes-action, verb it needs, query parameters, body, responses)
OPERATIONS: dict[str, tuple[str, str, str, tuple[str, ...], str, tuple[str, ...]]] = {
    "list": ("get", "list", "list", LIST_PARAMS, "", ("200",)),
    "create": ("post", "post", "create", WRITE_PARAMS, "object", ("200", "201", "202")),
    "deleteCollection": (
        "delete",
        "deletecollection",
        "deletecollection",
        DELETE_PARAMS + LIST_PARAMS[1:-1],
        "delete",
        ("200",),
    ),
    "read": ("get", "get", "get", (), "", ("200",)),
    "replace": ("put", "put", "update", WRITE_PARAMS, "object", ("200", "201")),
    "patch": ("patch", "patch", "patch", (*WRITE_PARAMS, "force"), "patch", ("200", "201")),
    "delete": ("delete", "delete", "delete", DELETE_PARAMS, "delete", ("200", "202")),
}
COMPONENT_OVERRIDES: dict[str, Obj] = {
    INT_OR_STRING: {
        "description": "IntOrString is a type that can hold an int32 or a string.",
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    },
    QUANTITY: {
        "description": "Quantity is a fixed-point representation of a number (e.g. 500m, 1Gi).",
        "oneOf": [{"type": "string"}, {"type": "number"}],
    },
}


# ---------------------------------------------------------------- components


def _convert(schema: Obj) -> Obj:
    """One JSON-schema fragment as OpenAPI 3: single types, component refs, allOf-wrapped siblings."""
    out: Obj = {}
    for key, val in schema.items():
        if key == "$ref":
            continue
        if key == "type" and isinstance(val, list):
            types = [t for t in val if t != "null"]
            if types:
                out["type"] = types[0]
        elif key == "properties":
            props = {k: _convert(v) for k, v in val.items()}
            for k in ("apiVersion", "kind"):  # the definitions pin these with an enum; the real spec doesn't
                if k in props:
                    props[k].pop("enum", None)
            out[key] = props
        elif key in ("items", "additionalProperties", "not") and isinstance(val, dict):
            out[key] = _convert(val)
        elif key in ("oneOf", "anyOf", "allOf") and isinstance(val, list):
            out[key] = [_convert(v) for v in val]
        else:
            out[key] = val
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = {"$ref": REF + ref.rsplit("/", 1)[-1]}
        return {"allOf": [target], **out} if out else target
    return out


@cache
def component(name: str) -> Obj:
    """The OpenAPI 3 form of one definition (cached; do not mutate)."""
    if name in COMPONENT_OVERRIDES:
        return COMPONENT_OVERRIDES[name]
    return _convert(load_definitions()[name])


def _refs(schema: Any, into: set[str]) -> None:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            into.add(ref.rsplit("/", 1)[-1])
        for key, val in schema.items():
            if key not in ("enum", "required", "x-kubernetes-group-version-kind", "description"):
                _refs(val, into)
    elif isinstance(schema, list):
        for val in schema:
            _refs(val, into)


@cache
def _direct_refs(name: str) -> frozenset[str]:
    found: set[str] = set()
    _refs(load_definitions().get(name, {}), found)
    return frozenset(found)


def reachable(roots: set[str]) -> set[str]:
    """The definitions `roots` need, themselves included (only those that exist)."""
    defs = load_definitions()
    seen: set[str] = set()
    todo = [r for r in roots if r in defs]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(n for n in _direct_refs(name) if n not in seen)
    return seen


def custom_schema_name(rt: ResourceType, kind: str | None = None) -> str:
    """`com.example.v1.Widget` for kind Widget of group example.com, as the real server names them."""
    return ".".join([*reversed(rt.group.split(".")), rt.version, kind or rt.kind])


def _custom_components(rt: ResourceType, schema: Obj) -> dict[str, Obj]:
    """The kind and its List for a resource whose schema came with it (a CRD's openAPIV3Schema)."""

    def gvk(kind: str) -> list[Obj]:
        return [{"group": rt.group, "kind": kind, "version": rt.version}]

    typed = {
        "apiVersion": {"type": "string", "description": "APIVersion of this object."},
        "kind": {"type": "string", "description": "Kind of this object."},
    }
    item: Obj = {**schema, "type": "object", "x-kubernetes-group-version-kind": gvk(rt.kind)}
    selectable = rt.extra.get("selectable_fields")
    if selectable:  # what field selectors may use besides metadata.name and metadata.namespace
        item["x-kubernetes-selectable-fields"] = [{"fieldPath": path} for path in selectable]
    meta = {"allOf": [{"$ref": REF + META + "ObjectMeta"}], "description": "Standard object's metadata."}
    item["properties"] = {**schema.get("properties", {}), **typed, "metadata": meta}
    listing: Obj = {
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            **typed,
            "items": {"type": "array", "items": {"$ref": REF + custom_schema_name(rt)}},
            "metadata": {
                "allOf": [{"$ref": REF + META + "ListMeta"}],
                "description": "Standard list metadata.",
            },
        },
        "x-kubernetes-group-version-kind": gvk(rt.list_kind),
    }
    return {custom_schema_name(rt): item, custom_schema_name(rt, rt.list_kind): listing}


# ---------------------------------------------------------------- paths


def _ident(group: str) -> str:
    """`Apps`, `Core`, `RbacAuthorization`: the group as it appears in operation ids."""
    if not group:
        return "Core"
    return "".join(p[:1].upper() + p[1:] for p in group.removesuffix(".k8s.io").split("."))


def _params(names: tuple[str, ...]) -> list[Obj]:
    return [
        {"name": n, "in": "query", "schema": {"type": PARAM_TYPES.get(n, "string"), "uniqueItems": True}}
        for n in names
    ]


def _path_params(namespaced: bool, named: bool) -> list[Obj]:
    names = ["name"] * named + ["namespace"] * namespaced
    string = {"type": "string", "uniqueItems": True}
    return [
        *({"name": n, "in": "path", "required": True, "schema": string} for n in names),
        *_params(("pretty",)),
    ]


def _content(
    schema: str | None, types: tuple[str, ...] | list[str] = ("application/json", "application/yaml")
) -> Obj:
    return {t: {"schema": {"$ref": REF + schema}} if schema else {} for t in types}


class _PathBuilder:
    """The paths of one group-version, noting which component schemas they use."""

    def __init__(self, group: str, version: str) -> None:
        self.ident = _ident(group) + version[:1].upper() + version[1:]
        self.prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        self.tag = f"{_ident(group)[:1].lower()}{_ident(group)[1:]}_{version}"
        self.paths: Obj = {
            self.prefix + "/": {
                "get": {
                    "description": "get available resources",
                    "operationId": f"get{self.ident}APIResources",
                    "tags": [self.tag],
                    "responses": {
                        "200": {"description": "OK", "content": _content(META + "APIResourceList")}
                    },
                }
            }
        }
        self.used: set[str] = {META + n for n in ("Status", "Patch", "DeleteOptions", "APIResourceList")}

    def op(
        self, path: str, name: str, op_id: str, gvk: tuple[str, str, str], schema: str | None, *, custom: bool = False
    ) -> None:
        """Add operation `name` (a key of OPERATIONS) on `path`, for objects of `schema`.

        A custom resource's PATCH does not offer strategic merge: kubectl then builds merge patches for it.
        """
        method, action, _verb, params, body, codes = OPERATIONS[name]
        if schema:
            self.used.add(schema)
        result = META + "Status" if name in ("delete", "deleteCollection") else schema
        text = {"200": "OK", "201": "Created", "202": "Accepted"}
        op: Obj = {
            "description": f"{name} {gvk[2]}",
            "operationId": op_id,
            "tags": [self.tag],
            "responses": {c: {"description": text[c], "content": _content(result)} for c in codes},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": gvk[0], "kind": gvk[2], "version": gvk[1]},
        }
        if params:
            op["parameters"] = _params(params)
        if body:
            bodies = {"patch": META + "Patch", "object": schema, "delete": META + "DeleteOptions"}
            patch_types = [t for t in PATCH_TYPES if not (custom and t.startswith("strategic"))]
            types = [f"application/{t}" for t in patch_types] if body == "patch" else ["*/*"]
            op["requestBody"] = {"content": _content(bodies[body], types), "required": body != "delete"}
        self.paths.setdefault(path, {})[method] = op

    def resource(self, rt: ResourceType, schema: str | None, list_schema: str | None) -> None:
        ns = rt.namespaced
        base = f"{self.prefix}/namespaces/{{namespace}}/{rt.plural}" if ns else f"{self.prefix}/{rt.plural}"
        item = base + "/{name}"
        scoped = ("Namespaced" if ns else "") + rt.kind
        gvk = (rt.group, rt.version, rt.kind)
        custom = bool(rt.extra.get("custom"))
        for name, (_m, _a, verb, *_rest) in OPERATIONS.items():
            if verb not in rt.verbs:
                continue
            if name == "list":
                self.op(base, name, f"list{self.ident}{scoped}", gvk, list_schema)
                if ns:
                    every = f"{self.prefix}/{rt.plural}"
                    self.op(every, name, f"list{self.ident}{rt.kind}ForAllNamespaces", gvk, list_schema)
                    self.paths[every]["parameters"] = _params(("pretty", *LIST_PARAMS))
            elif name == "deleteCollection":
                self.op(base, name, f"delete{self.ident}Collection{scoped}", gvk, schema)
            else:
                op_id = f"{name}{self.ident}{scoped}"
                self.op(base if name == "create" else item, name, op_id, gvk, schema, custom=custom)
        for path, named in ((base, False), (item, True)):
            if path in self.paths:
                self.paths[path]["parameters"] = _path_params(ns, named)
        for sub in rt.subresources:
            if sub not in SUBRESOURCES:
                continue
            target, names = SUBRESOURCES[sub]
            sub_gvk, sub_schema = (target[:3], target[3]) if target else (gvk, schema)
            for name in names:
                op_id = f"{name}{self.ident}{scoped}{sub[:1].upper()}{sub[1:]}"
                self.op(f"{item}/{sub}", name, op_id, sub_gvk, sub_schema, custom=custom)
            self.paths[f"{item}/{sub}"]["parameters"] = _path_params(ns, True)


def build_document(group: str, version: str, rts: list[ResourceType]) -> Obj:
    """The OpenAPI v3 document of one group-version serving `rts`."""
    builder = _PathBuilder(group, version)
    custom: dict[str, Obj] = {}
    defs = load_definitions()
    for rt in rts:
        crd_schema = rt.extra.get("openapi_schema")
        if isinstance(crd_schema, dict):
            custom.update(_custom_components(rt, crd_schema))
            builder.resource(rt, custom_schema_name(rt), custom_schema_name(rt, rt.list_kind))
        else:
            schema = rt.schema_ref if rt.schema_ref in defs else None
            list_schema = f"{schema}List" if schema and f"{schema}List" in defs else None
            builder.resource(rt, schema, list_schema)
    if custom:
        builder.used |= {META + "ObjectMeta", META + "ListMeta"}
        builder.used -= custom.keys()
    schemas = {name: component(name) for name in sorted(reachable(builder.used))}
    schemas.update(custom)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": builder.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        },
    }


# ---------------------------------------------------------------- serving


def gv_path(group: str, version: str) -> str:
    """`api/v1`, `apis/apps/v1`: a group-version's key in the root document."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _signature(rts: list[ResourceType]) -> str:
    """What a group-version's document depends on: unchanged signature, unchanged document."""
    keys = ("plural", "kind", "namespaced", "verbs", "subresources", "schema_ref")
    parts = [
        [*(getattr(rt, k) for k in keys), rt.extra.get("openapi_schema"), rt.extra.get("selectable_fields")]
        for rt in rts
    ]
    return json.dumps(parts, sort_keys=True, default=str)


class OpenAPIService:
    """Serves `/openapi/v3` from the registry, rebuilding only what a registry change touched."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._dirty = True
        self._docs: dict[str, tuple[str, bytes]] = {}  # gv path -> (hash, encoded document)
        self._by_signature: dict[str, tuple[str, bytes]] = {}
        self._root = b""
        registry.on_change(self.invalidate)

    def invalidate(self) -> None:
        self._dirty = True

    def _refresh(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        served: dict[str, list[ResourceType]] = {}
        for rt in self.registry:
            served.setdefault(gv_path(rt.group, rt.version), []).append(rt)
        by_signature: dict[str, tuple[str, bytes]] = {}
        docs: dict[str, tuple[str, bytes]] = {}
        for path, rts in served.items():
            sig = f"{path}\n{_signature(rts)}"
            entry = self._by_signature.get(sig)
            if entry is None:
                data = json.dumps(
                    build_document(rts[0].group, rts[0].version, rts), separators=(",", ":")
                ).encode()
                entry = (hashlib.sha512(data).hexdigest().upper(), data)
            docs[path] = by_signature[sig] = entry
        self._docs, self._by_signature = docs, by_signature
        root = {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"} for p, (h, _) in sorted(docs.items())}
        self._root = json.dumps({"paths": root}).encode()

    def document(self, path: str) -> tuple[str, bytes] | None:
        """(hash, JSON bytes) of a group-version's document, e.g. `apis/apps/v1`; None if not served."""
        self._refresh()
        return self._docs.get(path.strip("/"))

    async def handle_root(self, request: web.Request) -> web.Response:
        self._refresh()
        return web.Response(body=self._root, content_type="application/json")

    async def handle_document(self, request: web.Request) -> web.Response:
        path = request.match_info["path"].strip("/")
        entry = self.document(path)
        if entry is None:
            body = errors.NotFound("the server could not find the requested resource").status()
            return web.json_response(body, status=404)
        digest, data = entry
        headers = {"Etag": f'"{digest}"'}
        wanted = request.query.get("hash")
        if wanted is not None:
            if wanted != digest:  # stale link: send the client to the current document, as kube-openapi does
                raise web.HTTPMovedPermanently(f"/openapi/v3/{path}?hash={digest}")
            headers["Cache-Control"] = "public, immutable"
            headers["Expires"] = formatdate(time.time() + 365 * 86400, usegmt=True)
            headers["Vary"] = "Accept"
        else:
            headers["Cache-Control"] = "no-cache"
        if request.headers.get("If-None-Match", "").strip() == headers["Etag"]:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type="application/json", headers=headers)


OPENAPI_KEY = web.AppKey("skiff.openapi", OpenAPIService)


def setup_openapi(app: web.Application, registry: Registry) -> None:
    """Add `GET /openapi/v2`, `GET /openapi/v3` and `GET /openapi/v3/{group-version path}` to `app`."""
    service = OpenAPIService(registry)
    app[OPENAPI_KEY] = service
    app.router.add_get("/openapi/v2", handle_v2)
    app.router.add_get("/openapi/v3", service.handle_root)
    app.router.add_get("/openapi/v3/{path:.*}", service.handle_document)

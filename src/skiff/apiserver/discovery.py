"""API discovery, legacy and aggregated, built from the registry on each request.

kubectl asks `/api` and `/apis` for the aggregated `APIGroupDiscoveryList`
(apidiscovery.k8s.io/v2) and falls back to the legacy documents
(`APIVersions`, `APIGroupList`, one `APIResourceList` per group-version).
Both are derived from the one registry, so a kind added at run time (a CRD)
shows up on the next request.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from skiff.apiserver import content
from skiff.apiserver.paths import not_found_path
from skiff.apiserver.registry import Registry, ResourceType

AGGREGATED_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
SUB_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "binding": ["create"],
    "token": ["create"],
    "finalize": ["update"],
    "approval": ["get", "patch", "update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "portforward": ["create", "get"],
    "eviction": ["create"],
    "proxy": ["create", "delete", "get", "patch", "update"],
}
Obj = dict[str, Any]


def wants_aggregated(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=APIGroupDiscoveryList" in accept and "apidiscovery.k8s.io" in accept


def _sub_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    if sub == "scale":
        return ("autoscaling", "v1", "Scale")
    if sub == "binding":
        return ("", "v1", "Binding")
    if sub == "eviction":
        return ("policy", "v1", "Eviction")
    if sub == "token":
        return ("authentication.k8s.io", "v1", "TokenRequest")
    return (rt.group, rt.version, rt.kind)


def resource_list(registry: Registry, group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in registry:
        if rt.group != group or rt.version != version:
            continue
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            g, v, k = _sub_kind(rt, sub)
            sub_entry: Obj = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": k,
                "verbs": SUB_VERBS.get(sub, ["get"]),
            }
            if g != rt.group or v != rt.version:
                sub_entry["group"], sub_entry["version"] = g, v
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _group_entry(name: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def aggregated(registry: Registry, *, core: bool) -> Obj:
    items = []
    for group, versions in sorted(registry.groups().items(), key=lambda kv: _group_order(kv[0])):
        if (group == "") != core:
            continue
        version_entries = []
        for version in versions:
            resources = []
            for rt in registry:
                if rt.group != group or rt.version != version:
                    continue
                res: Obj = {
                    "resource": rt.plural,
                    "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular,
                    "verbs": list(rt.verbs),
                }
                if rt.short_names:
                    res["shortNames"] = list(rt.short_names)
                if rt.categories:
                    res["categories"] = list(rt.categories)
                if rt.subresources:
                    res["subresources"] = [
                        {
                            "subresource": sub,
                            "responseKind": dict(
                                zip(("group", "version", "kind"), _sub_kind(rt, sub), strict=True)
                            ),
                            "verbs": SUB_VERBS.get(sub, ["get"]),
                        }
                        for sub in rt.subresources
                    ]
                resources.append(res)
            version_entries.append({"version": version, "resources": resources, "freshness": "Current"})
        meta: Obj = {"name": group} if group else {}
        items.append({"metadata": meta, "versions": version_entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _group_order(group: str) -> tuple[int, str]:
    """Built-in groups first, in Kubernetes' order of importance; others by name."""
    first = [
        "",
        "apps",
        "events.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "rbac.authorization.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "apiextensions.k8s.io",
    ]
    return (first.index(group), "") if group in first else (len(first), group)


def setup_discovery(app: web.Application, registry: Registry) -> None:
    async def api(request: web.Request) -> web.Response:
        if wants_aggregated(request):
            return content.json_response(aggregated(registry, core=True), content_type=AGGREGATED_CT)
        host = request.host or "127.0.0.1:6443"
        return content.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    async def apis(request: web.Request) -> web.Response:
        if wants_aggregated(request):
            return content.json_response(aggregated(registry, core=False), content_type=AGGREGATED_CT)
        groups = [
            _group_entry(g, vs)
            for g, vs in sorted(registry.groups().items(), key=lambda kv: _group_order(kv[0]))
            if g
        ]
        return content.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def api_v1(request: web.Request) -> web.Response:
        return content.json_response(resource_list(registry, "", "v1"))

    async def group(request: web.Request) -> web.Response:
        name = request.match_info["group"]
        versions = registry.groups().get(name)
        if not versions or not name:
            raise not_found_path()
        return content.json_response({"kind": "APIGroup", "apiVersion": "v1", **_group_entry(name, versions)})

    async def group_version(request: web.Request) -> web.Response:
        g, v = request.match_info["group"], request.match_info["version"]
        if v not in registry.groups().get(g, []) or not g:
            raise not_found_path()
        return content.json_response(resource_list(registry, g, v))

    app.router.add_get("/api", api)
    app.router.add_get("/api/", api)
    app.router.add_get("/apis", apis)
    app.router.add_get("/apis/", apis)
    app.router.add_get("/api/v1", api_v1)
    app.router.add_get("/api/v1/", api_v1)
    app.router.add_get("/apis/{group}", group)
    app.router.add_get("/apis/{group}/", group)
    app.router.add_get("/apis/{group}/{version}", group_version)
    app.router.add_get("/apis/{group}/{version}/", group_version)

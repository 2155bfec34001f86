"""The real kubectl against skiff's OpenAPI v3 routes, served by a tiny aiohttp app.

The app serves only legacy discovery and `setup_openapi`; everything else is a
404 Status. That is enough for `kubectl explain` to work end to end, and for
`kubectl apply` to show (with -v=8) that it found the PATCH operation's
`fieldValidation` parameter and therefore sends `fieldValidation=Strict`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from skiff.apiserver.openapi import setup_openapi
from skiff.apiserver.registry import Registry, ResourceType

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
"""


def _registry() -> Registry:
    registry = Registry()
    registry.add(
        ResourceType(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            "configmap",
            True,
            short_names=("cm",),
            schema_ref="io.k8s.api.core.v1.ConfigMap",
        )
    )
    registry.add(
        ResourceType(
            "",
            "v1",
            "Namespace",
            "namespaces",
            "namespace",
            False,
            short_names=("ns",),
            schema_ref="io.k8s.api.core.v1.Namespace",
        )
    )
    registry.add(
        ResourceType(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            "deployment",
            True,
            short_names=("deploy",),
            subresources=("status", "scale"),
            schema_ref="io.k8s.api.apps.v1.Deployment",
        )
    )
    return registry


def _resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources = [
        {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
            "shortNames": list(rt.short_names),
        }
        for rt in registry
        if rt.group == group and rt.version == version
    ]
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


@dataclass
class App:
    url: str
    registry: Registry
    requests: list[str] = field(default_factory=list)


@asynccontextmanager
async def tiny_app() -> AsyncIterator[App]:
    """Legacy discovery and the OpenAPI routes over a small registry, on a free port."""
    registry = _registry()
    seen: list[str] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs}")
        return await handler(request)

    application = web.Application(middlewares=[record])

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})

    async def apis(request: web.Request) -> web.Response:
        groups = []
        for name, versions in sorted(registry.groups().items()):
            listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            if name:
                groups.append({"name": name, "versions": listed, "preferredVersion": listed[0]})
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def core_v1(request: web.Request) -> web.Response:
        return web.json_response(_resource_list(registry, "", "v1"))

    async def group_version(request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        if version not in registry.groups().get(group, []):
            raise web.HTTPNotFound()
        return web.json_response(_resource_list(registry, group, version))

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "37", "gitVersion": "v1.37.0"})

    for path, handler in (
        ("/api", api),
        ("/apis", apis),
        ("/api/v1", core_v1),
        ("/apis/{group}/{version}", group_version),
        ("/version", version),
    ):
        application.router.add_get(path, handler)
    setup_openapi(application, registry)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield App(f"http://127.0.0.1:{port}", registry, seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    async with tiny_app() as served:
        yield served


async def kubectl(app: App, home: Path, *args: str) -> tuple[int, str, str]:
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": app.url}}],
                "users": [{"name": "t", "user": {}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "default"}}],
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={home / 'cache'}",
        *args,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_root_lists_group_versions_with_hashes(app: App) -> None:
    async with ClientSession() as http:
        async with http.get(app.url + "/openapi/v3") as resp:
            assert resp.status == 200
            root = await resp.json()
        assert set(root["paths"]) == {"api/v1", "apis/apps/v1"}
        url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
        async with http.get(app.url + url) as resp:
            body = await resp.read()
            assert resp.headers["Cache-Control"] == "public, immutable"
            assert resp.headers["Etag"] == f'"{hashlib.sha512(body).hexdigest().upper()}"'
        doc = json.loads(body)
        patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
        assert patch["x-kubernetes-group-version-kind"] == {
            "group": "apps",
            "kind": "Deployment",
            "version": "v1",
        }
        assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
        assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
        schemas = doc["components"]["schemas"]
        assert schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"] == [
            {"group": "apps", "kind": "Deployment", "version": "v1"}
        ]
        assert "io.k8s.api.autoscaling.v1.Scale" in schemas  # the scale subresource's body
        assert "io.k8s.api.core.v1.ConfigMap" not in schemas  # only what apps/v1 reaches

        async with http.get(app.url + "/openapi/v3/apis/apps/v1?hash=stale", allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == url
        async with http.get(app.url + "/openapi/v3/apis/nope/v1") as resp:
            assert resp.status == 404
            assert (await resp.json())["reason"] == "NotFound"

        # a kind added at run time shows up, and only its group-version's hash changes
        app.registry.add(
            ResourceType(
                "apps",
                "v1",
                "ReplicaSet",
                "replicasets",
                "replicaset",
                True,
                schema_ref="io.k8s.api.apps.v1.ReplicaSet",
            )
        )
        async with http.get(app.url + "/openapi/v3") as resp:
            after = await resp.json()
        assert after["paths"]["apis/apps/v1"] != root["paths"]["apis/apps/v1"]
        assert after["paths"]["api/v1"] == root["paths"]["api/v1"]


async def test_kubectl_explain_reads_openapi_v3(app: App, tmp_path: Path) -> None:
    code, out, err = await kubectl(app, tmp_path, "explain", "deployment.spec.template.spec.containers")
    assert code == 0, err
    assert "KIND:       Deployment" in out
    assert "GROUP:      apps" in out
    assert "VERSION:    v1" in out
    assert "imagePullPolicy\t<string>" in out
    assert "resources\t<ResourceRequirements>" in out
    code, out, err = await kubectl(app, tmp_path, "explain", "deployment.spec.strategy.rollingUpdate.maxSurge")
    assert code == 0, err
    assert "FIELD: maxSurge <IntOrString>" in out
    assert any(r.startswith("GET /openapi/v3/apis/apps/v1?hash=") for r in app.requests)


WIDGET_SCHEMA = {
    "type": "object",
    "description": "A Widget is a test custom resource.",
    "properties": {
        "spec": {
            "type": "object",
            "description": "What the widget should be.",
            "properties": {"size": {"type": "integer", "description": "How big the widget is."}},
        }
    },
}


async def test_kubectl_explain_a_custom_resource_added_at_run_time(app: App, tmp_path: Path) -> None:
    app.registry.add(ResourceType("example.com", "v1", "Widget", "widgets", "widget", True,
                                  extra={"openapi_schema": WIDGET_SCHEMA}))  # fmt: skip
    code, out, err = await kubectl(app, tmp_path, "explain", "widgets.spec")
    assert code == 0, err
    assert "GROUP:      example.com" in out
    assert "FIELD: spec <Object>" in out
    assert "size\t<integer>" in out and "How big the widget is." in out
    code, out, err = await kubectl(app, tmp_path, "explain", "widgets.metadata.labels")
    assert code == 0, err
    assert "labels\t<map[string]string>" in out or "FIELD: labels <map[string]string>" in out


async def test_kubectl_apply_asks_server_side_validation(app: App, tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT)
    _code, _out, err = await kubectl(app, tmp_path, "apply", "--dry-run=server", "-f", str(manifest), "-v=8")
    assert "failed to download openapi" not in err
    assert "GET /apis/apps/v1/namespaces/default/deployments/web" in [r.split("?")[0] for r in app.requests]
    assert any(r.split("?")[0] == "GET /openapi/v3" for r in app.requests)
    assert any(r.startswith("GET /openapi/v3/apis/apps/v1?hash=") for r in app.requests)
    # the test app has no REST handlers: the GET of the object is a 404, so kubectl goes on to create it
    creates = [r for r in app.requests if r.startswith("POST /apis/apps/v1/namespaces/default/deployments")]
    assert creates, app.requests
    assert "fieldValidation=Strict" in creates[0]
    assert "dryRun=All" in creates[0]

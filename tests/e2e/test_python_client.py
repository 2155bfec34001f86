"""The official `kubernetes` Python client against a real skiff server.

CRUD round trips, selectors, pagination, watches, conflicts and other error
reasons, generateName, generation, the status subresource, dry runs and
deletecollection: what a controller written with the client relies on.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.e2e.cluster import Server

_ns_seq = itertools.count()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    """A server of this module's own, without controllers: these tests write Deployments and their
    status by hand, which a Deployment controller would rewrite under them (409s, overwritten status)."""
    srv = Server(tmp_path_factory.mktemp("skiff-pyclient"), extra_args=["--disable-controllers"]).start()
    c = srv.client()
    yield c
    c.close()
    srv.stop()


@pytest.fixture
def ns(api: client.ApiClient) -> str:
    """A namespace of the test's own on the module's server."""
    name = f"pyc-{next(_ns_seq)}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _cm(name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def _deployment(name: str, replicas: int = 1, image: str = "nginx:1.25") -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=dict(labels)),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
            ),
        ),
    )


def _names(items: list[Any]) -> list[str]:
    return sorted(i.metadata.name for i in items)


def _api_error(fn: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    return info.value


def _reason(exc: ApiException) -> str:
    return str(json.loads(exc.body).get("reason"))


# --------------------------------------------------------------------------- CRUD
def test_configmap_crud_round_trip(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    data = {"plain": "value", "multi": "line one\nline two\n", "unicode": "héllo ✓", "empty": ""}
    created = core.create_namespaced_config_map(ns, _cm("cfg", data, {"tier": "web"}))
    assert created.data == data
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    assert created.metadata.namespace == ns

    got = core.read_namespaced_config_map("cfg", ns)
    assert got.data == data and got.metadata.labels == {"tier": "web"}
    assert got.metadata.uid == created.metadata.uid

    got.data["plain"] = "changed"
    replaced = core.replace_namespaced_config_map("cfg", ns, got)
    assert replaced.data["plain"] == "changed"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    patched = core.patch_namespaced_config_map(
        "cfg", ns, {"data": {"added": "yes"}, "metadata": {"labels": {"x": "1"}}}
    )
    assert patched.data == {**data, "plain": "changed", "added": "yes"}
    assert patched.metadata.labels == {"tier": "web", "x": "1"}
    assert core.read_namespaced_config_map("cfg", ns).data == patched.data

    core.delete_namespaced_config_map("cfg", ns)
    exc = _api_error(core.read_namespaced_config_map, "cfg", ns)
    assert exc.status == 404 and _reason(exc) == "NotFound"


def test_secret_crud_round_trip(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"),
        type="Opaque",
        data={"password": base64.b64encode(b"s3cr\x00t").decode()},
        string_data={"user": "admin"},
    )
    created = core.create_namespaced_secret(ns, secret)
    assert created.type == "Opaque"
    # stringData is merged into data (base64) and not stored itself
    assert created.data == {
        "password": base64.b64encode(b"s3cr\x00t").decode(),
        "user": base64.b64encode(b"admin").decode(),
    }
    assert created.string_data is None

    got = core.read_namespaced_secret("creds", ns)
    assert base64.b64decode(got.data["password"]) == b"s3cr\x00t"
    got.data["user"] = base64.b64encode(b"root").decode()
    replaced = core.replace_namespaced_secret("creds", ns, got)
    assert base64.b64decode(replaced.data["user"]) == b"root"

    patched = core.patch_namespaced_secret("creds", ns, {"stringData": {"token": "abc"}})
    assert base64.b64decode(patched.data["token"]) == b"abc"
    assert set(patched.data) == {"password", "user", "token"}

    core.delete_namespaced_secret("creds", ns)
    assert _api_error(core.read_namespaced_secret, "creds", ns).status == 404


def test_deployment_crud_round_trip(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(ns, _deployment("web", replicas=2))
    assert created.spec.replicas == 2
    assert created.spec.template.spec.containers[0].image == "nginx:1.25"
    # defaults applied by the server
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.revision_history_limit == 10
    assert created.metadata.generation == 1

    got = apps.read_namespaced_deployment("web", ns)
    got.spec.template.spec.containers[0].image = "nginx:1.26"
    replaced = apps.replace_namespaced_deployment("web", ns, got)
    assert replaced.spec.template.spec.containers[0].image == "nginx:1.26"

    patched = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 5}})
    assert patched.spec.replicas == 5
    assert patched.spec.template.spec.containers[0].image == "nginx:1.26"

    # strategic merge on the containers list (merged by name, not replaced)
    patched = apps.patch_namespaced_deployment(
        "web", ns, {"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["--x"]}]}}}}
    )
    c = patched.spec.template.spec.containers
    assert len(c) == 1 and c[0].image == "nginx:1.26" and c[0].args == ["--x"]

    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.spec.replicas == 5

    apps.delete_namespaced_deployment("web", ns)
    assert _api_error(apps.read_namespaced_deployment, "web", ns).status == 404


# ---------------------------------------------------------------------- selectors
def test_label_selectors(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, _cm("a", labels={"env": "prod", "tier": "web"}))
    core.create_namespaced_config_map(ns, _cm("b", labels={"env": "dev", "tier": "web"}))
    core.create_namespaced_config_map(ns, _cm("c", labels={"env": "test"}))
    core.create_namespaced_config_map(ns, _cm("d"))

    def sel(s: str) -> list[str]:
        return _names(core.list_namespaced_config_map(ns, label_selector=s).items)

    assert sel("env=prod") == ["a"]
    assert sel("env==dev") == ["b"]
    assert sel("env!=prod") == ["b", "c", "d"]
    assert sel("env in (prod,dev)") == ["a", "b"]
    assert sel("env notin (prod,dev)") == ["c", "d"]
    assert sel("tier") == ["a", "b"]
    assert sel("!tier") == ["c", "d"]
    assert sel("tier=web,env!=dev") == ["a"]
    assert sel("env") == ["a", "b", "c"]
    exc = _api_error(core.list_namespaced_config_map, ns, label_selector="env in prod")
    assert exc.status == 400


def test_field_selectors(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, _cm("one"))
    core.create_namespaced_config_map(ns, _cm("two"))
    assert _names(core.list_namespaced_config_map(ns, field_selector="metadata.name=one").items) == ["one"]
    assert _names(core.list_namespaced_config_map(ns, field_selector="metadata.name!=one").items) == ["two"]
    assert _names(core.list_namespaced_config_map(ns, field_selector=f"metadata.namespace={ns}").items) == [
        "one",
        "two",
    ]

    def pod(name: str, node: str | None) -> client.V1Pod:
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name="c", image="busybox")]),
        )

    core.create_namespaced_pod(ns, pod("scheduled", "node-1"))
    core.create_namespaced_pod(ns, pod("unscheduled", None))
    core.create_namespaced_pod(ns, pod("elsewhere", "node-2"))
    # a running pod: status is set through the status subresource
    running = core.read_namespaced_pod("elsewhere", ns)
    running.status = client.V1PodStatus(phase="Running")
    core.replace_namespaced_pod_status("elsewhere", ns, running)

    def pods(fs: str) -> list[str]:
        return _names(core.list_namespaced_pod(ns, field_selector=fs).items)

    assert pods("spec.nodeName=node-1") == ["scheduled"]
    assert pods("spec.nodeName=") == ["unscheduled"]
    assert pods("spec.nodeName!=") == ["elsewhere", "scheduled"]
    assert pods("status.phase=Pending") == ["scheduled", "unscheduled"]
    assert pods("status.phase=Running") == ["elsewhere"]
    assert pods("status.phase!=Running,spec.nodeName=node-1") == ["scheduled"]
    # across namespaces, as a kubelet asks for its pods
    everywhere = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-2")
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [(ns, "elsewhere")]
    exc = _api_error(core.list_namespaced_config_map, ns, field_selector="data.foo=bar")
    assert exc.status == 400 and _reason(exc) == "BadRequest"


# --------------------------------------------------------------------- pagination
def test_pagination_with_limit_and_continue(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    expected = {f"cm-{i:02d}" for i in range(25)}
    for name in sorted(expected):
        core.create_namespaced_config_map(ns, _cm(name, {"n": name}))

    first = core.list_namespaced_config_map(ns, limit=10)
    assert len(first.items) == 10
    assert first.metadata._continue
    assert first.metadata.remaining_item_count == 15
    list_rv = first.metadata.resource_version

    # a write after the first page does not show in the later pages (they are served at the list's RV)
    core.create_namespaced_config_map(ns, _cm("cm-zz-late"))

    seen = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    pages = 1
    while token:
        page = core.list_namespaced_config_map(ns, limit=10, _continue=token)
        assert page.metadata.resource_version == list_rv
        assert len(page.items) <= 10
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))

    # the whole list at once
    assert len(core.list_namespaced_config_map(ns).items) == 26
    exc = _api_error(core.list_namespaced_config_map, ns, limit=10, _continue="not-a-token")
    assert exc.status == 400


# -------------------------------------------------------------------------- watch
def test_watch_from_resource_version(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, _cm("before"))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    events: list[tuple[str, str, dict[str, str] | None, str]] = []
    w = watch.Watch()
    started = threading.Event()

    def consume() -> None:
        started.set()
        for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
            obj = ev["object"]
            events.append((ev["type"], obj.metadata.name, obj.data, obj.metadata.resource_version))
            if len(events) >= 4:
                w.stop()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    started.wait()
    # the writes happen whether or not the watch is already connected: it starts from `rv`
    created = core.create_namespaced_config_map(ns, _cm("w", {"v": "1"}))
    modified = core.patch_namespaced_config_map("w", ns, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("w", ns)
    other = core.create_namespaced_config_map(ns, _cm("w2", {"v": "x"}))
    t.join(15)
    assert not t.is_alive(), f"watch did not deliver 4 events: {events}"

    assert [(e[0], e[1], e[2]) for e in events] == [
        ("ADDED", "w", {"v": "1"}),
        ("MODIFIED", "w", {"v": "2"}),
        ("DELETED", "w", {"v": "2"}),
        ("ADDED", "w2", {"v": "x"}),
    ]
    assert events[0][3] == created.metadata.resource_version
    assert events[1][3] == modified.metadata.resource_version
    assert events[3][3] == other.metadata.resource_version
    rvs = [int(e[3]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4 and rvs[0] > int(rv)


# ------------------------------------------------------------------------- errors
def test_conflict_on_stale_resource_version(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    stale = core.create_namespaced_config_map(ns, _cm("c", {"v": "0"}))
    fresh = core.read_namespaced_config_map("c", ns)
    fresh.data = {"v": "1"}
    core.replace_namespaced_config_map("c", ns, fresh)

    stale.data = {"v": "stale"}
    exc = _api_error(core.replace_namespaced_config_map, "c", ns, stale)
    assert exc.status == 409 and _reason(exc) == "Conflict"
    assert "the object has been modified" in exc.body
    assert core.read_namespaced_config_map("c", ns).data == {"v": "1"}


def test_not_found_and_already_exists(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    exc = _api_error(core.read_namespaced_config_map, "missing", ns)
    assert exc.status == 404 and _reason(exc) == "NotFound"
    assert "missing" in exc.body
    assert _api_error(core.delete_namespaced_config_map, "missing", ns).status == 404
    assert _api_error(core.patch_namespaced_config_map, "missing", ns, {"data": {"a": "b"}}).status == 404

    core.create_namespaced_config_map(ns, _cm("dup", {"v": "first"}))
    exc = _api_error(core.create_namespaced_config_map, ns, _cm("dup", {"v": "second"}))
    assert exc.status == 409 and _reason(exc) == "AlreadyExists"
    assert core.read_namespaced_config_map("dup", ns).data == {"v": "first"}


def test_generate_name(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    names = set()
    for _ in range(3):
        cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-"), data={"a": "b"})
        created = core.create_namespaced_config_map(ns, cm)
        assert created.metadata.name.startswith("gen-") and len(created.metadata.name) == len("gen-") + 5
        assert created.metadata.generate_name == "gen-"
        names.add(created.metadata.name)
    assert len(names) == 3
    assert _names(core.list_namespaced_config_map(ns).items) == sorted(names)


def test_generation_bumps_on_spec_change_only(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    d = apps.create_namespaced_deployment(ns, _deployment("gen"))
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", ns, {"metadata": {"labels": {"extra": "label"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", ns, {"metadata": {"annotations": {"a": "b"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", ns, {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2
    d.spec.template.spec.containers[0].image = "nginx:2"
    d = apps.replace_namespaced_deployment("gen", ns, d)
    assert d.metadata.generation == 3
    # a no-op spec write does not bump it either
    d = apps.replace_namespaced_deployment("gen", ns, d)
    assert d.metadata.generation == 3


def test_status_subresource(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("st", replicas=2))

    d = apps.read_namespaced_deployment_status("st", ns)
    d.status = client.V1DeploymentStatus(replicas=2, ready_replicas=1, observed_generation=1)
    d.spec.replicas = 9  # ignored on the status subresource
    updated = apps.replace_namespaced_deployment_status("st", ns, d)
    assert updated.status.ready_replicas == 1 and updated.status.observed_generation == 1
    assert updated.spec.replicas == 2
    assert updated.metadata.generation == 1

    patched = apps.patch_namespaced_deployment_status("st", ns, {"status": {"availableReplicas": 1}})
    assert patched.status.available_replicas == 1 and patched.status.ready_replicas == 1

    # the main resource ignores status changes
    d = apps.read_namespaced_deployment("st", ns)
    d.status.ready_replicas = 42
    d.spec.replicas = 4
    after = apps.replace_namespaced_deployment("st", ns, d)
    assert after.spec.replicas == 4
    assert after.status.ready_replicas == 1
    after = apps.patch_namespaced_deployment("st", ns, {"status": {"readyReplicas": 7}})
    assert after.status.ready_replicas == 1
    assert apps.read_namespaced_deployment("st", ns).status.ready_replicas == 1


def test_dry_run_creates_nothing(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    rv_before = core.list_namespaced_config_map(ns).metadata.resource_version
    out = core.create_namespaced_config_map(ns, _cm("dry", {"a": "b"}), dry_run="All")
    assert out.metadata.name == "dry" and out.data == {"a": "b"} and out.metadata.uid
    assert _api_error(core.read_namespaced_config_map, "dry", ns).status == 404
    dep = apps.create_namespaced_deployment(ns, _deployment("dry"), dry_run="All")
    assert dep.spec.strategy.type == "RollingUpdate"  # defaulted as for a real create
    assert apps.list_namespaced_deployment(ns).items == []

    core.create_namespaced_config_map(ns, _cm("real", {"a": "b"}))
    core.patch_namespaced_config_map("real", ns, {"data": {"a": "dry"}}, dry_run="All")
    core.delete_namespaced_config_map("real", ns, dry_run="All")
    assert core.read_namespaced_config_map("real", ns).data == {"a": "b"}
    # an invalid object is still refused in a dry run
    bad = _cm("Not_Valid")
    assert _api_error(core.create_namespaced_config_map, ns, bad, dry_run="All").status == 422
    assert int(core.list_namespaced_config_map(ns).metadata.resource_version) >= int(rv_before)


def test_delete_collection_with_label_selector(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(4):
        core.create_namespaced_config_map(ns, _cm(f"doomed-{i}", labels={"batch": "old"}))
    core.create_namespaced_config_map(ns, _cm("kept-new", labels={"batch": "new"}))
    core.create_namespaced_config_map(ns, _cm("kept-none"))
    core.delete_collection_namespaced_config_map(ns, label_selector="batch=old")
    assert _names(core.list_namespaced_config_map(ns).items) == ["kept-new", "kept-none"]


def test_custom_objects_api_on_a_crd(api: client.ApiClient, ns: str) -> None:
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    group = f"{ns}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
        created = _eventually(lambda: custom.create_namespaced_custom_object(group, "v1", ns, "widgets", body))
        assert created["spec"] == {"size": 3} and created["metadata"]["generation"] == 1
        got = custom.get_namespaced_custom_object(group, "v1", ns, "widgets", "w1")
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
        patched = custom.patch_namespaced_custom_object(group, "v1", ns, "widgets", "w1", {"spec": {"size": 4}})
        assert patched["spec"]["size"] == 4 and patched["metadata"]["generation"] == 2
        status = custom.patch_namespaced_custom_object_status(
            group, "v1", ns, "widgets", "w1", {"status": {"ready": True}}
        )
        assert status["status"] == {"ready": True} and status["metadata"]["generation"] == 2
        got["spec"]["size"] = 1
        exc = _api_error(custom.replace_namespaced_custom_object, group, "v1", ns, "widgets", "w1", got)
        assert exc.status == 409 and _reason(exc) == "Conflict"
        listed = custom.list_namespaced_custom_object(group, "v1", ns, "widgets")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
        assert listed["kind"] == "WidgetList"
        custom.delete_namespaced_custom_object(group, "v1", ns, "widgets", "w1")
        assert custom.list_namespaced_custom_object(group, "v1", ns, "widgets")["items"] == []
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def _eventually(fn: Any, timeout: float = 60.0) -> Any:
    """A CRD's resource may take a moment to be served after the CRD is created."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_custom_objects_api_on_a_built_in_group(api: client.ApiClient, ns: str) -> None:
    """The generic (dict-based) client, as dynamic controllers use it, on apps/v1 deployments."""
    custom = client.CustomObjectsApi(api)
    body = api.sanitize_for_serialization(_deployment("generic"))
    body.update({"apiVersion": "apps/v1", "kind": "Deployment"})
    created = custom.create_namespaced_custom_object("apps", "v1", ns, "deployments", body)
    assert created["kind"] == "Deployment" and created["metadata"]["generation"] == 1
    got = custom.get_namespaced_custom_object("apps", "v1", ns, "deployments", "generic")
    assert got["spec"]["replicas"] == 1
    patched = custom.patch_namespaced_custom_object(
        "apps", "v1", ns, "deployments", "generic", {"spec": {"replicas": 2}}
    )
    assert patched["spec"]["replicas"] == 2 and patched["metadata"]["generation"] == 2
    got["spec"]["replicas"] = 3
    exc = _api_error(custom.replace_namespaced_custom_object, "apps", "v1", ns, "deployments", "generic", got)
    assert exc.status == 409 and _reason(exc) == "Conflict"
    listed = custom.list_namespaced_custom_object("apps", "v1", ns, "deployments", label_selector="app=generic")
    assert listed["kind"] == "DeploymentList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["generic"]
    custom.delete_namespaced_custom_object("apps", "v1", ns, "deployments", "generic")
    assert custom.list_namespaced_custom_object("apps", "v1", ns, "deployments")["items"] == []

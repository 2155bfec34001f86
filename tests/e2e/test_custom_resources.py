"""Custom resources end to end: a CRD applied with the real kubectl is served at once, as by Kubernetes.

kubectl (apply, wait, get with printer columns, short names and categories,
scale, explain, patch, delete) and the official client's CustomObjectsApi
(CRUD, watch, status) against one shared server; every test uses its own
API group so that tests never see each other's kinds.
"""

from __future__ import annotations

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

pytestmark = pytest.mark.e2e


def widget_crd(
    group: str, *, scope: str = "Namespaced", extra_versions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "description": "How big the widget is."},
                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                    "replicas": {"type": "integer"},
                    "selector": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                },
            },
            "status": {
                "type": "object",
                "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}},
            },
        },
    }
    version = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".spec.selector",
            },
        },
        "additionalPrinterColumns": [
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": [f"wd{group.split('.')[0][:6]}"],
                "categories": ["all", f"toys{group.split('.')[0][:6]}"],
            },
            "versions": [version, *(extra_versions or [])],
        },
    }


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"crs-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def group(server: Server) -> Iterator[str]:
    """A fresh group with the Widget CRD applied and Established; the CRD is deleted afterwards."""
    name = f"g{uuid.uuid4().hex[:8]}.example.com"
    apply_crd(server, widget_crd(name))
    yield name
    delete_crd(server, f"widgets.{name}")


@pytest.fixture(scope="module")
def api(server: Server) -> client.ApiClient:
    return server.client()


def apply_crd(server: Server, crd: dict[str, Any]) -> None:
    server.kubectl("apply", "-f", "-", input=json.dumps(crd))
    server.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")


def delete_crd(server: Server, name: str) -> None:
    """Delete a CRD and wait for it to go, then refresh kubectl's discovery cache (shared by every test's
    kubectl): a cached kind of category `all` that no longer exists would break other tests' `get all`."""
    server.kubectl("delete", "crd", name, "--ignore-not-found", "--timeout=60s", check=False, timeout=90)
    server.kubectl("api-resources", "-o", "name", check=False)


def widget(group: str, name: str, spec: dict[str, Any], version: str = "v1") -> str:
    return json.dumps({"apiVersion": f"{group}/{version}", "kind": "Widget", "metadata": {"name": name}, "spec": spec})


def get_json(server: Server, *args: str) -> Any:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def short(group: str) -> str:
    return f"wd{group.split('.')[0][:6]}"


# ---------------------------------------------------------------- the CRD itself


def test_an_applied_crd_is_established_with_its_names_and_stored_version(server: Server, group: str) -> None:
    crd = get_json(server, "crd", f"widgets.{group}")
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    assert conditions["NamesAccepted"]["status"] == "True"
    assert conditions["NamesAccepted"]["reason"] == "NoConflicts"
    assert conditions["Established"]["status"] == "True"
    assert conditions["Established"]["reason"] == "InitialNamesAccepted"
    accepted = crd["status"]["acceptedNames"]
    assert accepted["kind"] == "Widget" and accepted["listKind"] == "WidgetList" and accepted["plural"] == "widgets"
    assert crd["status"]["storedVersions"] == ["v1"]
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    resources = server.kubectl("api-resources", "--api-group", group).stdout
    assert "widgets" in resources and short(group) in resources and "Widget" in resources
    code, groups, _ = server.raw("GET", "/apis")
    assert code == 200 and group in [g["name"] for g in groups["groups"]]
    code, listing, _ = server.raw("GET", f"/apis/{group}/v1")
    names = {r["name"]: r for r in listing["resources"]}
    assert set(names) == {"widgets", "widgets/status", "widgets/scale"}
    assert names["widgets"]["categories"] == ["all", f"toys{group.split('.')[0][:6]}"]
    aggregated = {"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}
    code, disco, _ = server.raw("GET", "/apis", headers=aggregated)
    entry = next(i for i in disco["items"] if i["metadata"].get("name") == group)
    assert entry["versions"][0]["resources"][0]["resource"] == "widgets"


def test_bad_crds_are_refused_with_kubernetes_messages(server: Server) -> None:
    g = f"bad{uuid.uuid4().hex[:6]}.example.com"
    crd = widget_crd(g)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"] = {
        "minimum": 1
    }
    out = server.kubectl("apply", "-f", "-", input=json.dumps(crd), check=False)
    assert out.returncode != 0
    assert (
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type: "
        "Required value: must not be empty for specified object fields" in out.stderr
    )
    crd = widget_crd(g)
    crd["metadata"]["name"] = f"gadgets.{g}"
    out = server.kubectl("apply", "-f", "-", input=json.dumps(crd), check=False)
    assert 'must be spec.names.plural+"."+spec.group' in out.stderr and "is invalid" in out.stderr
    crd = widget_crd(g, extra_versions=[{**widget_crd(g)["spec"]["versions"][0], "name": "v2"}])
    out = server.kubectl("apply", "-f", "-", input=json.dumps(crd), check=False)
    assert "must have exactly one version marked as storage version" in out.stderr
    assert server.kubectl("get", "crd", f"widgets.{g}", check=False).returncode != 0


def test_a_clashing_kind_is_not_accepted(server: Server, group: str) -> None:
    crd = widget_crd(group)
    crd["metadata"]["name"] = f"gizmos.{group}"
    crd["spec"]["names"] = {"plural": "gizmos", "singular": "gizmo", "kind": "Widget", "listKind": "GizmoList"}
    server.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        deadline = time.monotonic() + 60
        conditions: dict[str, Any] = {}
        while time.monotonic() < deadline and "NamesAccepted" not in conditions:
            time.sleep(0.1)
            found = get_json(server, "crd", f"gizmos.{group}")
            conditions = {c["type"]: c for c in found.get("status", {}).get("conditions") or []}
        assert conditions["NamesAccepted"]["status"] == "False"
        assert conditions["NamesAccepted"]["reason"] == "KindConflict"
        assert conditions["NamesAccepted"]["message"] == '"Widget" is already in use'
        assert conditions["Established"]["status"] == "False"
        code, _, _ = server.raw("GET", f"/apis/{group}/v1/gizmos")
        assert code == 404
        # once the CRD holding the kind is gone, the other one gets it
        delete_crd(server, f"widgets.{group}")
        server.kubectl("wait", "--for=condition=Established", f"crd/gizmos.{group}", "--timeout=60s")
        code, listed, _ = server.raw("GET", f"/apis/{group}/v1/gizmos")
        assert code == 200 and listed["kind"] == "GizmoList"
    finally:
        delete_crd(server, f"gizmos.{group}")


# ---------------------------------------------------------------- objects with kubectl


def test_kubectl_create_get_printer_columns_short_names_and_categories(server: Server, group: str, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "small", {"size": 2}))
    server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "big", {"size": 9, "color": "blue"}))
    table = server.kubectl("get", f"widgets.{group}", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "COLOR", "PHASE"]
    assert [line.split()[:3] for line in table[1:]] == [["big", "9", "blue"], ["small", "2", "red"]]
    assert "small" in server.kubectl("get", short(group), "-n", ns).stdout
    assert f"widget.{group}/small" in server.kubectl("get", "all", "-n", ns).stdout
    assert "big" in server.kubectl("get", f"toys{group.split('.')[0][:6]}", "-n", ns).stdout
    got = get_json(server, f"widgets.{group}", "small", "-n", ns)
    assert got["spec"] == {"size": 2, "color": "red"} and got["metadata"]["generation"] == 1
    assert server.kubectl("get", f"widgets.{group}", "-n", ns, "-l", "none=here").stdout == ""
    server.kubectl("label", f"widgets.{group}", "small", "-n", ns, "tier=low")
    assert server.kubectl("get", f"widgets.{group}", "-n", ns, "-l", "tier=low", "-o", "name").stdout.split() == [
        f"widget.{group}/small"
    ]
    by_name = server.kubectl("get", f"widgets.{group}", "-n", ns, "--field-selector", "metadata.name=big", "-o", "name")
    assert by_name.stdout.split() == [f"widget.{group}/big"]


def test_schema_errors_name_the_fields(server: Server, group: str, ns: str) -> None:
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "bad", {"size": 0, "color": "pink"}),
                         check=False)  # fmt: skip
    assert out.returncode != 0
    assert 'The Widget "bad" is invalid' in out.stderr
    assert 'spec.color: Unsupported value: "pink": supported values: "red", "blue"' in out.stderr
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in out.stderr
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "bad", {"color": "red"}), check=False)
    assert "spec.size: Required value" in out.stderr
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "bad", {"size": "big"}), check=False)
    assert 'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"' in out.stderr
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "bad", {"size": 1, "tags": ["a", "a"]}),
                         check=False)  # fmt: skip
    assert 'spec.tags[1]: Duplicate value: "a"' in out.stderr


def test_unknown_fields_strict_warn_and_pruned(server: Server, group: str, ns: str) -> None:
    body = widget(group, "extra", {"size": 1, "shape": "round"})
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=body, check=False)
    assert out.returncode != 0 and 'strict decoding error: unknown field "spec.shape"' in out.stderr
    path = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    code, created, headers = server.raw("POST", path, json.loads(body))
    assert code == 201 and created["spec"] == {"size": 1, "color": "red"}  # pruned, defaulted
    assert 'unknown field \\"spec.shape\\"' in headers.get("Warning", "")
    sent = json.loads(widget(group, "extra3", {"size": 1}))
    sent["metadata"]["junk"] = True
    code, created, headers = server.raw("POST", path, sent)
    assert code == 201 and "junk" not in created["metadata"]
    assert 'unknown field \\"metadata.junk\\"' in headers.get("Warning", "")
    server.kubectl("apply", "-n", ns, "--validate=false", "-f", "-", input=widget(group, "extra2", body and
                   {"size": 1, "shape": "square"}))  # fmt: skip
    assert get_json(server, f"widgets.{group}", "extra2", "-n", ns)["spec"] == {"size": 1, "color": "red"}


def test_patch_types(server: Server, group: str, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "p", {"size": 1}))
    res = f"widgets.{group}"
    server.kubectl("patch", res, "p", "-n", ns, "--type=merge", "-p", '{"spec":{"size":2}}')
    server.kubectl("patch", res, "p", "-n", ns, "--type=json", "-p", '[{"op":"replace","path":"/spec/size","value":3}]')
    got = get_json(server, res, "p", "-n", ns)
    assert got["spec"]["size"] == 3 and got["metadata"]["generation"] == 3
    out = server.kubectl("patch", res, "p", "-n", ns, "--type=strategic", "-p", '{"spec":{"size":4}}', check=False)
    assert out.returncode != 0 and "application/strategic-merge-patch+json is not supported by" in out.stderr
    out = server.kubectl("patch", res, "p", "-n", ns, "--type=merge", "-p", '{"spec":{"size":-1}}', check=False)
    assert "spec.size in body should be greater than or equal to 1" in out.stderr
    # kubectl-patch owns .spec.size now: a server-side apply of another value conflicts until forced
    out = server.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=widget(group, "p", {"size": 5}),
                         check=False)  # fmt: skip
    assert out.returncode != 0 and 'conflict with "kubectl-patch"' in out.stderr and ".spec.size" in out.stderr
    server.kubectl("apply", "--server-side", "--force-conflicts", "-n", ns, "-f", "-",
                   input=widget(group, "p", {"size": 5}))  # fmt: skip
    assert get_json(server, res, "p", "-n", ns)["spec"]["size"] == 5
    # client-side apply of a changed manifest is a merge patch
    server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "p", {"size": 6, "color": "blue"}))
    assert get_json(server, res, "p", "-n", ns)["spec"] == {"size": 6, "color": "blue"}


def test_status_and_scale_subresources(server: Server, group: str, ns: str, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    server.kubectl("apply", "-n", ns, "-f", "-", input=widget(group, "s", {"size": 1, "replicas": 1,
                                                                           "selector": "app=s"}))  # fmt: skip
    # status through the main resource is ignored; through /status it is all that changes
    obj = custom.get_namespaced_custom_object(group, "v1", ns, "widgets", "s")
    obj["status"] = {"phase": "Ignored"}
    replaced = custom.replace_namespaced_custom_object(group, "v1", ns, "widgets", "s", obj)
    assert "status" not in replaced and replaced["metadata"]["generation"] == 1
    patched = custom.patch_namespaced_custom_object_status(
        group, "v1", ns, "widgets", "s", {"status": {"phase": "Ready", "replicas": 1}, "spec": {"size": 7}}
    )
    assert patched["status"] == {"phase": "Ready", "replicas": 1}
    assert patched["spec"]["size"] == 1 and patched["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as bad:
        custom.patch_namespaced_custom_object_status(group, "v1", ns, "widgets", "s", {"status": {"replicas": "x"}})
    assert bad.value.status == 422 and "status.replicas" in bad.value.body
    assert "Ready" in server.kubectl("get", f"widgets.{group}", "s", "-n", ns).stdout
    # scale
    server.kubectl("scale", f"widgets.{group}/s", "-n", ns, "--replicas=3")
    got = get_json(server, f"widgets.{group}", "s", "-n", ns)
    assert got["spec"]["replicas"] == 3 and got["metadata"]["generation"] == 2
    code, scale, _ = server.raw("GET", f"/apis/{group}/v1/namespaces/{ns}/widgets/s/scale")
    assert code == 200 and scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 3} and scale["status"] == {"replicas": 1, "selector": "app=s"}


def test_watch_with_the_python_client(group: str, ns: str, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    listed = custom.list_namespaced_custom_object(group, "v1", ns, "widgets")
    seen: list[tuple[str, str, int]] = []
    done = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for ev in w.stream(custom.list_namespaced_custom_object, group, "v1", ns, "widgets",
                           resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=10):  # fmt: skip
            seen.append((ev["type"], ev["object"]["metadata"]["name"], ev["object"]["spec"]["size"]))
            if ev["type"] == "DELETED":
                w.stop()
        done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.5)
    body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "watched"}, "spec": {"size": 1}}
    custom.create_namespaced_custom_object(group, "v1", ns, "widgets", body)
    custom.patch_namespaced_custom_object(group, "v1", ns, "widgets", "watched", {"spec": {"size": 2}})
    custom.delete_namespaced_custom_object(group, "v1", ns, "widgets", "watched")
    assert done.wait(60)
    assert seen == [("ADDED", "watched", 1), ("MODIFIED", "watched", 2), ("DELETED", "watched", 2)]


def test_a_second_version_is_served_from_the_same_storage(server: Server, ns: str) -> None:
    g = f"v{uuid.uuid4().hex[:8]}.example.com"
    crd = widget_crd(g)
    v1 = crd["spec"]["versions"][0]
    beta = {**v1, "name": "v1beta1", "storage": False, "additionalPrinterColumns": [
        {"name": "Beta-Size", "type": "integer", "jsonPath": ".spec.size"}]}  # fmt: skip
    crd["spec"]["versions"] = [v1, beta]
    apply_crd(server, crd)
    try:
        server.kubectl("apply", "-n", ns, "-f", "-", input=widget(g, "old", {"size": 4}, version="v1beta1"))
        code, as_v1, _ = server.raw("GET", f"/apis/{g}/v1/namespaces/{ns}/widgets/old")
        assert code == 200 and as_v1["apiVersion"] == f"{g}/v1" and as_v1["spec"]["size"] == 4
        code, as_beta, _ = server.raw("GET", f"/apis/{g}/v1beta1/namespaces/{ns}/widgets")
        assert as_beta["kind"] == "WidgetList" and as_beta["items"][0]["apiVersion"] == f"{g}/v1beta1"
        code, groups, _ = server.raw("GET", "/apis")
        entry = next(x for x in groups["groups"] if x["name"] == g)
        assert [v["version"] for v in entry["versions"]] == ["v1", "v1beta1"]
        assert entry["preferredVersion"]["version"] == "v1"
        beta_table = server.kubectl("get", f"widgets.v1beta1.{g}", "-n", ns).stdout
        assert "BETA-SIZE" in beta_table
        assert get_json(server, "crd", f"widgets.{g}")["status"]["storedVersions"] == ["v1"]
    finally:
        delete_crd(server, f"widgets.{g}")


def test_a_cluster_scoped_kind(server: Server) -> None:
    g = f"c{uuid.uuid4().hex[:8]}.example.com"
    apply_crd(server, widget_crd(g, scope="Cluster"))
    try:
        server.kubectl("apply", "-f", "-", input=widget(g, "global", {"size": 1}))
        got = get_json(server, f"widgets.{g}", "global")
        assert "namespace" not in got["metadata"]
        code, _, _ = server.raw("GET", f"/apis/{g}/v1/widgets/global")
        assert code == 200
        code, _, _ = server.raw("GET", f"/apis/{g}/v1/namespaces/default/widgets/global")
        assert code == 404
        assert "false" in server.kubectl("api-resources", "--api-group", g).stdout.lower()
    finally:
        delete_crd(server, f"widgets.{g}")


def test_kubectl_explain_reads_the_schema(server: Server, group: str) -> None:
    out = server.kubectl("explain", "widgets.spec", f"--api-version={group}/v1").stdout
    assert "KIND:       Widget" in out and f"GROUP:      {group}" in out
    assert "size\t<integer> -required-" in out and "How big the widget is." in out
    _code, root, _ = server.raw("GET", "/openapi/v3")
    assert f"apis/{group}/v1" in root["paths"]


def test_deleting_the_crd_deletes_its_objects_and_its_kind(server: Server, ns: str) -> None:
    g = f"d{uuid.uuid4().hex[:8]}.example.com"
    apply_crd(server, widget_crd(g))
    server.kubectl("apply", "-n", ns, "-f", "-", input=widget(g, "doomed", {"size": 1}))
    server.kubectl("apply", "-n", "default", "-f", "-", input=widget(g, "doomed-too", {"size": 1}))
    server.kubectl("delete", "crd", f"widgets.{g}", timeout=30)
    assert server.kubectl("get", "crd", f"widgets.{g}", check=False).returncode != 0
    delete_crd(server, f"widgets.{g}")  # refreshes kubectl's discovery cache
    code, _, _ = server.raw("GET", f"/apis/{g}/v1")
    assert code == 404
    assert g not in server.kubectl("api-resources").stdout
    # objects are gone from storage: a new CRD of the same name starts empty
    apply_crd(server, widget_crd(g))
    try:
        code, listed, _ = server.raw("GET", f"/apis/{g}/v1/widgets")
        assert code == 200 and listed["items"] == []
    finally:
        delete_crd(server, f"widgets.{g}")


def test_a_terminating_crd_waits_for_object_finalizers(server: Server, ns: str) -> None:
    g = f"t{uuid.uuid4().hex[:8]}.example.com"
    apply_crd(server, widget_crd(g))
    body = json.loads(widget(g, "held", {"size": 1}))
    body["metadata"]["finalizers"] = ["example.com/hold"]
    server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))
    server.kubectl("delete", "crd", f"widgets.{g}", "--wait=false")
    # the CRD controller marks it Terminating on its own pass after the delete
    deadline = time.monotonic() + 60
    while True:
        crd = get_json(server, "crd", f"widgets.{g}")
        if any(c["type"] == "Terminating" and c["status"] == "True" for c in crd["status"]["conditions"]):
            break
        assert time.monotonic() < deadline, crd["status"]
        time.sleep(0.1)
    time.sleep(1.0)  # and its objects' finalizer holds it
    crd = get_json(server, "crd", f"widgets.{g}")
    assert "customresourcecleanup.apiextensions.k8s.io" in crd["metadata"]["finalizers"]
    assert any(c["type"] == "Terminating" and c["status"] == "True" for c in crd["status"]["conditions"])
    out = server.kubectl("apply", "-n", ns, "-f", "-", input=widget(g, "late", {"size": 1}), check=False)
    assert out.returncode != 0 and "terminating" in out.stderr
    server.kubectl("patch", f"widgets.{g}", "held", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    server.kubectl("wait", "--for=delete", f"crd/widgets.{g}", "--timeout=60s")
    delete_crd(server, f"widgets.{g}")


def test_deleting_a_namespace_deletes_its_custom_objects(server: Server, group: str) -> None:
    doomed = f"crs-gone-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", doomed)
    server.kubectl("apply", "-n", doomed, "-f", "-", input=widget(group, "inside", {"size": 1}))
    server.kubectl("delete", "namespace", doomed, "--timeout=60s", timeout=90)
    code, listed, _ = server.raw("GET", f"/apis/{group}/v1/widgets")
    assert code == 200 and [i["metadata"]["name"] for i in listed["items"]] == []


def test_custom_kinds_are_served_again_after_a_restart(fresh_server: Server) -> None:
    g = f"r{uuid.uuid4().hex[:8]}.example.com"
    apply_crd(fresh_server, widget_crd(g))
    fresh_server.kubectl("apply", "-n", "default", "-f", "-", input=widget(g, "kept", {"size": 2}))
    fresh_server.stop()
    again = Server(fresh_server.data_dir).start()
    try:
        code, got, _ = again.raw("GET", f"/apis/{g}/v1/namespaces/default/widgets/kept")  # served once ready
        assert code == 200 and got["spec"] == {"size": 2, "color": "red"}
        table = again.kubectl("get", f"widgets.{g}", "-n", "default").stdout
        assert table.split()[:4] == ["NAME", "SIZE", "COLOR", "PHASE"]
    finally:
        again.stop()

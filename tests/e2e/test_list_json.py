"""JSON lists spliced from the stored bytes answer what GET answers for each item: through raw HTTP, kubectl
`get -o json`, the Python client and an informer's list-then-watch, for built-in kinds written in the client's
key order, an HPA stored as autoscaling/v2 and listed as v1 and v2, and a CRD listed in its other version."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from tests.e2e.cluster import Server
from tests.e2e.test_custom_resources import apply_crd, delete_crd, widget_crd

pytestmark = pytest.mark.e2e

HPA = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 3,
       "targetCPUUtilizationPercentage": 60}  # fmt: skip
DEPLOYMENT = {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}  # fmt: skip


@pytest.fixture(scope="module")
def filled(server: Server) -> Iterator[tuple[str, str]]:
    """A namespace with objects of several kinds applied by kubectl (keys in its order: data/spec first) and a
    Widget CRD served as v1 (stored) and v1beta1."""
    ns = f"lj-{uuid.uuid4().hex[:6]}"
    group = f"g{uuid.uuid4().hex[:8]}.example.com"
    server.create_namespace(ns)
    beta = {**widget_crd(group)["spec"]["versions"][0], "name": "v1beta1", "storage": False}
    apply_crd(server, widget_crd(group, extra_versions=[beta]))
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "annotations": {"a": '{"x":[1]}'}},
         "data": {"k": "v"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
         "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": DEPLOYMENT},
        {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": HPA},
        {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}},
    ]  # fmt: skip
    server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    yield ns, group
    server.kubectl("delete", "namespace", ns, "--wait=false")
    delete_crd(server, f"widgets.{group}")


def _get(server: Server, path: str) -> Any:
    code, body, _ = server.raw("GET", path)
    assert code == 200, body
    return body


def test_every_listed_item_is_what_get_answers(server: Server, filled: tuple[str, str]) -> None:
    ns, group = filled
    collections = [f"/api/v1/namespaces/{ns}/{r}" for r in ("configmaps", "secrets", "services")] + [
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers",
        f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
        f"/apis/{group}/v1/namespaces/{ns}/widgets",
        f"/apis/{group}/v1beta1/namespaces/{ns}/widgets",
    ]
    for path in collections:
        for query in ("", "?limit=1"):
            listed = _get(server, path + query)
            assert listed["items"], path
            for item in listed["items"]:
                assert item == _get(server, f"{path}/{item['metadata']['name']}"), path
                assert item["apiVersion"] == path.split("/namespaces")[0].removeprefix("/apis/").removeprefix("/api/")
    hpa = _get(server, f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers")["items"][0]
    assert hpa["spec"]["targetCPUUtilizationPercentage"] == 60
    v2 = _get(server, f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers")["items"][0]
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_kubectl_get_o_json_and_the_table_list_what_get_shows(server: Server, filled: tuple[str, str]) -> None:
    ns, group = filled
    kinds = f"configmaps,secrets,services,deployments,hpa,widgets.v1beta1.{group}"
    listed = json.loads(server.kubectl("get", kinds, "-n", ns, "-o", "json").stdout)["items"]
    names = {f"{i['kind']}/{i['metadata']['name']}" for i in listed}
    assert {"ConfigMap/cm", "Secret/s", "Service/svc", "Deployment/web", "HorizontalPodAutoscaler/h",
            "Widget/w"} <= names  # fmt: skip
    for item in listed:
        if item["kind"] != "Widget":
            one = json.loads(
                server.kubectl("get", item["kind"], item["metadata"]["name"], "-n", ns, "-o", "json").stdout
            )
            assert one == item
    assert [i["apiVersion"] for i in listed if i["kind"] == "Widget"] == [f"{group}/v1beta1"]
    table = server.kubectl("get", "configmaps,deployments", "-n", ns).stdout
    assert "cm " in table and "web " in table


def test_python_client_lists_and_an_informer_watches_on_from_the_list(server: Server, filled: tuple[str, str]) -> None:
    ns, _ = filled
    api = server.client()
    try:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        cms = core.list_namespaced_config_map(ns, limit=1)
        assert cms.items[0] == core.read_namespaced_config_map(cms.items[0].metadata.name, ns)
        deployment = apps.list_namespaced_deployment(ns).items[0]
        assert deployment == apps.read_namespaced_deployment("web", ns)
        assert deployment.spec.template.metadata.labels == {"app": "web"} and deployment.metadata.resource_version
        # an informer: list (paginated), then watch from the list's resourceVersion and see the next change
        listed = core.list_namespaced_config_map(ns, limit=1)
        names = [i.metadata.name for i in listed.items]
        while listed.metadata._continue:
            listed = core.list_namespaced_config_map(ns, limit=1, _continue=listed.metadata._continue)
            names += [i.metadata.name for i in listed.items]
        assert "cm" in names and "kube-root-ca.crt" in names
        core.patch_namespaced_config_map("cm", ns, {"data": {"k": "changed"}})
        stream = watch.Watch().stream(
            core.list_namespaced_config_map, ns, resource_version=listed.metadata.resource_version, timeout_seconds=10
        )
        event = next(e for e in stream if e["object"].metadata.name == "cm")
        assert event["type"] == "MODIFIED" and event["object"].data == {"k": "changed"}
        again = core.list_namespaced_config_map(ns, field_selector="metadata.name=cm").items[0]
        assert again.metadata.resource_version == event["object"].metadata.resource_version
    finally:
        api.close()

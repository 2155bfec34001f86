"""Unit tests of the Node authorizer's graph and decisions, and of NodeRestriction's pure checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skiff.api import errors
from skiff.apiserver.admission_plugins.chain import Attributes
from skiff.apiserver.admission_plugins.node_restriction import (
    NodeRestriction,
    forbidden_labels,
    token_request_problem,
)
from skiff.apiserver.auth import UserInfo
from skiff.apiserver.authz import Decision, request_attributes
from skiff.apiserver.node_authz import NodeAuthorizer, node_identity, node_name_selected
from skiff.apiserver.node_graph import CachedNodeGraph, NodeGraph, pod_edges, volume_edges
from skiff.apiserver.registry import ResourceType

N1 = UserInfo("system:node:n1", ("system:nodes", "system:authenticated"))


def pod(name: str, node: str = "n1", ns: str = "ns", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"}, "spec": {"nodeName": node, **spec}}


WEB = pod(
    "web",
    serviceAccountName="runner",
    imagePullSecrets=[{"name": "pull"}],
    containers=[
        {
            "name": "c",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
            "envFrom": [{"secretRef": {"name": "from-secret"}}, {"configMapRef": {"name": "from-cm"}}],
        }
    ],
    volumes=[
        {"name": "s", "secret": {"secretName": "vol-secret"}},
        {"name": "c", "configMap": {"name": "vol-cm"}},
        {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-secret"}},
                                                {"configMap": {"name": "proj-cm"}}]}},
        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
        {"name": "x", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-secret"}}},
    ],
)  # fmt: skip
PV = {"metadata": {"name": "pv-1"},
      "spec": {"claimRef": {"namespace": "ns", "name": "data"},
               "csi": {"driver": "d",
                       "nodeStageSecretRef": {"namespace": "store", "name": "stage-secret"}}}}  # fmt: skip


def test_pod_edges_cover_every_reference() -> None:
    edges = pod_edges(WEB)
    assert edges is not None
    assert edges.node == "n1" and edges.service_account == "runner"
    assert edges.secrets == {"pull", "env-secret", "from-secret", "vol-secret", "proj-secret", "csi-secret"}
    assert edges.configmaps == {"env-cm", "from-cm", "vol-cm", "proj-cm"}
    assert edges.claims == {"data", "web-e"}
    assert pod_edges(pod("pending", node="")) is None
    assert volume_edges(PV).claim == ("ns", "data")
    assert volume_edges(PV).secrets == {("store", "stage-secret")}


def test_graph_reaches_only_through_the_nodes_own_pods() -> None:
    graph = NodeGraph.build([("ns", "web", WEB), ("ns", "other", pod("other", "n2", volumes=[
        {"name": "s", "secret": {"secretName": "vol-secret"}}]))], [("pv-1", PV)])  # fmt: skip
    assert graph.reaches("n1", "secrets", "ns", "env-secret")
    assert not graph.reaches("n2", "secrets", "ns", "env-secret")
    assert graph.reaches("n2", "secrets", "ns", "vol-secret") and graph.reaches("n1", "secrets", "ns", "vol-secret")
    assert not graph.reaches("n1", "secrets", "other-ns", "env-secret")
    assert graph.reaches("n1", "persistentvolumeclaims", "ns", "data")
    assert graph.reaches("n1", "persistentvolumes", "", "pv-1") and not graph.reaches(
        "n2", "persistentvolumes", "", "pv-1"
    )
    assert graph.reaches("n1", "secrets", "store", "stage-secret")  # secret -> pv -> pvc -> pod -> node
    assert graph.reaches("n1", "serviceaccounts", "ns", "runner")
    assert graph.reaches("n1", "pods", "ns", "web") and not graph.reaches("n1", "pods", "ns", "other")
    # a shared secret stays reachable while one of the node's pods still uses it
    graph.set_pod("ns", "web2", pod_edges(pod("web2", volumes=[{"name": "s", "secret": {"secretName": "env-secret"}}])))
    graph.set_pod("ns", "web", None)
    assert graph.reaches("n1", "secrets", "ns", "env-secret")
    assert not graph.reaches("n1", "configmaps", "ns", "env-cm")
    graph.set_pod("ns", "web2", None)
    assert not graph.reaches("n1", "secrets", "ns", "env-secret")
    assert not graph.reaches("n1", "persistentvolumes", "", "pv-1")  # its claim is used by no pod of n1
    graph.set_volume("pv-1", None)
    assert not graph.reaches("n1", "secrets", "store", "stage-secret")


def decide(method: str, path: str, query: dict[str, str] | None = None, user: UserInfo = N1) -> tuple[Decision, str]:
    cached = CachedNodeGraph()
    cached.graph = NodeGraph.build([("ns", "web", WEB), ("ns", "other", pod("other", "n2"))], [("pv-1", PV)])
    authorizer = NodeAuthorizer(cached)
    return asyncio.run(authorizer.authorize(request_attributes(method, path, query or {}, user)))


ALLOW, NONE = Decision.ALLOW, Decision.NO_OPINION


@pytest.mark.parametrize(
    ("method", "path", "query", "decision", "reason"),
    [
        ("GET", "/api/v1/namespaces/ns/secrets/vol-secret", {}, ALLOW, ""),
        ("GET", "/api/v1/namespaces/ns/secrets", {"fieldSelector": "metadata.name=pull", "watch": "1"}, ALLOW, ""),
        ("GET", "/api/v1/namespaces/ns/secrets/admin-token", {}, NONE,
         "no relationship found between node 'n1' and this object"),
        ("GET", "/api/v1/namespaces/ns/secrets", {}, NONE, "No Object name found"),
        ("PUT", "/api/v1/namespaces/ns/secrets/pull", {}, NONE, "can only read resources of this type"),
        ("GET", "/api/v1/namespaces/ns/configmaps/vol-cm", {}, ALLOW, ""),
        ("GET", "/api/v1/persistentvolumes/pv-1", {}, ALLOW, ""),
        ("GET", "/api/v1/persistentvolumes", {}, NONE, "can only get individual resources of this type"),
        ("GET", "/api/v1/namespaces/ns/persistentvolumeclaims/data", {}, ALLOW, ""),
        ("POST", "/api/v1/namespaces/ns/serviceaccounts/runner/token", {}, ALLOW, ""),
        ("POST", "/api/v1/namespaces/ns/serviceaccounts/default/token", {}, NONE,
         "no relationship found between node 'n1' and this object"),
        ("GET", "/api/v1/namespaces/ns/serviceaccounts/runner", {}, NONE,
         "can only create tokens for individual service accounts"),
        ("GET", "/api/v1/nodes/n1", {}, ALLOW, ""),
        ("GET", "/api/v1/nodes/n2", {}, NONE, "node 'n1' cannot read 'n2', only its own Node object"),
        ("GET", "/api/v1/nodes", {}, NONE, "node 'n1' cannot read all nodes, only its own Node object"),
        ("PATCH", "/api/v1/nodes/n2/status", {}, ALLOW, ""),  # NodeRestriction refuses it
        ("DELETE", "/api/v1/nodes/n1", {}, NONE, ""),
        ("GET", "/api/v1/pods", {"fieldSelector": "spec.nodeName=n1", "watch": "true"}, ALLOW, ""),
        ("GET", "/api/v1/pods", {"fieldSelector": "spec.nodeName=n2"}, NONE,
         "can only list/watch pods with spec.nodeName field selector"),
        ("GET", "/api/v1/pods", {}, NONE, "can only list/watch pods with spec.nodeName field selector"),
        ("GET", "/api/v1/namespaces/ns/pods/web", {}, ALLOW, ""),
        ("GET", "/api/v1/namespaces/ns/pods/other", {}, NONE,
         "no relationship found between node 'n1' and this object"),
        ("PATCH", "/api/v1/namespaces/ns/pods/other/status", {}, ALLOW, ""),  # NodeRestriction refuses it
        ("PATCH", "/api/v1/namespaces/ns/pods/web", {}, NONE, ""),
        ("GET", "/api/v1/namespaces/ns/pods/web/log", {}, NONE, ""),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", {}, ALLOW, ""),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2", {}, NONE,
         "can only access node lease with the same name as the requesting node"),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/n1", {}, NONE,
         'can only access leases in the "kube-node-lease" system namespace'),
        ("POST", "/api/v1/namespaces/ns/events", {}, ALLOW, ""),
        ("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", {}, ALLOW, ""),
        ("GET", "/api/v1/services", {}, ALLOW, ""),
        ("POST", "/apis/metrics.k8s.io/v1beta1/nodes/n1/report", {}, ALLOW, ""),
        ("POST", "/apis/metrics.k8s.io/v1beta1/nodes/n2/report", {}, NONE, "node 'n1' can only report its own metrics"),
        ("DELETE", "/api/v1/namespaces/ns", {}, NONE, ""),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {}, NONE, ""),
    ],
)  # fmt: skip
def test_node_decisions(method: str, path: str, query: dict[str, str], decision: Decision, reason: str) -> None:
    assert decide(method, path, query) == (decision, reason)


def test_only_nodes_are_decided() -> None:
    admin = UserInfo("system:admin", ("system:masters",))
    assert decide("GET", "/api/v1/namespaces/ns/secrets/x", user=admin) == (NONE, "")
    nameless = UserInfo("kubelet", ("system:nodes",))
    assert decide("GET", "/api/v1/nodes/n1", user=nameless) == (NONE, 'unknown node for user "kubelet"')
    assert node_identity(N1) == ("n1", True) and node_identity(admin) == ("", False)
    assert node_name_selected("status.phase!=Succeeded,spec.nodeName==n1", "n1")
    assert not node_name_selected("spec.nodeName!=n1", "n1")


def test_forbidden_labels() -> None:
    old = {"kubernetes.io/hostname": "n1", "team": "a"}
    assert forbidden_labels({**old, "node.kubernetes.io/pool": "x", "kubelet.kubernetes.io/y": "1",
                             "example.com/z": "1", "topology.kubernetes.io/zone": "z"}, old) == []  # fmt: skip
    assert forbidden_labels({**old, "node-role.kubernetes.io/control-plane": "",
                             "node-restriction.kubernetes.io/secure": "1", "k8s.io/x": "y"}, old) == [
        "k8s.io/x", "node-restriction.kubernetes.io/secure", "node-role.kubernetes.io/control-plane"]  # fmt: skip
    assert forbidden_labels({}, {"foo.node-restriction.kubernetes.io/a": "1"}) == [
        "foo.node-restriction.kubernetes.io/a"
    ]


def test_token_request_problem() -> None:
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "uid-web"}
    assert token_request_problem("n1", ref, WEB) is None
    assert token_request_problem("n2", ref, WEB) == "node requested token bound to a pod scheduled on a different node"
    assert token_request_problem("n1", None, None) == "node requested token not bound to a pod"
    assert (
        token_request_problem("n1", {**ref, "uid": ""}, WEB) == "node requested token with a pod binding without a uid"
    )
    assert "does not match the UID in record" in str(token_request_problem("n1", {**ref, "uid": "x"}, WEB))


class _Nodes:
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "uid": "node-uid"}}


NODES = ResourceType(group="", version="v1", plural="nodes", singular="node", kind="Node", namespaced=False)
PODS = ResourceType(group="", version="v1", plural="pods", singular="pod", kind="Pod", namespaced=True)


def admit(attrs: Attributes) -> str:
    try:
        asyncio.run(NodeRestriction(_Nodes()).validate(attrs))
    except errors.StatusError as e:
        return str(e)
    return ""


def test_node_restriction() -> None:
    node = {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}, "spec": {}}
    other = {"metadata": {"name": "n2"}, "spec": {}}
    assert admit(Attributes("UPDATE", NODES, other, other, user=N1)) == (
        'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
    )
    relabelled = {**node, "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/master": ""}}}
    assert admit(Attributes("UPDATE", NODES, relabelled, node, user=N1)) == (
        'nodes "n1" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/master'
    )
    untainted = {**node, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}
    assert admit(Attributes("UPDATE", NODES, node, untainted, user=N1)) == (
        'nodes "n1" is forbidden: node "n1" is not allowed to modify taints'
    )
    assert admit(Attributes("UPDATE", NODES, node, node, user=N1, subresource="status")) == ""
    assert admit(Attributes("UPDATE", NODES, other, other, user=UserInfo("system:admin", ("system:masters",)))) == ""
    theirs = pod("other", "n2")
    assert admit(Attributes("DELETE", PODS, theirs, theirs, user=N1)) == (
        'pods "other" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself'
    )
    assert admit(Attributes("DELETE", PODS, WEB, WEB, user=N1)) == ""
    assert admit(Attributes("UPDATE", PODS, theirs, theirs, user=N1, subresource="status")) == (
        'pods "other" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself'
    )
    assert admit(Attributes("UPDATE", PODS, WEB, WEB, user=N1)) == (
        'pods "web" is forbidden: unexpected operation "UPDATE", node "n1" can only create and delete mirror pods'
    )
    assert "can only create mirror pods" in admit(Attributes("CREATE", PODS, pod("new"), user=N1))
    mirror = pod("static", containers=[{"name": "c"}])
    mirror["metadata"].update(annotations={"kubernetes.io/config.mirror": "x"}, ownerReferences=[
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid", "controller": True}])  # fmt: skip
    assert admit(Attributes("CREATE", PODS, mirror, user=N1)) == ""

"""Node authorization and NodeRestriction end to end: a node may do its job and nothing more.

Requests carry a node's own client certificate (CN=system:node:<name>,
O=system:nodes, signed by the cluster CA as the join flow's CSRs are) over
real HTTPS; kubectl impersonates a node (`--as=system:node:n1
--as-group=system:nodes`) for `auth can-i` and `get`. A node reads its own
Node, the pods bound to it (listed by spec.nodeName only) and the secrets,
configmaps and service account tokens those pods reference; it writes its
own Node, Lease, events and its pods' status -- and is refused every other
node's objects, other pods' secrets and cluster-admin things with
Kubernetes' messages.
"""

from __future__ import annotations

import datetime
import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.cluster import Server

NODE_AS = ("--as=system:node:{}", "--as-group=system:nodes")


def node_certificate(server: Server, node: str, out: Path) -> tuple[Path, Path]:
    """A client certificate for `system:node:<node>` in `system:nodes`, signed by the server's CA."""
    tls = server.data_dir / "tls"
    ca_cert = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")])  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = out / f"{node}.crt", out / f"{node}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


class NodeClient:
    """HTTPS as one node, with its client certificate."""

    def __init__(self, server: Server, cert: tuple[Path, Path]) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "ca.crt"))
        self.ctx.load_cert_chain(str(cert[0]), str(cert[1]))

    def __call__(self, method: str, path: str, body: Any = None,
                 content_type: str = "application/json") -> tuple[int, Any]:  # fmt: skip
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def pod(name: str, node: str, *volumes_and_env: dict[str, Any], account: str = "runner") -> dict[str, Any]:
    volumes = [v for v in volumes_and_env if "name" in v]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": account, "volumes": volumes,
                     "containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip


def secret_volume(secret: str) -> dict[str, Any]:
    return {"name": secret, "secret": {"secretName": secret}}


@pytest.fixture
def setup(server: Server, tmp_path: Path) -> Iterator[tuple[str, NodeClient, str]]:
    suffix = uuid.uuid4().hex[:6]
    ns, n1, n2 = f"nodeauthz-{suffix}", f"n1-{suffix}", f"n2-{suffix}"
    server.create_namespace(ns)
    for name in ("mine", "theirs", "unused", "late"):
        assert server.raw("POST", f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": name}})[0] == 201
    for obj, plural in (({"metadata": {"name": "cm-mine"}}, "configmaps"), ({"metadata": {"name": "runner"}},
                        "serviceaccounts"), (pod("p1", n1, secret_volume("mine"),
                        {"name": "cm", "configMap": {"name": "cm-mine"}}), "pods"),
                        (pod("p2", n2, secret_volume("theirs")), "pods")):  # fmt: skip
        code, answer, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/{plural}", obj)
        assert code == 201, answer
    assert server.raw("POST", "/api/v1/nodes", {"metadata": {"name": n2}})[0] == 201
    node = NodeClient(server, node_certificate(server, n1, tmp_path))
    yield ns, node, n2
    server.raw("DELETE", f"/api/v1/namespaces/{ns}")
    for name in (n1, n2):
        server.raw("DELETE", f"/api/v1/nodes/{name}")
        server.raw("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")


def message(answer: Any) -> str:
    return str(answer.get("message", "")) if isinstance(answer, dict) else str(answer)


def test_node_does_its_job_and_no_more(server: Server, setup: tuple[str, NodeClient, str]) -> None:
    ns, node, n2 = setup
    n1 = n2.replace("n2-", "n1-")
    user = f'User "system:node:{n1}"'
    # its own Node: registered, read, status and labels it may set
    code, answer = node("POST", "/api/v1/nodes", {"metadata": {"name": n1, "labels": {"kubernetes.io/os": "linux"}}})
    assert code == 201, answer
    assert node("GET", f"/api/v1/nodes/{n1}")[0] == 200
    status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert node("PATCH", f"/api/v1/nodes/{n1}/status", status, "application/merge-patch+json")[0] == 200
    code, answer = node("PATCH", f"/api/v1/nodes/{n2}/status", status, "application/merge-patch+json")
    assert (code, message(answer)) == (
        403,
        f'nodes "{n2}" is forbidden: node "{n1}" is not allowed to modify node "{n2}"',
    )
    code, answer = node("PATCH", f"/api/v1/nodes/{n1}", {"metadata": {"labels": {
        "node-role.kubernetes.io/control-plane": ""}}}, "application/merge-patch+json")  # fmt: skip
    assert (code, message(answer)) == (
        403,
        f'nodes "{n1}" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/control-plane',
    )
    code, answer = node("DELETE", f"/api/v1/nodes/{n2}")
    assert code == 403 and f'{user} cannot delete resource "nodes"' in message(answer)

    # pods: listed by spec.nodeName only; status of its own
    code, answer = node("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{n1}")
    assert code == 200 and [p["metadata"]["name"] for p in answer["items"]] == ["p1"]
    code, answer = node("GET", "/api/v1/pods")
    assert (code, message(answer)) == (
        403,
        f'pods is forbidden: {user} cannot list resource "pods" in API group "" at '
        "the cluster scope: can only list/watch pods with spec.nodeName field selector",
    )
    patch = {"status": {"phase": "Running"}}
    assert node("PATCH", f"/api/v1/namespaces/{ns}/pods/p1/status", patch, "application/merge-patch+json")[0] == 200
    code, answer = node("PATCH", f"/api/v1/namespaces/{ns}/pods/p2/status", patch, "application/merge-patch+json")
    assert (code, message(answer)) == (
        403,
        f'pods "p2" is forbidden: node "{n1}" can only update pod status for pods with spec.nodeName set to itself',
    )
    code, answer = node("DELETE", f"/api/v1/namespaces/{ns}/pods/p2")
    assert (code, message(answer)) == (
        403,
        f'pods "p2" is forbidden: node "{n1}" can only delete pods with spec.nodeName set to itself',
    )

    # secrets and configmaps its pods use; none other
    assert node("GET", f"/api/v1/namespaces/{ns}/secrets/mine")[0] == 200
    assert node("GET", f"/api/v1/namespaces/{ns}/configmaps/cm-mine")[0] == 200
    for name in ("theirs", "unused"):
        code, answer = node("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
        assert (code, message(answer)) == (403, f'secrets "{name}" is forbidden: {user} cannot get resource "secrets" '
                                           f'in API group "" in the namespace "{ns}": no relationship found between '
                                           f"node '{n1}' and this object")  # fmt: skip
    assert node("GET", f"/api/v1/namespaces/{ns}/secrets")[0] == 403
    # a pod bound a moment ago: its secret is readable at once
    code, answer, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/pods", pod("p3", n1, secret_volume("late")))
    assert code == 201, answer
    assert node("GET", f"/api/v1/namespaces/{ns}/secrets/late")[0] == 200

    # service account tokens bound to its own pods only
    uid = server.raw("GET", f"/api/v1/namespaces/{ns}/pods/p1")[1]["metadata"]["uid"]
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p1", "uid": uid}}}  # fmt: skip
    assert node("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/runner/token", request)[0] == 201
    theirs = server.raw("GET", f"/api/v1/namespaces/{ns}/pods/p2")[1]["metadata"]["uid"]
    request["spec"]["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": "p2", "uid": theirs}
    code, answer = node("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/runner/token", request)
    assert (code, message(answer)) == (
        403,
        'serviceaccounts "runner" is forbidden: node requested token bound to a pod scheduled on a different node',
    )
    assert node("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/default/token", request)[0] == 403

    # its own Lease, events; what the service proxy reads
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    assert node("POST", leases, {"metadata": {"name": n1}, "spec": {"holderIdentity": n1}})[0] == 201
    code, answer = node("POST", leases, {"metadata": {"name": n2}, "spec": {"holderIdentity": n2}})
    assert (code, message(answer)) == (403, f'leases.coordination.k8s.io "{n2}" is forbidden: can only access node '
                                       "lease with the same name as the requesting node")  # fmt: skip
    event = {"metadata": {"name": f"e-{n1}"}, "involvedObject": {"kind": "Node", "name": n1}, "reason": "Starting"}
    assert node("POST", f"/api/v1/namespaces/{ns}/events", event)[0] == 201
    for path in ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/nodes"):
        assert node("GET", path)[0] == 200, path  # system:node-proxier, bound to system:nodes

    # cluster-admin things
    for method, path in (("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles"), ("GET", "/api/v1/secrets"),
                         ("POST", "/api/v1/namespaces"), ("DELETE", f"/api/v1/namespaces/{ns}")):  # fmt: skip
        assert node(method, path, {"metadata": {"name": "x"}} if method == "POST" else None)[0] == 403, path


def test_kubectl_as_a_node(server: Server, setup: tuple[str, NodeClient, str]) -> None:
    ns, _node, n2 = setup
    n1 = n2.replace("n2-", "n1-")
    as_n1 = (NODE_AS[0].format(n1), NODE_AS[1])

    def can_i(*args: str) -> str:
        return server.kubectl("auth", "can-i", *args, *as_n1, check=False).stdout.strip()

    assert can_i("get", "secret/mine", "-n", ns) == "yes"
    assert can_i("get", "secret/theirs", "-n", ns) == f"no - no relationship found between node '{n1}' and this object"
    assert can_i("update", f"nodes/{n1}", "--subresource=status") == "yes"
    assert can_i("create", "clusterrolebindings").startswith("no")
    assert can_i("delete", "namespaces").startswith("no")
    got = server.kubectl("get", "pods", "-A", f"--field-selector=spec.nodeName={n1}", "-o", "name", *as_n1)
    assert got.stdout.split() == ["pod/p1"]
    refused = server.kubectl("get", "secret", "theirs", "-n", ns, *as_n1, check=False)
    assert refused.returncode != 0
    assert (f'Error from server (Forbidden): secrets "theirs" is forbidden: User "system:node:{n1}" cannot get '
            f'resource "secrets" in API group "" in the namespace "{ns}": no relationship found between node '
            f"'{n1}' and this object") in refused.stderr  # fmt: skip
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:node:{n1}", "groups": ["system:nodes", "system:authenticated"],
                       "resourceAttributes": {"verb": "watch", "resource": "pods",
                                              "fieldSelector": {"rawSelector": f"spec.nodeName={n1}"}}}}  # fmt: skip
    answer = json.loads(server.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert answer["status"]["allowed"] is True
    del review["spec"]["resourceAttributes"]["fieldSelector"]
    answer = json.loads(server.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert answer["status"] == {"allowed": False,
                                "reason": "can only list/watch pods with spec.nodeName field selector"}  # fmt: skip
    refused = server.kubectl("label", "node", n2, "team=x", *as_n1, check=False)
    assert f'nodes "{n2}" is forbidden: node "{n1}" is not allowed to modify node "{n2}"' in refused.stderr

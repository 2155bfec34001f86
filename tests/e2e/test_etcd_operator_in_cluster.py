"""examples/etcd-operator in the cluster: deploy.yaml's Deployment runs the operator on its ServiceAccount.

What a user following the example's README does, on the two-node lab of tests/e2e/two_nodes.py (real
`skiff agent`s with the service proxy and the pod network, in their own network namespaces; the
server listens on every address): build the operator's image into the cluster's registry, `kubectl
apply -f crd.yaml -f deploy.yaml`, then create an EtcdCluster. The operator's pod logs in with its
projected service account token and reaches the API server at KUBERNETES_SERVICE_HOST (10.43.0.1,
the `kubernetes` Service, which the node's proxy sends to the server's advertised address), verifies
the serving certificate with the mounted ca.crt, and may do only what deploy.yaml's ClusterRole
grants (RBAC). The test writes a key through the cluster's client Service from a node and reads it back.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.e2e.agent_node import wait_for
from tests.e2e.cluster import Server
from tests.e2e.two_nodes import TwoNodes, missing
from tests.ports import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etcd-operator"
NS = "databases"

_missing = missing() or (None if shutil.which("etcdctl") else "needs etcdctl (etcd-client)")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300),
              pytest.mark.skipif(_missing is not None, reason=_missing or "")]  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    nodes = TwoNodes(tmp_path_factory.mktemp("etcd-in-cluster"))
    try:
        # the operator needs no DNS: an upstream nobody answers on
        nodes.start(upstream_dns=f"127.0.0.1:{free_port()}")
        yield nodes
    finally:
        if nodes.server is not None and nodes.server.proc is not None and nodes.server.proc.poll() is None:
            # the operator removes its finalizer; the garbage collector takes the pods and Services
            nodes.server.kubectl("delete", "etcdclusters", "--all", "-n", NS, "--timeout=60s", check=False, timeout=90)
            nodes.server.kubectl("delete", "namespace", "etcd-operator", "--wait=false", check=False)
            nodes.server.kubectl("delete", "pods", "--all", "-n", NS, "--grace-period=1", "--wait=false", check=False)
        nodes.close()


def kubectl_json(server: Server, *what: str) -> Any:
    return json.loads(server.kubectl("get", *what, "-o", "json").stdout)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def test_operator_deployment_runs_etcd_on_its_service_account(lab: TwoNodes, tmp_path: Path) -> None:
    server, registry = lab.server, lab.registry
    assert server is not None and registry is not None

    # what the server gives pods: the kubernetes Service's endpoint is an address off the host's
    # loopback, and its certificate names the Service (kopf verifies it with the mounted ca.crt)
    endpoints = kubectl_json(server, "endpoints", "kubernetes", "-n", "default")
    address = endpoints["subsets"][0]["addresses"][0]["ip"]
    assert not address.startswith("127."), endpoints
    cert = x509.load_pem_x509_certificate((server.data_dir / "tls" / "serving.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.43.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)

    # the images, as the README builds them: etcd's from the recipe, the operator's from its context
    skiff = str(Path(sys.executable).parent / "skiff")
    context = tmp_path / "image"
    subprocess.run([sys.executable, str(EXAMPLE / "image_context.py"), str(context)], check=True, capture_output=True)
    for argv in (["--recipe", "etcd", "-t", "etcd:3.4.23"], [str(context), "-t", "etcd-operator:0.1"]):
        build = subprocess.run([skiff, "image", "build", *argv, "--registry", registry.host],
                               capture_output=True, text=True, timeout=240)  # fmt: skip
        assert build.returncode == 0, build.stderr

    # the kind, the operator's namespace, account, role and Deployment, as they ship
    server.kubectl("apply", "-f", str(EXAMPLE / "crd.yaml"), "-f", str(EXAMPLE / "deploy.yaml"))
    server.kubectl("create", "namespace", NS)

    def operator_pod() -> dict[str, Any] | None:
        pods = kubectl_json(server, "pods", "-n", "etcd-operator", "-l", "app.kubernetes.io/name=etcd-operator")
        ready = [p for p in pods["items"] if condition(p, "Ready").get("status") == "True"]
        return ready[0] if ready else None

    pod = wait_for(operator_pod, 90, what="the operator's pod Ready")
    assert pod["spec"]["serviceAccountName"] == "etcd-operator"
    # the image carries kopf's compiled modules and the libraries they load (aiohttp would fall back
    # to pure Python without a word), and runs as the image's user
    check = "import os, aiohttp._http_parser, frozenlist._frozenlist, yaml; print(os.getuid())"
    out = server.kubectl("exec", "-n", "etcd-operator", pod["metadata"]["name"], "--", "python3", "-c", check)
    assert out.stdout.strip() == "65534", out.stderr

    def operator_log() -> str:
        return server.kubectl("logs", "-n", "etcd-operator", "deploy/etcd-operator", check=False).stdout

    backups = tmp_path / "backups"
    cluster = {"apiVersion": "etcd.skiff.dev/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "demo"},
               "spec": {"size": 3, "backup": {"schedule": "@every 1h",
                                              "storage": {"type": "HostPath", "hostPath": str(backups)}}}}  # fmt: skip
    server.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(cluster))

    def available() -> dict[str, Any] | None:
        obj = kubectl_json(server, "etcdcluster", "demo", "-n", NS)
        return obj if condition(obj, "Available").get("status") == "True" else None

    try:
        obj = wait_for(available, 120, what="EtcdCluster demo Available")
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{operator_log()[-6000:]}") from None
    assert obj["status"]["readyMembers"] == 3

    # a key written through the client Service (its ClusterIP, from a node: the proxy's DNAT) reads back
    ip = kubectl_json(server, "service", "demo", "-n", NS)["spec"]["clusterIP"]
    etcdctl = ["env", "ETCDCTL_API=3", "etcdctl", f"--endpoints=http://{ip}:2379", "--dial-timeout=3s"]
    lab.nodes[0].in_node(*etcdctl, "put", "greeting", "hello from the cluster")
    got = lab.nodes[1].in_node(*etcdctl, "get", "greeting", "--print-value-only").stdout.strip()
    assert got == "hello from the cluster"

    # what it may do is the ClusterRole's, nothing more
    account = "--as=system:serviceaccount:etcd-operator:etcd-operator"
    for verb, what, allowed in (("create", "pods", "yes"), ("delete", "nodes", "no"), ("list", "secrets", "no")):
        answer = server.kubectl("auth", "can-i", verb, what, "-n", NS, account, check=False).stdout.strip()
        assert answer == allowed, (verb, what, answer)

    # kopf posted its events and did everything it tried within deploy.yaml's ClusterRole
    # kopf posts its events in the background: the last may trail the status it wrote
    wait_for(lambda: "Bootstrapped" in {e["reason"] for e in kubectl_json(
        server, "events", "-n", NS, "--field-selector", "involvedObject.name=demo")["items"]},
        what="the Bootstrapped event")  # fmt: skip
    log = operator_log()
    assert "Bootstrapped" in log, log[-6000:]
    for refused in ("403", "Forbidden", "permissions"):
        assert refused not in log, log[-6000:]

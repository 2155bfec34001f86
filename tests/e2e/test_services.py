"""Services get their cluster IPs and node ports at the API, as from kube-apiserver.

Through the real kubectl and the official kubernetes client: `kubectl create
service`, `kubectl expose`, concurrent creates, requested values that are
taken or out of range (422 with Kubernetes' messages), release on delete and
on type change, headless and ExternalName Services, the `kubernetes`
Service, and allocations that survive a restart -- on SQLite and on etcd.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
Obj = dict[str, Any]
CIDR = ipaddress.ip_network("10.43.0.0/16")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def ns(server: Server) -> Iterator[str]:
    name = unique("svc")
    server.kubectl("create", "namespace", name)
    yield name
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get_svc(server: Server, ns: str, name: str) -> Obj:
    out: Obj = json.loads(server.kubectl("get", "svc", name, "-n", ns, "-o", "json").stdout)
    return out


def create(server: Server, ns: str, name: str, **spec: Any) -> tuple[int, Obj]:
    body = {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}
    code, out, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/services", body)
    return code, out


def test_kubernetes_service(server: Server) -> None:
    svc = get_svc(server, "default", "kubernetes")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": server.port}]
    assert svc["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}
    ep = json.loads(server.kubectl("get", "endpoints", "kubernetes", "-n", "default", "-o", "json").stdout)
    assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                              "ports": [{"name": "https", "port": server.port, "protocol": "TCP"}]}]  # fmt: skip


def test_kubectl_create_service_kinds(server: Server, ns: str) -> None:
    server.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", ns)
    server.kubectl("create", "service", "nodeport", "np", "--tcp=80:8080", "-n", ns)
    web, np = get_svc(server, ns, "web"), get_svc(server, ns, "np")
    for svc in (web, np):
        ip = svc["spec"]["clusterIP"]
        assert ipaddress.ip_address(ip) in CIDR and svc["spec"]["clusterIPs"] == [ip]
        assert svc["spec"]["ipFamilies"] == ["IPv4"] and svc["spec"]["ipFamilyPolicy"] == "SingleStack"
        assert svc["spec"]["internalTrafficPolicy"] == "Cluster"
    assert web["spec"]["clusterIP"] != np["spec"]["clusterIP"]
    assert "externalTrafficPolicy" not in web["spec"]
    assert np["spec"]["externalTrafficPolicy"] == "Cluster"
    assert 30000 <= np["spec"]["ports"][0]["nodePort"] <= 32767
    table = server.kubectl("get", "svc", "np", "-n", ns).stdout
    assert f"80:{np['spec']['ports'][0]['nodePort']}/TCP" in table and np["spec"]["clusterIP"] in table


def test_kubectl_expose(server: Server, ns: str) -> None:
    server.kubectl("create", "deployment", "app", "--image=registry.example/app:1", "-n", ns)
    server.kubectl("expose", "deployment", "app", "--port=80", "--target-port=8080", "--type=NodePort", "-n", ns)
    svc = get_svc(server, ns, "app")
    assert svc["spec"]["selector"] == {"app": "app"}
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in CIDR
    assert svc["spec"]["ports"][0]["targetPort"] == 8080 and svc["spec"]["ports"][0]["nodePort"] >= 30000


def test_concurrent_creates_get_distinct_ips_and_ports(server: Server, ns: str) -> None:
    api = k8s.CoreV1Api(server.client())

    def make(i: int) -> Any:
        body = k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name=f"c{i}"),
            spec=k8s.V1ServiceSpec(type="NodePort", ports=[k8s.V1ServicePort(port=80)]),
        )
        return api.create_namespaced_service(ns, body)

    with ThreadPoolExecutor(16) as pool:
        created = list(pool.map(make, range(50)))
    ips = {s.spec.cluster_ip for s in created}  # type: ignore[union-attr]
    ports = {s.spec.ports[0].node_port for s in created}  # type: ignore[union-attr,index]
    assert len(ips) == 50 and len(ports) == 50
    listed = api.list_namespaced_service(ns).items
    assert {s.spec.cluster_ip for s in listed} == ips  # type: ignore[union-attr]


def test_requested_ip_taken_or_out_of_range(server: Server, ns: str) -> None:
    api = k8s.CoreV1Api(server.client())
    wanted = "10.43.0.77"
    code, _ = create(server, ns, "first", clusterIP=wanted)
    assert code == 201
    code, status = create(server, ns, "second", clusterIP=wanted)
    assert code == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        f'Service "second" is invalid: spec.clusterIPs: Invalid value: ["{wanted}"]: '
        f"failed to allocate IP {wanted}: provided IP is already allocated"
    )
    assert status["details"]["causes"][0]["field"] == "spec.clusterIPs"
    with pytest.raises(ApiException) as exc:
        api.create_namespaced_service(
            ns, k8s.V1Service(metadata=k8s.V1ObjectMeta(name="far"),
                              spec=k8s.V1ServiceSpec(cluster_ip="10.99.0.5", ports=[k8s.V1ServicePort(port=80)])),
        )  # fmt: skip
    assert exc.value.status == 422
    assert "failed to allocate IP 10.99.0.5: provided IP 10.99.0.5 is not in the valid range" in str(exc.value.body)
    out = server.kubectl("create", "service", "clusterip", "third", "--tcp=80", f"--clusterip={wanted}", "-n", ns,
                         check=False)  # fmt: skip
    assert out.returncode != 0 and "provided IP is already allocated" in out.stderr


def test_requested_node_port_taken_or_out_of_range(server: Server, ns: str) -> None:
    code, svc = create(server, ns, "np1", type="NodePort", ports=[{"port": 80, "nodePort": 31234}])
    assert code == 201 and svc["spec"]["ports"][0]["nodePort"] == 31234
    code, status = create(server, ns, "np2", type="NodePort", ports=[{"port": 80, "nodePort": 31234}])
    assert code == 422
    assert status["message"] == (
        'Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: 31234: provided port is already allocated'
    )
    code, status = create(server, ns, "np3", type="NodePort", ports=[{"port": 80, "nodePort": 40000}])
    assert code == 422
    assert status["message"].endswith(
        "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. "
        "The range of valid ports is 30000-32767"
    )
    # nothing was kept for the failed creates: the same port is still taken only by np1
    server.kubectl("delete", "svc", "np1", "-n", ns)
    code, svc = create(server, ns, "np4", type="NodePort", ports=[{"port": 80, "nodePort": 31234}])
    assert code == 201


def test_delete_frees_the_ip(server: Server, ns: str) -> None:
    wanted = "10.43.0.78"
    assert create(server, ns, "a", clusterIP=wanted)[0] == 201
    server.kubectl("delete", "svc", "a", "-n", ns)
    code, svc = create(server, ns, "b", clusterIP=wanted)
    assert code == 201 and svc["spec"]["clusterIP"] == wanted


def test_headless_and_external_name(server: Server, ns: str) -> None:
    server.kubectl("create", "service", "clusterip", "headless", "--clusterip=None", "-n", ns)
    headless = get_svc(server, ns, "headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["clusterIPs"] == ["None"]
    server.kubectl("create", "service", "externalname", "ext", "--external-name=db.example.com", "-n", ns)
    ext = get_svc(server, ns, "ext")
    assert ext["spec"]["type"] == "ExternalName" and ext["spec"]["externalName"] == "db.example.com"
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        assert key not in ext["spec"]
    code, status = create(server, ns, "bad-np", type="NodePort", clusterIP="None")
    assert code == 422
    assert (
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
        in status["message"]
    )
    code, status = create(server, ns, "bad-ext", type="ExternalName")
    assert code == 422 and "spec.externalName: Required value" in status["message"]


def test_type_change_releases_and_allocates(server: Server, ns: str) -> None:
    wanted = "10.43.0.79"
    code, _ = create(server, ns, "flip", type="NodePort", clusterIP=wanted, ports=[{"port": 80, "nodePort": 31235}])
    assert code == 201
    server.kubectl("patch", "svc", "flip", "-n", ns, "-p",
                   '{"spec":{"type":"ExternalName","externalName":"example.com"}}')  # fmt: skip
    flipped = get_svc(server, ns, "flip")
    assert "clusterIP" not in flipped["spec"] and "nodePort" not in flipped["spec"]["ports"][0]
    # both values are free again
    assert (
        create(server, ns, "reuse", clusterIP=wanted, type="NodePort", ports=[{"port": 80, "nodePort": 31235}])[0]
        == 201
    )
    server.kubectl("patch", "svc", "flip", "-n", ns, "-p", '{"spec":{"type":"ClusterIP","externalName":null}}')
    back = get_svc(server, ns, "flip")
    assert ipaddress.ip_address(back["spec"]["clusterIP"]) in CIDR and back["spec"]["clusterIP"] != wanted


def test_cluster_ip_is_immutable_and_replace_keeps_it(server: Server, ns: str, tmp_path: Path) -> None:
    server.kubectl("create", "service", "nodeport", "keep", "--tcp=80:8080", "-n", ns)
    before = get_svc(server, ns, "keep")
    out = server.kubectl("patch", "svc", "keep", "-n", ns, "-p", '{"spec":{"clusterIP":"10.43.0.80"}}', check=False)
    assert out.returncode != 0
    assert 'spec.clusterIPs[0]: Invalid value: ["10.43.0.80"]: may not change once set' in out.stderr
    manifest = tmp_path / "keep.yaml"  # as the user wrote it: no clusterIP, no nodePort
    manifest.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "keep", "namespace": ns},
        "spec": {"type": "NodePort", "selector": {"app": "keep"}, "ports": [{"name": "80-8080", "port": 80,
                                                                            "targetPort": 8080}]},
    }))  # fmt: skip
    server.kubectl("replace", "-f", str(manifest))
    server.kubectl("apply", "-f", str(manifest))
    after = get_svc(server, ns, "keep")
    assert after["spec"]["clusterIP"] == before["spec"]["clusterIP"]
    assert after["spec"]["ports"][0]["nodePort"] == before["spec"]["ports"][0]["nodePort"]


def test_malformed_services_are_rejected(server: Server, ns: str) -> None:
    code, status = create(server, ns, "dup", ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}])
    assert code == 422 and 'spec.ports[1].name: Duplicate value: "a"' in status["message"]
    code, status = create(server, ns, "badport", ports=[{"port": 80, "targetPort": "not_a_name"}])
    assert code == 422 and "spec.ports[0].targetPort" in status["message"]
    code, status = create(server, ns, "1badname")
    assert code == 422 and "a DNS-1035 label" in status["message"]


def _restart_keeps_allocations(srv: Server) -> None:
    def names_ips() -> dict[str, str]:
        out = json.loads(srv.kubectl("get", "svc", "-n", "default", "-o", "json").stdout)
        return {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in out["items"]}

    for i in range(14):
        assert create(srv, "default", f"before-{i}")[0] == 201
    before = names_ips()
    srv.stop()
    again = Server(srv.data_dir, extra_args=srv.extra_args).start()
    try:
        assert names_ips() == before
        for i in range(14):
            assert create(again, "default", f"after-{i}")[0] == 201, again.logs()[-2000:]
        everything = names_ips()
        assert len(set(everything.values())) == len(everything) == 29  # 28 dynamic + the kubernetes Service
        code, status = create(again, "default", "one-too-many")
        assert code == 500 and "failed to allocate a serviceIP: range is full" in status["message"]
        assert everything["kubernetes"] == "10.96.0.1"
        assert "cannot create Service default/kubernetes" not in again.logs()  # it exists: kept, not re-made
    finally:
        again.stop()


def test_restart_never_reuses_an_ip(tmp_path: Path) -> None:
    """A /27 has 28 addresses for dynamic allocation: 14 before and 14 after a restart use them all, once."""
    srv = Server(tmp_path / "data", extra_args=["--service-cluster-ip-range", "10.96.0.0/27"]).start()
    try:
        _restart_keeps_allocations(srv)
    finally:
        srv.stop()


@pytest.mark.etcd
def test_restart_never_reuses_an_ip_on_etcd(tmp_path: Path) -> None:
    from tests.storage.conftest import start_etcd

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="skiff-etcd-", dir=base)
    proc, url = start_etcd(os.path.join(workdir, "data"))
    try:
        args = ["--datastore-endpoint", url, "--service-cluster-ip-range", "10.96.0.0/27"]
        srv = Server(tmp_path / "data", extra_args=args).start()
        try:
            _restart_keeps_allocations(srv)
        finally:
            srv.stop()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def test_load_balancer_local_gets_a_health_check_node_port(server: Server, ns: str) -> None:
    code, svc = create(server, ns, "lb", type="LoadBalancer", externalTrafficPolicy="Local")
    assert code == 201, svc
    health = svc["spec"]["healthCheckNodePort"]
    assert 30000 <= health <= 32767 and health != svc["spec"]["ports"][0]["nodePort"]
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is True
    server.kubectl("patch", "svc", "lb", "-n", ns, "-p", '{"spec":{"externalTrafficPolicy":"Cluster"}}')
    assert "healthCheckNodePort" not in get_svc(server, ns, "lb")["spec"]
    code, again = create(server, ns, "lb2", type="NodePort", ports=[{"port": 80, "nodePort": health}])
    assert code == 201, again  # released with the policy change

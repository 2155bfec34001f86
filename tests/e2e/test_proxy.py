"""The service proxy programming a real node's iptables, inside network namespaces (see proxy_lab).

A Syncer is fed Service and EndpointSlice objects directly here; test_proxy_server.py runs the
whole `skiff proxy` command against a real server. Every test removes its rules (and checks so);
the namespaces go at the end of the module, even after failures.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from skiff.node.proxy.iptables import Syncer
from skiff.node.proxy.model import SERVICE_NAME_LABEL, service_ports
from tests.e2e.proxy_lab import CLUSTER_CIDR, Lab, Pod, in_ns, missing

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

SUBNET = 61
CLUSTER_IP = "10.96.61.10"


def service(name: str, cluster_ip: str, *, node_port: int | None = None, affinity: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "NodePort" if node_port else "ClusterIP",
        "clusterIP": cluster_ip,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
    }
    if node_port:
        spec["ports"][0]["nodePort"] = node_port
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity}}
    return {"metadata": {"namespace": "default", "name": name}, "spec": spec}


def endpoint_slice(service_name: str, ips: list[str], not_ready: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "default",
            "name": f"{service_name}-abc",
            "labels": {SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ip not in not_ready}} for ip in ips],
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(SUBNET)
    try:
        lab.setup(3, tmp_path_factory.mktemp("www"))
        # a rule of the "host" that the proxy must leave alone
        in_ns(lab.node, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.9.9.9", "-j", "RETURN")
        in_ns(lab.node, "iptables", "-N", "HOST-OWN")
        in_ns(lab.node, "iptables", "-A", "HOST-OWN", "-p", "tcp", "--dport", "9", "-j", "DROP")
        yield lab
    finally:
        lab.close()


@pytest.fixture
async def syncer(lab: Lab) -> AsyncIterator[Syncer]:
    before = lab.rules()
    s = Syncer(cluster_cidr=CLUSTER_CIDR, netns=lab.node)
    try:
        yield s
    finally:
        await s.cleanup()
    assert lab.rules() == before, "cleanup() must leave the node's rules as they were"


def ips(lab: Lab) -> list[str]:
    return [p.ip for p in lab.pods]


async def test_cluster_ip_reaches_every_ready_backend(lab: Lab, syncer: Syncer) -> None:
    svc = service("web", CLUSTER_IP)
    assert await syncer.sync(service_ports([svc], [endpoint_slice("web", ips(lab))]))
    seen = lab.names(lab.client, CLUSTER_IP, 80, count=40)
    assert set(seen) == {"pod-0", "pod-1", "pod-2"}
    # the same objects again: nothing is written
    writes = syncer.writes
    assert not await syncer.sync(service_ports([svc], [endpoint_slice("web", ips(lab))]))
    assert syncer.writes == writes
    # pod-1 not ready: no new connection reaches it
    await syncer.sync(service_ports([svc], [endpoint_slice("web", ips(lab), not_ready=(lab.pods[1].ip,))]))
    seen = lab.names(lab.client, CLUSTER_IP, 80, count=40)
    assert set(seen) == {"pod-0", "pod-2"}
    # pod-2 removed from the slice
    await syncer.sync(service_ports([svc], [endpoint_slice("web", [lab.pods[0].ip])]))
    assert set(lab.names(lab.client, CLUSTER_IP, 80, count=20)) == {"pod-0"}


async def test_service_without_endpoints_refuses_connections(lab: Lab, syncer: Syncer) -> None:
    svc = service("empty", "10.96.61.20", node_port=30020)
    await syncer.sync(service_ports([svc], [endpoint_slice("empty", ips(lab), not_ready=tuple(ips(lab)))]))
    for host, port in (("10.96.61.20", 80), (lab.node_ip, 30020)):
        results = lab.get(lab.client, host, port, count=3, timeout=5.0)
        assert [r.get("err") for r in results] == ["refused"] * 3, results
    # from the node itself too (OUTPUT)
    results = lab.get(lab.node, "10.96.61.20", 80, count=1, timeout=5.0)
    assert results[0].get("err") == "refused", results


async def test_node_port_from_outside_and_from_the_node(lab: Lab, syncer: Syncer) -> None:
    svc = service("np", "10.96.61.30", node_port=30030)
    await syncer.sync(service_ports([svc], [endpoint_slice("np", ips(lab))]))
    assert set(lab.names(lab.client, lab.node_ip, 30030, count=40)) == {"pod-0", "pod-1", "pod-2"}
    assert set(lab.names(lab.node, lab.node_ip, 30030, count=40)) == {"pod-0", "pod-1", "pod-2"}
    # the cluster IP of a NodePort service works as well
    assert set(lab.names(lab.client, "10.96.61.30", 80, count=40)) == {"pod-0", "pod-1", "pod-2"}


async def test_node_port_only_on_given_addresses(lab: Lab) -> None:
    s = Syncer(cluster_cidr=CLUSTER_CIDR, netns=lab.node, node_port_addresses=[f"10.244.{SUBNET}.1"])
    try:
        await s.sync(service_ports([service("np2", "10.96.61.31", node_port=30031)], [endpoint_slice("np2", ips(lab))]))
        assert lab.names(lab.pods[0].netns, f"10.244.{SUBNET}.1", 30031, count=5)
        results = lab.get(lab.client, lab.node_ip, 30031, count=1, timeout=5.0)
        assert "ok" not in results[0], results  # nothing listens there, nothing forwards it
    finally:
        await s.cleanup()


async def test_session_affinity_client_ip_sticks(lab: Lab, syncer: Syncer) -> None:
    svc = service("sticky", "10.96.61.40", affinity=60)
    await syncer.sync(service_ports([svc], [endpoint_slice("sticky", ips(lab))]))
    seen = lab.names(lab.client, "10.96.61.40", 80, count=30)
    assert len(set(seen)) == 1, seen
    from_pod = lab.names(lab.pods[2].netns, "10.96.61.40", 80, count=30)
    assert len(set(from_pod)) == 1, from_pod


async def test_hairpin_pod_reaches_its_own_service(lab: Lab, syncer: Syncer) -> None:
    svc = service("self", "10.96.61.50")
    await syncer.sync(service_ports([svc], [endpoint_slice("self", [lab.pods[0].ip])]))
    # the only backend is the caller itself: its own address as source would not come back
    assert set(lab.names(lab.pods[0].netns, "10.96.61.50", 80, count=10)) == {"pod-0"}
    await syncer.sync(service_ports([svc], [endpoint_slice("self", ips(lab))]))
    assert set(lab.names(lab.pods[0].netns, "10.96.61.50", 80, count=40)) == {"pod-0", "pod-1", "pod-2"}


async def test_rules_survive_a_full_resync_and_removed_services_go(lab: Lab, syncer: Syncer) -> None:
    one, two = service("one", "10.96.61.60"), service("two", "10.96.61.61")
    slices = [endpoint_slice("one", ips(lab)), endpoint_slice("two", ips(lab))]
    await syncer.sync(service_ports([one, two], slices))
    rules = lab.rules()
    assert await syncer.verify()
    # someone deletes a jump rule: the periodic check notices, a full sync puts it back
    in_ns(lab.node, "iptables", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment",
          "kubernetes service portals", "-j", "KUBE-SERVICES")  # fmt: skip
    assert not await syncer.verify()
    syncer.invalidate()
    await syncer.sync(service_ports([one, two], slices))
    assert lab.rules() == rules  # a full sync writes the same rules, jumps not duplicated
    await syncer.sync(service_ports([one], slices))
    after = lab.rules()
    assert "10.96.61.61" not in after and "10.96.61.60" in after
    started = time.monotonic()
    assert set(lab.names(lab.client, "10.96.61.60", 80, count=20)) == {"pod-0", "pod-1", "pod-2"}
    assert time.monotonic() - started < 60


async def test_stale_udp_flows_are_flushed_when_an_endpoint_goes(lab: Lab, syncer: Syncer) -> None:
    for pod in lab.pods[:2]:
        lab.serve_udp(pod, 5353)
    svc = {
        "metadata": {"namespace": "default", "name": "dns"},
        "spec": {"clusterIP": "10.96.61.53", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }

    def udp_slice(pods: list[Pod]) -> dict[str, Any]:
        eps = endpoint_slice("dns", [p.ip for p in pods])
        eps["ports"] = [{"name": "dns", "port": 5353, "protocol": "UDP"}]
        return eps

    await syncer.sync(service_ports([svc], [udp_slice(lab.pods[:2])]))
    first = {lab.udp(lab.client, "10.96.61.53", 53, 40053) for _ in range(3)}
    assert len(first) == 1 and first <= {"pod-0", "pod-1"}, first  # one flow, one endpoint
    gone = next(p for p in lab.pods if p.name in first)
    await syncer.sync(service_ports([svc], [udp_slice([p for p in lab.pods[:2] if p is not gone])]))
    # the endpoint still runs; only the flushed conntrack entry keeps the flow from going back to it
    after = {lab.udp(lab.client, "10.96.61.53", 53, 40053) for _ in range(3)}
    assert after == {"pod-0", "pod-1"} - first, after


async def test_local_traffic_policies(lab: Lab, syncer: Syncer) -> None:
    def on_nodes(name: str) -> dict[str, Any]:
        eps = endpoint_slice(name, ips(lab))
        for endpoint, node in zip(eps["endpoints"], ("lab-node", "other", "other"), strict=True):
            endpoint["nodeName"] = node  # only pod-0 is on the proxy's node
        return eps

    ext = service("ext", "10.96.61.70", node_port=30070)
    ext["spec"]["externalTrafficPolicy"] = "Local"
    internal = service("int", "10.96.61.71")
    internal["spec"]["internalTrafficPolicy"] = "Local"
    await syncer.sync(service_ports([ext, internal], [on_nodes("ext"), on_nodes("int")], node_name="lab-node"))
    everyone = {"pod-0", "pod-1", "pod-2"}
    # from outside, a Local node port answers only with this node's endpoints
    assert set(lab.names(lab.client, lab.node_ip, 30070, count=30)) == {"pod-0"}
    # pods and the node itself are short-circuited to every endpoint; so is the cluster IP
    assert set(lab.names(lab.pods[2].netns, lab.node_ip, 30070, count=40)) == everyone
    assert set(lab.names(lab.node, lab.node_ip, 30070, count=40)) == everyone
    assert set(lab.names(lab.client, "10.96.61.70", 80, count=40)) == everyone
    # internalTrafficPolicy: Local: the cluster IP reaches this node's endpoints only
    assert set(lab.names(lab.client, "10.96.61.71", 80, count=30)) == {"pod-0"}


async def test_external_ip(lab: Lab, syncer: Syncer) -> None:
    svc = service("extip", "10.96.61.80")
    svc["spec"]["externalIPs"] = ["172.30.61.80"]
    await syncer.sync(service_ports([svc], [endpoint_slice("extip", ips(lab))]))
    assert set(lab.names(lab.client, "172.30.61.80", 80, count=40)) == {"pod-0", "pod-1", "pod-2"}
    await syncer.sync(service_ports([svc], []))
    results = lab.get(lab.client, "172.30.61.80", 80, count=2, timeout=5.0)
    assert [r.get("err") for r in results] == ["refused", "refused"], results

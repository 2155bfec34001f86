"""Services across two real nodes: a pod on node A reaches backends on A and B by name, DNS works from pods.

Two `skiff agent`s, each in its own network namespace (tests/e2e/two_nodes.py), against one
`skiff server` running the cluster DNS. Three `web` backends (busybox httpd answering its hostname)
are bound two to node A and one to node B; a client pod on node A asks with busybox `wget` and
`nslookup` inside its container (runc exec), so it sees exactly what a pod sees: its
resolv.conf, the proxy's DNAT, the routes between the nodes. External-looking names are
answered by a small DNS server the test runs on loopback, reached through the cluster DNS's
forwarder (there is no internet).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer

from skiff.node.agent.networking import NetworkOptions, pod_dns
from tests.e2e.agent_node import wait_for
from tests.e2e.cluster import Server, free_port
from tests.e2e.two_nodes import NetnsNode, TwoNodes, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.skipif(missing() is not None, reason=missing() or "")]  # fmt: skip

GATE = "skiff.test/serving"
BACKENDS = {"web-a1": 0, "web-a2": 0, "web-b1": 1}  # name -> node index
EXTERNAL_IP = "192.0.2.77"


class ExampleResolver(BaseResolver):  # type: ignore[misc]
    """The 'internet': `*.example.test` is EXTERNAL_IP, anything else NXDOMAIN."""

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        if str(request.q.qname).rstrip(".").endswith("example.test") and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A(EXTERNAL_IP)))
        elif not str(request.q.qname).rstrip(".").endswith("example.test"):
            reply.header.rcode = 3
        return reply


def pod(name: str, image: str, script: str, node: str, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    container = {"name": "c", "image": image, "command": ["sh", "-c", script]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [container], **spec}}


def service(name: str, selector: dict[str, str], **spec: Any) -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "targetPort": 80}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": ports, **spec}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = free_port()
    server = DNSServer(ExampleResolver(), port=port, address="127.0.0.1")
    server.start_thread()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[TwoNodes]:
    nodes = TwoNodes(tmp_path_factory.mktemp("two-nodes"))
    try:
        nodes.start(upstream_dns=upstream)
        _deploy(nodes)
        yield nodes
    finally:
        nodes.close()


def _deploy(lab: TwoNodes) -> None:
    server, reg = lab.server, lab.registry
    assert server is not None and reg is not None
    web = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"
    gates = [{"conditionType": GATE}]
    docs = [pod(name, reg.busybox, web, lab.nodes[i].node, labels={"app": "web"}, readinessGates=gates)
            for name, i in BACKENDS.items()]
    docs += [
        pod("client", reg.busybox, "exec sleep 3600", lab.nodes[0].node),
        pod("own-dns", reg.busybox, "exec sleep 3600", lab.nodes[1].node, dnsPolicy="None",
            dnsConfig={"nameservers": ["192.0.2.53"], "searches": ["corp.example"],
                       "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}),
        pod("host-dns", reg.busybox, "exec sleep 3600", lab.nodes[1].node, dnsPolicy="Default"),
        service("web", {"app": "web"}, type="NodePort"),
        service("web-headless", {"app": "web"}, clusterIP="None"),
        service("empty", {"app": "nothing"}),
        service("web-metrics", {"app": "web"}, ports=[{"name": "metrics", "port": 80, "targetPort": "metrics"}]),
    ]
    server.kubectl("apply", "-n", "default", "-f", "-", input=yaml.safe_dump_all(docs))
    for name in BACKENDS:
        wait_for(lambda n=name: condition(get_pod(server, n), "ContainersReady") == "True", timeout=90,
                 what=f"{name} running")  # fmt: skip
        set_gate(server, name, True)
    wait_for(lambda: condition(get_pod(server, "client"), "Ready") == "True", timeout=90, what="client running")
    wait_for(lambda: ready_addresses(server, "web") == len(BACKENDS), what="web's endpoints ready")


def get_pod(server: Server, name: str) -> dict[str, Any]:
    out = server.kubectl("get", "pod", name, "-n", "default", "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def condition(p: dict[str, Any], type_: str) -> str:
    return next((c["status"] for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == type_), "")


def set_gate(server: Server, name: str, ready: bool) -> None:
    patch = json.dumps({"status": {"conditions": [{"type": GATE, "status": "True" if ready else "False"}]}})
    server.kubectl("patch", "pod", name, "-n", "default", "--subresource=status", "--type=strategic", "-p", patch)


def ready_addresses(server: Server, service_name: str) -> int:
    out = server.kubectl("get", "endpointslices", "-n", "default", "-l", f"kubernetes.io/service-name={service_name}",
                         "-o", "json")  # fmt: skip
    return sum(1 for s in json.loads(out.stdout)["items"] for e in s.get("endpoints") or []
               if (e.get("conditions") or {}).get("ready"))  # fmt: skip


def in_client(lab: TwoNodes, script: str) -> str:
    """Run a shell script in the client pod's container on node A; its stdout and stderr."""
    cid = get_pod(lab.server, "client")["status"]["containerStatuses"][0]["containerID"].removeprefix("runc://")  # type: ignore[arg-type]
    res = lab.nodes[0].exec(cid, "sh", "-c", script)
    return res.stdout + res.stderr


def answers(lab: TwoNodes, count: int, url: str = "http://web.default.svc.cluster.local") -> list[str]:
    """`count` requests from the client pod (busybox wget, one connection each); each answer's body or error."""
    out = in_client(lab, f"for i in $(seq {count}); do timeout 5 wget -qO- {url} 2>&1 || echo failed; done")
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_kube_dns_service_leads_to_the_servers_dns(lab: TwoNodes) -> None:
    server = lab.server
    assert server is not None

    def get(kind: str) -> dict[str, Any]:
        return json.loads(server.kubectl("get", kind, "kube-dns", "-n", "kube-system", "-o", "json").stdout)  # type: ignore[no-any-return]

    svc = get("service")
    assert svc["spec"]["clusterIP"] == "10.43.0.10" and "selector" not in svc["spec"]
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [("dns", 53, "UDP"),
                                                                                   ("dns-tcp", 53, "TCP")]  # fmt: skip
    subset = get("endpoints")["subsets"][0]
    assert [a["ip"] for a in subset["addresses"]] == [lab.host_ip]  # the server's DNS, on the nodes' link


def test_pod_resolv_conf_and_hosts(lab: TwoNodes) -> None:
    resolv = in_client(lab, "cat /etc/resolv.conf").splitlines()
    assert resolv == ["search default.svc.cluster.local svc.cluster.local cluster.local",
                      "nameserver 10.43.0.10", "options ndots:5"]  # fmt: skip
    ip = get_pod(lab.server, "client")["status"]["podIP"]  # type: ignore[arg-type]
    assert f"{ip}\tclient" in in_client(lab, "cat /etc/hosts")


def test_dns_policy_none_and_default(lab: TwoNodes) -> None:
    server, b = lab.server, lab.nodes[1]
    assert server is not None

    def resolv_conf(name: str) -> list[str]:
        p = wait_for(lambda: (q := get_pod(server, name)) and condition(q, "Ready") == "True" and q, what=name)
        return b.exec(p["status"]["containerStatuses"][0]["containerID"].removeprefix("runc://"),
                      "cat", "/etc/resolv.conf").stdout.splitlines()  # fmt: skip

    assert resolv_conf("own-dns") == ["search corp.example", "nameserver 192.0.2.53", "options ndots:2 edns0"]
    host = asyncio.run(pod_dns(NetworkOptions())).host  # the host's resolvers, as the agents read them
    assert [line for line in resolv_conf("host-dns") if line.startswith("nameserver")] == [
        f"nameserver {ns}" for ns in host.nameservers
    ]


def test_service_name_reaches_every_backend_on_both_nodes(lab: TwoNodes) -> None:
    seen: list[str] = []

    def every_backend_answered() -> bool:
        seen.extend(answers(lab, 15))
        return set(seen) >= set(BACKENDS)

    wait_for(every_backend_answered, timeout=60, what="answers from every backend")
    assert set(seen) == set(BACKENDS), seen  # nothing but the backends' names: no errors, no strangers


def test_pods_reach_each_other_across_nodes_by_pod_ip(lab: TwoNodes) -> None:
    a, b = lab.nodes
    for here, there in ((a, b), (b, a)):  # host-gw: each node routes the other's pod CIDR via its address
        routes = here.in_node("ip", "route", "show", "proto", "199").stdout.split()
        assert routes[:3] == [there.pod_cidr, "via", there.ip], routes
    ip = get_pod(lab.server, "web-b1")["status"]["podIP"]  # type: ignore[arg-type]
    assert answers(lab, 1, f"http://{ip}/") == ["web-b1"]


def test_node_port_reaches_the_service_from_the_host(lab: TwoNodes) -> None:
    svc = json.loads(lab.server.kubectl("get", "service", "web", "-o", "json").stdout)  # type: ignore[union-attr]
    port = svc["spec"]["ports"][0]["nodePort"]
    seen = set()
    for node in lab.nodes:
        for _ in range(6):
            with urllib.request.urlopen(f"http://{node.ip}:{port}/", timeout=10) as resp:
                seen.add(resp.read().decode().strip())
    assert seen <= set(BACKENDS) and len(seen) >= 2, seen


def test_headless_service_dns_returns_every_pod_ip(lab: TwoNodes) -> None:
    ips = {get_pod(lab.server, name)["status"]["podIP"] for name in BACKENDS}  # type: ignore[arg-type]
    out = in_client(lab, "nslookup -type=a web-headless.default.svc.cluster.local")
    assert set(re.findall(r"^Address:\s*([0-9.]+)$", out, re.M)) == ips, out


def test_external_names_resolve_through_the_forwarder(lab: TwoNodes) -> None:
    out = in_client(lab, "nslookup -type=a www.example.test")
    assert re.findall(r"^Address:\s*([0-9.]+)$", out, re.M) == [EXTERNAL_IP], out


def test_service_selecting_nothing_refuses_connections(lab: TwoNodes) -> None:
    out = answers(lab, 1, "http://empty.default.svc.cluster.local")
    assert any("refused" in line for line in out), out


def test_port_name_no_backend_has_is_skipped_with_an_event(lab: TwoNodes) -> None:
    server = lab.server
    assert server is not None

    def warnings() -> list[dict[str, Any]]:
        out = server.kubectl("get", "events", "-n", "default", "--field-selector", "involvedObject.name=web-metrics",
                             "-o", "json").stdout  # fmt: skip
        return [e for e in json.loads(out)["items"] if e["reason"] == "FailedToFindPort"]

    found = wait_for(warnings, what="a FailedToFindPort event on web-metrics")
    assert found[0]["type"] == "Warning" and "no TCP container port named 'metrics'" in found[0]["message"]
    slices = server.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web-metrics", "-o", "json")
    assert not [p for s in json.loads(slices.stdout)["items"] for p in s.get("ports") or []]  # endpoints, no port
    out = answers(lab, 1, "http://web-metrics.default.svc.cluster.local")
    assert any("refused" in line for line in out), out


def dnat_to(lab: TwoNodes, ip: str) -> bool:
    """Whether the client's node still sends connections to `ip` (a backend's pod IP) by its proxy's DNAT.

    Twelve answers without a backend prove nothing on their own: while it is still routed one in three
    goes to it, and twelve misses in a row happen (0.8 %); the rules tell when it is really out."""
    return f"--to-destination {ip}:" in lab.nodes[0].in_node("iptables-save").stdout


def test_unready_backend_stops_receiving_traffic(lab: TwoNodes) -> None:
    assert lab.server is not None
    ip = get_pod(lab.server, "web-b1")["status"]["podIP"]
    set_gate(lab.server, "web-b1", False)
    wait_for(lambda: not dnat_to(lab, ip), timeout=60, what="the proxy's rules without the unready web-b1")
    wait_for(lambda: "web-b1" not in answers(lab, 12), timeout=60, what="no answer from the unready web-b1")
    assert set(answers(lab, 15)) == {"web-a1", "web-a2"}
    set_gate(lab.server, "web-b1", True)
    wait_for(lambda: "web-b1" in answers(lab, 12), timeout=60, what="web-b1 answering again once ready")


def test_deleted_backend_stops_receiving_traffic(lab: TwoNodes) -> None:
    assert lab.server is not None
    ip = get_pod(lab.server, "web-a2")["status"]["podIP"]
    lab.server.kubectl("delete", "pod", "web-a2", "-n", "default", "--wait=false")
    wait_for(lambda: not dnat_to(lab, ip), timeout=60, what="the proxy's rules without the deleted web-a2")
    wait_for(lambda: "web-a2" not in answers(lab, 12), timeout=60, what="no answer from the deleted web-a2")
    assert set(answers(lab, 15)) == {"web-a1", "web-b1"}


def test_agents_remove_their_rules_and_routes_at_stop(lab: TwoNodes) -> None:
    assert lab.server is not None
    a, b = lab.nodes
    b.cleanup()  # its pods deleted through the agent, then SIGTERM
    lab.server.kubectl("delete", "node", b.node)
    wait_for(lambda: a.in_node("ip", "route", "show", "proto", "199").stdout == "", timeout=60,
             what="node A's route to the deleted node B's pods gone")  # fmt: skip
    a.cleanup()
    for node in lab.nodes:
        rules = node.in_node("iptables-save").stdout
        assert not [line for line in rules.splitlines() if "KUBE-" in line or "SKIFF-" in line], node.node
        assert node.in_node("ip", "route", "show", "proto", "199").stdout == "", node.node


def test_nothing_left_behind(lab: TwoNodes) -> None:
    nodes: list[NetnsNode] = list(lab.nodes)
    lab.close()
    assert lab.leftovers() == {}
    for node in nodes:
        assert node.leftovers() == {}, node.node
        assert not [p for p in Path("/run/netns").glob(f"{node.netns_prefix}*")]

"""A pod's resolv.conf from dnsPolicy and dnsConfig; the pod network's route plan; named Service ports pods lack."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.node.agent.dnsconfig import PodDNS, ResolverConfig, parse_resolv_conf
from skiff.node.agent.podnetwork import Route, desired_routes, parse_routes

HOST = parse_resolv_conf("# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example. lab\n"
                         "options edns0 ndots:2\n")  # fmt: skip
NODE = PodDNS(cluster_dns=("10.43.0.10",), cluster_domain="cluster.local", host=HOST)
CLUSTER_SEARCH = ("team.svc.cluster.local", "svc.cluster.local", "cluster.local")
CLUSTER = ResolverConfig(("10.43.0.10",), (*CLUSTER_SEARCH, "corp.example", "lab"), ("ndots:5",))


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "team"}, "spec": spec}


def test_host_file_parsed() -> None:
    assert HOST == ResolverConfig(("192.0.2.53", "192.0.2.54"), ("corp.example", "lab"), ("edns0", "ndots:2"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, CLUSTER),
        ({"dnsPolicy": "ClusterFirst"}, CLUSTER),
        ({"dnsPolicy": "ClusterFirst", "hostNetwork": True}, HOST),
        ({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": True}, CLUSTER),
        ({"dnsPolicy": "Default"}, HOST),
        ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}}, ResolverConfig(("1.1.1.1",))),
    ],
    ids=["unset", "cluster-first", "cluster-first-host-network", "with-host-net", "default", "none"],
)
def test_policy(spec: dict[str, Any], expected: ResolverConfig) -> None:
    assert NODE.for_pod(pod(**spec)) == (expected, [])


def test_dns_config_merged() -> None:
    options = [{"name": "ndots", "value": "2"}, {"name": "edns0"}, {"name": "timeout", "value": ""}]
    config = {"nameservers": ["10.43.0.10", "192.0.2.1"], "searches": ["svc.cluster.local", "extra.example"],
              "options": options}  # fmt: skip
    got, events = NODE.for_pod(pod(dnsConfig=config))
    assert got.nameservers == ("10.43.0.10", "192.0.2.1")
    assert got.searches == (*CLUSTER_SEARCH, "corp.example", "lab", "extra.example")
    assert got.options == ("ndots:2", "edns0", "timeout")
    assert events == []
    assert got.render().splitlines() == [
        "search " + " ".join(got.searches),
        "nameserver 10.43.0.10",
        "nameserver 192.0.2.1",
        "options ndots:2 edns0 timeout",
    ]


def test_limits_trimmed_with_events() -> None:
    config = {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "searches": [f"d{i}.example" for i in range(40)]}
    got, events = NODE.for_pod(pod(dnsConfig=config))
    assert got.nameservers == ("10.43.0.10", "1.1.1.1", "2.2.2.2")
    assert len(got.searches) == 32
    assert [reason for reason, _ in events] == ["DNSConfigForming", "DNSConfigForming"]
    assert "the applied nameserver line is: 10.43.0.10 1.1.1.1 2.2.2.2" in events[0][1]


def test_no_cluster_dns_falls_back_to_host() -> None:
    got, events = PodDNS(cluster_dns=(), host=HOST).for_pod(pod())
    assert got == HOST
    assert events[0][0] == "MissingClusterDNS"


def node(name: str, ip: str | None, cidr: str | None, **meta: Any) -> dict[str, Any]:
    status = {"addresses": [{"type": "Hostname", "address": name}] + ([{"type": "InternalIP", "address": ip}]
                                                                      if ip else [])}  # fmt: skip
    return {"metadata": {"name": name, **meta}, "spec": {"podCIDR": cidr} if cidr else {}, "status": status}


def test_routes_to_other_nodes() -> None:
    nodes = [
        node("a", "10.0.0.1", "10.42.0.0/24"),
        node("b", "10.0.0.2", "10.42.1.0/24"),
        node("c", None, "10.42.2.0/24"),  # no address yet
        node("d", "10.0.0.4", None),  # no pod CIDR
        node("e", "10.0.0.5", "10.42.5.0/24", deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    assert desired_routes(nodes, "a") == {Route("10.42.1.0/24", "10.0.0.2")}


def test_parse_ip_route_output() -> None:
    out = "10.42.1.0/24 via 10.0.0.2 dev eth0 \n10.42.7.9 via 10.0.0.3 dev eth0 \nblackhole 10.9.0.0/16 \n"
    assert parse_routes(out) == {Route("10.42.1.0/24", "10.0.0.2"), Route("10.42.7.9/32", "10.0.0.3")}


def test_missing_named_port_message() -> None:
    from skiff.controllers.endpointslice import missing_ports_message

    def backend(name: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": ports}]},
                "status": {"phase": "Running", "podIP": "10.42.0.9"}}  # fmt: skip

    svc = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                              {"name": "metrics", "port": 9100, "targetPort": "metrics"}]}}  # fmt: skip
    pods = [backend("a", [{"name": "metrics", "containerPort": 9100}]), backend("b", []), backend("c", [])]
    assert missing_ports_message(svc, pods) == (
        "port 'metrics': pod b and 1 more has no TCP container port named 'metrics'; left out of those ports' endpoints"
    )
    assert missing_ports_message(svc, pods[:1]) == ""


async def test_loopback_only_host_resolvers_give_way_to_systemd_resolved(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skiff.node.agent import networking

    stub, upstreams = tmp_path / "resolv.conf", tmp_path / "systemd.conf"
    stub.write_text("nameserver 127.0.0.53\nsearch lan\n")
    upstreams.write_text("nameserver 192.0.2.53\nsearch lan\n")
    monkeypatch.setattr(networking, "DEFAULT_RESOLV_CONF", str(stub))
    monkeypatch.setattr(networking, "SYSTEMD_RESOLV_CONF", str(upstreams))
    dns = await networking.pod_dns(networking.NetworkOptions(resolv_conf=str(stub)))
    assert dns.host == ResolverConfig(("192.0.2.53",), ("lan",))

"""Cluster DNS records from Services and EndpointSlices (skiff.dns.records), without sockets or a server.

Each case is a question against a fixed set of objects and the answer the
Kubernetes DNS specification (or CoreDNS where it is silent) gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from skiff.client.cache import Cache
from skiff.dns.forward import default_upstreams, parse_upstream
from skiff.dns.records import ClusterData, Resolver, dashed, reverse_ip, undashed
from skiff.dns.server import DnsServer

Obj = dict[str, Any]
Z = "cluster.local"


def service(name: str, ns: str = "default", *, ip: str | None = "10.43.0.20", ports: list[Obj] | None = None,
            **spec: Any) -> Obj:  # fmt: skip
    s: Obj = {"ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}
    if ip is not None:
        s["clusterIP"] = ip
    return {"metadata": {"name": name, "namespace": ns}, "spec": s}


def endpoint_slice(svc: str, endpoints: list[Obj], *, ns: str = "default", name: str | None = None,
                   ports: list[Obj] | None = None, family: str = "IPv4") -> Obj:  # fmt: skip
    return {
        "metadata": {"name": name or f"{svc}-abc", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def ep(ip: str, *, ready: bool | None = True, hostname: str | None = None) -> Obj:
    e: Obj = {"addresses": [ip]}
    if ready is not None:
        e["conditions"] = {"ready": ready}
    if hostname:
        e["hostname"] = hostname
    return e


def cache(*objs: Obj) -> Cache:
    c = Cache()
    for o in objs:
        c.put(o)
    return c


@pytest.fixture
def resolver() -> Resolver:
    services = cache(
        service("web", ip="10.43.0.20", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                               {"port": 9000}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        service("db", ip="None", ports=[{"name": "pg", "port": 5432}]),
        service("empty", ip="None"),
        service("ext", ip=None, type="ExternalName", externalName="www.example.com"),
        service("alias", ip=None, type="ExternalName", externalName=f"web.default.svc.{Z}"),
        service("web", ns="other", ip="10.43.0.30"),
    )  # fmt: skip
    slices = cache(
        endpoint_slice("db", [ep("10.42.0.5", hostname="db-0"), ep("10.42.1.6", hostname="db-1"),
                              ep("10.42.2.7", ready=False, hostname="db-2"), ep("10.42.3.8", ready=None)],
                       ports=[{"name": "pg", "port": 5433, "protocol": "TCP"}]),
        endpoint_slice("db", [ep("10.42.0.5", hostname="db-0")], name="db-dup",
                       ports=[{"name": "pg", "port": 5433, "protocol": "TCP"}]),
        endpoint_slice("empty", [ep("10.42.0.9", ready=False)]),
        endpoint_slice("web", [ep("10.42.0.10", hostname="w0")]),
    )  # fmt: skip
    return Resolver(ClusterData(services=services, slices=slices), zone=Z)


def rdatas(answer: Any, rtype: int | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in answer.answer if rtype is None or rr.rtype == rtype)


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode", "expected"),
    [
        ("web.default.svc.cluster.local.", "A", RCODE.NOERROR, ["10.43.0.20"]),
        ("WEB.Default.SVC.cluster.LOCAL.", "A", RCODE.NOERROR, ["10.43.0.20"]),
        ("web.other.svc.cluster.local.", "A", RCODE.NOERROR, ["10.43.0.30"]),
        ("web.default.svc.cluster.local.", "AAAA", RCODE.NOERROR, []),
        ("nope.default.svc.cluster.local.", "A", RCODE.NXDOMAIN, []),
        ("web.nons.svc.cluster.local.", "A", RCODE.NXDOMAIN, []),
        ("db.default.svc.cluster.local.", "A", RCODE.NOERROR, ["10.42.0.5", "10.42.1.6", "10.42.3.8"]),
        ("db-1.db.default.svc.cluster.local.", "A", RCODE.NOERROR, ["10.42.1.6"]),
        ("10-42-3-8.db.default.svc.cluster.local.", "A", RCODE.NOERROR, ["10.42.3.8"]),
        ("db-2.db.default.svc.cluster.local.", "A", RCODE.NXDOMAIN, []),  # not ready
        ("empty.default.svc.cluster.local.", "A", RCODE.NXDOMAIN, []),  # headless, nothing ready
        ("_http._tcp.web.default.svc.cluster.local.", "SRV", RCODE.NOERROR,
         ["0 100 80 web.default.svc.cluster.local."]),
        ("_dns._udp.web.default.svc.cluster.local.", "SRV", RCODE.NOERROR,
         ["0 100 53 web.default.svc.cluster.local."]),
        ("_http._udp.web.default.svc.cluster.local.", "SRV", RCODE.NXDOMAIN, []),
        ("_nope._tcp.web.default.svc.cluster.local.", "SRV", RCODE.NXDOMAIN, []),
        ("_http._tcp.web.default.svc.cluster.local.", "A", RCODE.NOERROR, []),  # exists, no A
        ("_tcp.web.default.svc.cluster.local.", "A", RCODE.NOERROR, []),  # empty non-terminal
        ("_pg._tcp.db.default.svc.cluster.local.", "SRV", RCODE.NOERROR,
         ["0 33 5433 10-42-3-8.db.default.svc.cluster.local.", "0 33 5433 db-0.db.default.svc.cluster.local.",
          "0 33 5433 db-1.db.default.svc.cluster.local."]),
        ("ext.default.svc.cluster.local.", "CNAME", RCODE.NOERROR, ["www.example.com."]),
        ("alias.default.svc.cluster.local.", "A", RCODE.NOERROR, ["10.43.0.20", "web.default.svc.cluster.local."]),
        ("10-42-0-99.default.pod.cluster.local.", "A", RCODE.NOERROR, ["10.42.0.99"]),
        ("fd00--1.default.pod.cluster.local.", "AAAA", RCODE.NOERROR, ["fd00::1"]),
        ("not-an-ip.default.pod.cluster.local.", "A", RCODE.NXDOMAIN, []),
        ("dns-version.cluster.local.", "TXT", RCODE.NOERROR, ['"1.1.0"']),
        ("cluster.local.", "SOA", RCODE.NOERROR,
         ["ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"]),
        ("svc.cluster.local.", "A", RCODE.NOERROR, []),
        ("default.svc.cluster.local.", "A", RCODE.NOERROR, []),
        ("what.cluster.local.", "A", RCODE.NXDOMAIN, []),
    ],
)  # fmt: skip
def test_answers(resolver: Resolver, qname: str, qtype: str, rcode: int, expected: list[str]) -> None:
    answer = resolver.resolve(qname, getattr(QTYPE, qtype))
    assert answer.rcode == rcode
    got = [s.replace(str(resolver.serial), "SERIAL") for s in rdatas(answer)]
    assert got == sorted(expected)
    assert all(rr.ttl == 5 for rr in answer.answer)
    if answer.answer:  # the question's own spelling (a CNAME's target follows under its own name)
        assert str(answer.answer[0].rname) == qname
    if not answer.answer:  # NXDOMAIN and NODATA: the SOA for negative caching
        assert [rr.rtype for rr in answer.authority] == [QTYPE.SOA]


def test_external_name_is_chased_upstream(resolver: Resolver) -> None:
    answer = resolver.resolve("ext.default.svc.cluster.local.", QTYPE.A)
    assert answer.chase == "www.example.com"
    assert rdatas(answer, QTYPE.CNAME) == ["www.example.com."]


def test_srv_additional_section_has_target_addresses(resolver: Resolver) -> None:
    answer = resolver.resolve("_pg._tcp.db.default.svc.cluster.local.", QTYPE.SRV)
    extra = {str(rr.rname): str(rr.rdata) for rr in answer.additional}
    assert extra["db-0.db.default.svc.cluster.local."] == "10.42.0.5"
    assert extra["10-42-3-8.db.default.svc.cluster.local."] == "10.42.3.8"


def test_publish_not_ready_addresses_counts_every_endpoint() -> None:
    services = cache(service("db", ip="None", publishNotReadyAddresses=True))
    slices = cache(endpoint_slice("db", [ep("10.42.0.5", ready=False)]))
    r = Resolver(ClusterData(services=services, slices=slices))
    assert rdatas(r.resolve("db.default.svc.cluster.local", QTYPE.A)) == ["10.42.0.5"]


def test_changes_in_the_caches_show_at_once(resolver: Resolver) -> None:
    resolver.data.services.remove("default/web")
    assert resolver.resolve("web.default.svc.cluster.local.", QTYPE.A).rcode == RCODE.NXDOMAIN
    resolver.data.slices.put(endpoint_slice("empty", [ep("10.42.0.9")]))
    assert rdatas(resolver.resolve("empty.default.svc.cluster.local.", QTYPE.A)) == ["10.42.0.9"]


def test_pods_verified_and_disabled() -> None:
    pods = cache({"metadata": {"name": "p", "namespace": "default"}, "status": {"podIP": "10.42.0.7"}})
    data = ClusterData(services=Cache(), slices=Cache(), pods=pods)
    verified = Resolver(data, pods="verified")
    assert rdatas(verified.resolve("10-42-0-7.default.pod.cluster.local", QTYPE.A)) == ["10.42.0.7"]
    assert verified.resolve("10-42-0-8.default.pod.cluster.local", QTYPE.A).rcode == RCODE.NXDOMAIN
    assert verified.resolve("10-42-0-7.other.pod.cluster.local", QTYPE.A).rcode == RCODE.NXDOMAIN
    disabled = Resolver(data, pods="disabled")
    assert disabled.resolve("10-42-0-7.default.pod.cluster.local", QTYPE.A).rcode == RCODE.NXDOMAIN


def test_reverse(resolver: Resolver) -> None:
    svc = resolver.resolve_reverse("20.0.43.10.in-addr.arpa.", QTYPE.PTR)
    assert svc is not None and rdatas(svc) == ["web.default.svc.cluster.local."]
    pet = resolver.resolve_reverse("6.1.42.10.in-addr.arpa.", QTYPE.PTR)
    assert pet is not None and rdatas(pet) == ["db-1.db.default.svc.cluster.local."]
    assert resolver.resolve_reverse("10.0.42.10.in-addr.arpa.", QTYPE.PTR) is None  # ClusterIP Service's endpoint
    assert resolver.resolve_reverse("8.8.8.8.in-addr.arpa.", QTYPE.PTR) is None  # not ours: forwarded


def test_address_labels() -> None:
    assert dashed("10.42.0.7") == "10-42-0-7"
    assert undashed("10-42-0-7") == "10.42.0.7"
    assert undashed("fd00--1") == "fd00::1"
    assert undashed("10-42-0") is None
    assert reverse_ip("1.0.0.127.in-addr.arpa") == "127.0.0.1"
    assert reverse_ip("1." + "0." * 31 + "ip6.arpa") == "::1"


def test_upstreams(tmp_path: Path) -> None:
    assert parse_upstream("10.0.0.2") == ("10.0.0.2", 53)
    assert parse_upstream("10.0.0.2:5353") == ("10.0.0.2", 5353)
    assert parse_upstream("[fd00::1]:5353") == ("fd00::1", 5353)
    assert parse_upstream("fd00::1") == ("fd00::1", 53)
    with pytest.raises(ValueError):
        parse_upstream("dns.example.com")
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.com\nnameserver 10.43.0.10\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
    assert default_upstreams(["10.43.0.10"], conf) == [("192.0.2.1", 53), ("fe80::1", 53)]
    conf.write_text("nameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver 127.0.0.53\n")
    assert default_upstreams(path=conf, listen=[("127.0.0.1", 10053)]) == [("127.0.0.1", 53), ("10.0.0.2", 53),
                                                                       ("127.0.0.53", 53)]  # fmt: skip
    assert default_upstreams(path=conf, listen=[("127.0.0.1", 53)]) == [("10.0.0.2", 53), ("127.0.0.53", 53)]
    assert default_upstreams(path=conf, listen=[("0.0.0.0", 53)]) == [("10.0.0.2", 53)]


def test_wire_answers_and_truncation() -> None:
    ips = [f"10.42.{i // 250}.{i % 250 + 1}" for i in range(60)]
    services = cache(service("big", ip="None"))
    slices = cache(endpoint_slice("big", [ep(ip) for ip in ips]))
    server = DnsServer(Resolver(ClusterData(services=services, slices=slices)), None)
    query = DNSRecord.question("big.default.svc.cluster.local", "A")
    udp = server.local(query.pack(), udp=True)
    assert isinstance(udp, bytes)
    reply = DNSRecord.parse(udp)
    assert reply.header.tc == 1 and reply.header.id == query.header.id and not reply.rr
    tcp = server.local(query.pack(), udp=False)
    assert isinstance(tcp, bytes)
    reply = DNSRecord.parse(tcp)
    assert reply.header.aa == 1 and sorted(str(rr.rdata) for rr in reply.rr) == sorted(ips)
    assert server.local(b"\x12\x34garbage-that-is-long", udp=True) is not None  # FORMERR, not a crash
    assert isinstance(server.local(DNSRecord.question("example.com", "A").pack(), udp=True), DNSRecord)  # forward


def test_remembered_replies_are_forgotten_on_change(resolver: Resolver) -> None:
    server = DnsServer(resolver, None)
    query = DNSRecord.question("web.default.svc.cluster.local", "A")
    first = server.local(query.pack(), udp=True)
    assert isinstance(first, bytes) and [str(rr.rdata) for rr in DNSRecord.parse(first).rr] == ["10.43.0.20"]
    query.header.id = 4242
    again = server.local(query.pack(), udp=True)
    assert isinstance(again, bytes) and DNSRecord.parse(again).header.id == 4242 and again[2:] == first[2:]
    resolver.data.services.remove("default/web")
    resolver.changed()  # what the informer handlers call
    gone = server.local(query.pack(), udp=True)
    assert isinstance(gone, bytes) and DNSRecord.parse(gone).header.rcode == RCODE.NXDOMAIN

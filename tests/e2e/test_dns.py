"""Cluster DNS (skiff.dns) against a real `skiff server`, asked with dnspython over UDP and TCP.

Services and EndpointSlices are written through the API (ClusterIPs and
slices set by hand, Services without selectors, so that no controller
rewrites them); the DNS server runs in the test's event loop on a free
loopback port and forwards other names to a small upstream DNS server the
test starts on loopback, never the internet.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from skiff.client import Client
from skiff.client import resources as R
from skiff.dns import run_dns
from tests.e2e.cluster import Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
Obj = dict[str, Any]
BIG = [f"192.0.2.{i}" for i in range(1, 61)]  # too many for 512 bytes of UDP


class Upstream(asyncio.DatagramProtocol):
    """A loopback resolver for `*.example.test`: A 192.0.2.1, `big.example.test` truncated over UDP."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.questions: list[str] = []

    def answer(self, data: bytes, *, udp: bool) -> bytes:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".")
        self.questions.append(name)
        reply = request.reply()
        if not name.endswith("example.test"):
            reply.header.rcode = 3
        elif name == "big.example.test" and udp:
            reply.header.tc = 1
        else:
            for ip in BIG if name == "big.example.test" else ["192.0.2.1"]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A(ip)))
        return bytes(reply.pack())

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(self.answer(data, udp=True), addr)

    async def tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        reply = self.answer(await reader.readexactly(n), udp=False)
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
        writer.close()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(server.kubeconfig) as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> AsyncIterator[str]:
    name = f"dns-{uuid.uuid4().hex[:8]}"
    await client.create(R.NAMESPACES, {"metadata": {"name": name}})
    yield name
    await client.delete(R.NAMESPACES, name)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, int]]:
    port = free_port()
    proto = Upstream()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", port))
    tcp = await asyncio.start_server(proto.tcp, "127.0.0.1", port)
    yield proto, port
    transport.close()
    tcp.close()


@pytest.fixture
async def dns_port(client: Client, upstream: tuple[Upstream, int]) -> AsyncIterator[int]:
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_dns(client, stop, [("127.0.0.1", port)], "cluster.local", [("127.0.0.1", upstream[1])], ready=ready)
    )
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what failed
    assert ready.is_set(), "the DNS server did not start"
    yield port
    stop.set()
    await asyncio.wait_for(task, 10)


async def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=5)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)


def values(reply: dns.message.Message, rdtype: str = "A") -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in reply.answer if rrset.rdtype == t for rd in rrset)


async def eventually(check: Callable[[], Any], within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def answered(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    """The first reply with answers (the informers see new objects a moment after they are written)."""

    async def check() -> dns.message.Message | None:
        reply = await ask(port, name, rdtype)
        return reply if reply.answer else None

    reply = await eventually(check)
    assert reply is not None, f"no answer for {name} {rdtype}"
    return reply


def svc(name: str, ip: str, **spec: Any) -> Obj:
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    return {"metadata": {"name": name}, "spec": {"clusterIP": ip, **spec}}


def endpoint_slice(service: str, endpoints: list[Obj], port: int = 8080) -> Obj:
    return {
        "metadata": {"name": f"{service}-manual", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def ip_in(ns: str, last: int) -> str:
    """A ClusterIP unlikely to clash between tests of the shared server."""
    return f"10.43.{int(ns[4:8], 16) % 250 + 2}.{last}"


async def test_service_a_srv_nodata_and_nxdomain(client: Client, ns: str, dns_port: int) -> None:
    ip = ip_in(ns, 20)
    created = await client.create(R.SERVICES, svc("web", ip), namespace=ns)
    assert created["spec"]["clusterIP"] == ip
    name = f"web.{ns}.svc.cluster.local"
    reply = await answered(dns_port, name)
    assert reply.rcode() == dns.rcode.NOERROR and values(reply) == [ip]
    assert reply.answer[0].ttl == 5 and reply.flags & dns.flags.AA
    srv = await ask(dns_port, f"_http._tcp.{name}", "SRV")
    assert [v.split()[2:] for v in values(srv, "SRV")] == [["80", name + "."]]
    assert [rd.to_text() for rrset in srv.additional for rd in rrset] == [ip]
    nodata = await ask(dns_port, name, "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    missing = await ask(dns_port, f"nope.{ns}.svc.cluster.local")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority[0].rdtype == dns.rdatatype.SOA
    assert values(await ask(dns_port, f"web.{ns}.svc.cluster.local", tcp=True)) == [ip]


async def test_headless_service_answers_every_ready_endpoint(client: Client, ns: str, dns_port: int) -> None:
    await client.create(R.SERVICES, svc("db", "None"), namespace=ns)
    endpoints = [
        {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": True}},
        {"addresses": ["10.42.1.6"], "hostname": "db-1", "conditions": {"ready": True}},
        {"addresses": ["10.42.2.7"], "hostname": "db-2", "conditions": {"ready": False}},
        {"addresses": ["10.42.3.8"], "conditions": {"ready": True}},
    ]
    await client.create(R.ENDPOINTSLICES, endpoint_slice("db", endpoints), namespace=ns)
    name = f"db.{ns}.svc.cluster.local"
    reply = await answered(dns_port, name)
    assert values(reply) == ["10.42.0.5", "10.42.1.6", "10.42.3.8"]
    assert values(await ask(dns_port, f"db-1.{name}")) == ["10.42.1.6"]
    assert (await ask(dns_port, f"db-2.{name}")).rcode() == dns.rcode.NXDOMAIN  # not ready
    srv = await ask(dns_port, f"_http._tcp.{name}", "SRV")
    targets = sorted((v.split()[2], v.split()[3]) for v in values(srv, "SRV"))
    assert targets == [("8080", f"10-42-3-8.{name}."), ("8080", f"db-0.{name}."), ("8080", f"db-1.{name}.")]


async def test_pod_names(dns_port: int, ns: str) -> None:
    assert values(await ask(dns_port, f"10-42-0-7.{ns}.pod.cluster.local")) == ["10.42.0.7"]
    assert (await ask(dns_port, f"bad.{ns}.pod.cluster.local")).rcode() == dns.rcode.NXDOMAIN


async def test_changes_reach_answers_within_seconds(client: Client, ns: str, dns_port: int) -> None:
    ip = ip_in(ns, 30)
    await client.create(R.SERVICES, svc("gone", ip), namespace=ns)
    name = f"gone.{ns}.svc.cluster.local"
    assert values(await answered(dns_port, name)) == [ip]
    await client.delete(R.SERVICES, "gone", namespace=ns)
    start = time.monotonic()

    async def nxdomain() -> bool:
        return (await ask(dns_port, name)).rcode() == dns.rcode.NXDOMAIN

    assert await eventually(nxdomain, within=60), "a deleted Service still answers"
    assert time.monotonic() - start < 10.0  # seconds, not a TTL's minutes (a loaded machine takes more than 1 s)


async def test_other_names_are_forwarded(client: Client, ns: str, dns_port: int,
                                         upstream: tuple[Upstream, int]) -> None:  # fmt: skip
    reply = await ask(dns_port, "www.example.test")
    assert values(reply) == ["192.0.2.1"] and "www.example.test" in upstream[0].questions
    assert (await ask(dns_port, "nothing.invalid")).rcode() == dns.rcode.NXDOMAIN  # the upstream's answer
    big = await ask(dns_port, "big.example.test", tcp=True)  # upstream truncates over UDP: asked again over TCP
    assert values(big) == sorted(BIG)
    assert (await ask(dns_port, "big.example.test")).flags & dns.flags.TC  # too big for the client's UDP
    await client.create(R.SERVICES, {"metadata": {"name": "ext"}, "spec": {
        "type": "ExternalName", "externalName": "www.example.test", "ports": []}}, namespace=ns)  # fmt: skip
    ext = await answered(dns_port, f"ext.{ns}.svc.cluster.local")
    assert values(ext, "CNAME") == ["www.example.test."] and values(ext) == ["192.0.2.1"]


async def test_tcp_pipelined_queries(dns_port: int) -> None:
    """Two queries written at once on one connection (RFC 7766): both answered, matched by id."""
    reader, writer = await asyncio.open_connection("127.0.0.1", dns_port)
    queries = {}
    for qid, name in ((101, "www.example.test"), (102, "dns-version.cluster.local")):
        q = DNSRecord.question(name, "TXT" if name.startswith("dns-version") else "A")
        q.header.id = qid
        queries[qid] = name
        writer.write(struct.pack("!H", len(q.pack())) + q.pack())
    await writer.drain()
    replies = {}
    for _ in queries:
        (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
        reply = DNSRecord.parse(await reader.readexactly(n))
        replies[reply.header.id] = [str(rr.rdata) for rr in reply.rr]
    writer.close()
    assert replies == {101: ["192.0.2.1"], 102: ['"1.1.0"']}


async def test_dead_upstream_is_servfail(client: Client) -> None:
    port, dead = free_port(), free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_dns(client, stop, [("127.0.0.1", port)], upstreams=[("127.0.0.1", dead)], forward_timeout=0.3, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 20)
    try:
        reply = await ask(port, "www.example.test")
        assert reply.rcode() == dns.rcode.SERVFAIL
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_skiff_dns_command(server: Server, tmp_path: Path) -> None:
    ns = f"dns-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", ns)
    server.kubectl("create", "service", "clusterip", "cli", "--tcp=80:8080", f"--clusterip={ip_in(ns, 40)}", "-n", ns)
    port = free_port()
    log = (tmp_path / "dns.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "skiff"), "dns", "--kubeconfig", str(server.kubeconfig),
         "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    try:
        answer: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not answer:
            assert proc.poll() is None, (tmp_path / "dns.log").read_text()
            try:
                reply = asyncio.run(ask(port, f"cli.{ns}.svc.cluster.local"))
                answer = values(reply)
            except (OSError, dns.exception.Timeout):
                time.sleep(0.2)
        assert answer == [ip_in(ns, 40)], (tmp_path / "dns.log").read_text()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        server.kubectl("delete", "namespace", ns, "--wait=false")


async def test_statefulset_pods_by_name(client: Client, ns: str, dns_port: int, sim_nodes: Any) -> None:
    """The whole path: a headless Service and a StatefulSet on simulated nodes; the EndpointSlice
    controller publishes each pod with its hostname; DNS answers `web-0.web.<ns>.svc…` with its IP."""
    await asyncio.to_thread(sim_nodes, 1)
    labels = {"app": "web"}
    await client.create(R.SERVICES, svc("web", "None", selector=labels), namespace=ns)
    await client.create(R.STATEFULSETS, {"metadata": {"name": "web"}, "spec": {
        "serviceName": "web", "replicas": 2, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
        namespace=ns)  # fmt: skip

    async def pod_ips() -> dict[str, str]:
        pods = (await client.list(R.PODS, namespace=ns))["items"]
        ips = {p["metadata"]["name"]: (p.get("status") or {}).get("podIP") for p in pods}
        return ips if len(ips) == 2 and all(ips.values()) else {}

    ips = await eventually(pod_ips, within=60)
    assert ips, "the StatefulSet's pods got no IPs"
    name = f"web.{ns}.svc.cluster.local"

    async def both() -> list[str]:
        got = values(await ask(dns_port, name))
        return got if len(got) == 2 else []

    assert await eventually(both, within=60) == sorted(ips.values())
    assert values(await ask(dns_port, f"web-0.{name}")) == [ips["web-0"]]
    srv = await ask(dns_port, f"_http._tcp.{name}", "SRV")
    assert sorted(v.split()[3] for v in values(srv, "SRV")) == [f"web-0.{name}.", f"web-1.{name}."]

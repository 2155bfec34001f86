"""Cluster DNS speed: answers/s of the record logic and queries/s over UDP, as printed figures.

Why this exists: every name a pod looks up (and with ndots:5, several
search-domain tries per lookup) reaches cluster DNS, so its answer rate bounds
service discovery. This fills the caches with N Services x 10 endpoints (a
quarter headless) without an apiserver, then measures:

* `Resolver.resolve` calls/s for a ClusterIP A, a headless A (10 records), an
  SRV, and an NXDOMAIN (the search-domain misses);
* queries/s and p50/p99 latency over UDP on loopback against the real server
  (`skiff.dns.server`), driven from a separate process with a window of
  queries in flight, so the load generator never shares the server's loop.

It prints figures and never fails on time.

    .venv/bin/python -m bench.dns [--services N] [--seconds S] [--window W]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import socket
import statistics
import time
from typing import Any

from dnslib import QTYPE, DNSRecord

from skiff.client.cache import Cache
from skiff.dns.records import ClusterData, Resolver
from skiff.dns.server import DnsServer, UdpProtocol


def build(n: int) -> Resolver:
    services, slices = Cache(), Cache()
    for i in range(n):
        headless = i % 4 == 0
        ip = "None" if headless else f"10.43.{i // 250}.{i % 250 + 1}"
        services.put({"metadata": {"name": f"svc-{i}", "namespace": "default"},
                      "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        slices.put({"metadata": {"name": f"svc-{i}-x", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [f"10.42.{i % 200}.{j + 1}"], "conditions": {"ready": True}}
                                  for j in range(10)]})  # fmt: skip
    return Resolver(ClusterData(services=services, slices=slices))


def rate(fn: Any, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        count += 200
    return count / elapsed


def client(port: int, names: list[str], seconds: float, window: int, out: Any) -> None:
    """Runs in its own process: keeps `window` queries in flight for `seconds`; sends back latencies."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(1.0)
    packets = [DNSRecord.question(name, "A").pack()[2:] for name in names]  # built once: the client stays cheap
    sent: dict[int, float] = {}
    latencies: list[float] = []
    lost, qid = 0, 0
    deadline = time.perf_counter() + seconds

    def send() -> None:
        nonlocal qid
        qid = (qid + 1) % 65536
        sent[qid] = time.perf_counter()
        sock.send(qid.to_bytes(2, "big") + random.choice(packets))

    for _ in range(window):
        send()
    while time.perf_counter() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            lost += len(sent)
            sent.clear()
            for _ in range(window):
                send()
            continue
        started = sent.pop(int.from_bytes(data[:2], "big"), None)
        if started is not None:
            latencies.append(time.perf_counter() - started)
        send()
    out.send((latencies, lost))


async def serve_and_measure(resolver: Resolver, seconds: float, window: int) -> tuple[list[float], int]:
    server = DnsServer(resolver, None)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(server), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    n = len(resolver.data.services)
    names = [f"svc-{i}.default.svc.cluster.local" for i in range(n)]
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=client, args=(port, names, seconds, window, child))
    proc.start()
    latencies, lost = await asyncio.to_thread(parent.recv)  # the loop keeps serving meanwhile
    await asyncio.to_thread(proc.join)
    transport.close()
    return latencies, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()
    resolver = build(args.services)
    print(f"cluster DNS, {args.services} Services x 10 endpoints (a quarter headless)")
    print("record logic (Resolver.resolve), answers/s:")
    cases = {
        "ClusterIP A": ("svc-1.default.svc.cluster.local", QTYPE.A),
        "headless A (10)": ("svc-4.default.svc.cluster.local", QTYPE.A),
        "SRV": ("_http._tcp.svc-1.default.svc.cluster.local", QTYPE.SRV),
        "NXDOMAIN": ("svc-1.default.svc.cluster.local.default.svc.cluster.local", QTYPE.A),
    }
    for label, (name, qtype) in cases.items():
        print(f"  {label:<18} {rate(lambda n=name, t=qtype: resolver.resolve(n, t), args.seconds / 4):>12,.0f}")
    latencies, lost = asyncio.run(serve_and_measure(resolver, args.seconds, args.window))
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[int(len(ms) * 0.99)] if ms else float("nan")
    print(f"UDP on loopback, {args.window} in flight, one client process:")
    print(f"  queries/s {len(ms) / args.seconds:>12,.0f}   p50 {statistics.median(ms) if ms else 0:.2f} ms"
          f"   p99 {p99:.2f} ms   unanswered {lost}")  # fmt: skip


if __name__ == "__main__":
    main()

"""What the service proxy costs: rule generation and sync for many Services, and traffic through a ClusterIP.

Why this exists: the issue asks that a node keep up with 1,000 Services x 10
endpoints and that a ClusterIP cost little next to reaching a pod directly
(throughput ratio >= 0.9). As root, in throw-away network namespaces (the
host's rules are never touched):

* rule generation: Services + EndpointSlices -> ServicePorts -> rules -> restore text;
* sync: the first (full) iptables-restore of all of it, a sync with no change
  (nothing written), one endpoint changed (incremental), and cleanup;
* traffic: a client pod (in the cluster CIDR, so not masqueraded; on a
  second pod subnet) routed through a "node" netns to a "pod" netns that
  serves tiny HTTP answers (asyncio, one new TCP connection per request, as
  NAT applies per connection), straight to the pod IP and through a ClusterIP
  with the 1,000 Services loaded, alternating rounds; requests/s and p50/p99.

    .venv/bin/python bench/proxy.py [--services 1000] [--endpoints 10] [--seconds 5] [--rounds 3]

Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from skiff.node.proxy import rules
from skiff.node.proxy.iptables import Syncer
from skiff.node.proxy.model import SERVICE_NAME_LABEL, service_ports

SERVER = r"""
import asyncio, sys
BODY = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(BODY)
        await writer.drain()
    except Exception:
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", 8080, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

CLIENT = r"""
import asyncio, json, sys, time
host, port, seconds, conc, src = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lat, errors = [], 0
async def worker(deadline):
    global errors
    while time.monotonic() < deadline:
        t = time.monotonic()
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            await r.read()
            w.close()
            lat.append(time.monotonic() - t)
        except OSError:
            errors += 1
async def main():
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(worker(deadline) for _ in range(conc)))
asyncio.run(main())
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
print(json.dumps({"rps": len(lat) / seconds, "p50": q(0.5), "p99": q(0.99), "errors": errors}))
"""


def sh(*argv: str, input: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def ns(name: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", name, *argv)


def objects(n_services: int, n_endpoints: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    services, slices = [], []
    for i in range(n_services):
        name = f"svc-{i}"
        services.append({
            "metadata": {"namespace": "bench", "name": name},
            "spec": {"type": "NodePort", "clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30000 + i}]},
        })  # fmt: skip
        slices.append({
            "metadata": {"namespace": "bench", "name": f"{name}-x", "labels": {SERVICE_NAME_LABEL: name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.{100 + i // 250}.{i % 250}.{e + 1}"], "conditions": {"ready": True}}
                          for e in range(n_endpoints)],
        })  # fmt: skip
    return services, slices


class Net:
    """client pod (10.244.91.2) ── node ── pod (10.244.90.10), as in tests/e2e/proxy_lab.py, minimal."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.node, self.client, self.pod = f"skpb{tag}-node", f"skpb{tag}-client", f"skpb{tag}-pod"
        self.made: list[str] = []
        self.server: subprocess.Popen[str] | None = None

    def setup(self) -> None:
        for name in (self.node, self.client, self.pod):
            sh("ip", "netns", "add", name)
            self.made.append(name)
            ns(name, "ip", "link", "set", "lo", "up")
        ns(self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for peer, node_if, node_ip, peer_ip in ((self.client, "toc", "10.244.91.1", "10.244.91.2"),
                                                (self.pod, "top", "10.244.90.1", "10.244.90.10")):  # fmt: skip
            ns(self.node, "ip", "link", "add", node_if, "type", "veth", "peer", "name", "eth0", "netns", peer)
            ns(self.node, "ip", "addr", "add", f"{node_ip}/24", "dev", node_if)
            ns(self.node, "ip", "link", "set", node_if, "up")
            ns(peer, "ip", "addr", "add", f"{peer_ip}/24", "dev", "eth0")
            ns(peer, "ip", "link", "set", "eth0", "up")
            ns(peer, "ip", "route", "add", "default", "via", node_ip)
        ns(self.client, "ip", "addr", "add", "10.244.91.3/24", "dev", "eth0")
        for name in (self.client, self.pod):  # many short connections: more ports, quick reuse
            ns(name, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        self.server = subprocess.Popen(["ip", "netns", "exec", self.pod, sys.executable, "-c", SERVER],
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"

    def load(self, host: str, seconds: float, concurrency: int) -> dict[str, float]:
        # each destination from its own source address: a 4-tuple that the pod still holds in TIME_WAIT
        # from a direct round must not come back through the ClusterIP (1 s SYN retransmits)
        direct = host.startswith("10.244")
        out = ns(self.client, sys.executable, "-c", CLIENT, host, "8080" if direct else "80",
                 str(seconds), str(concurrency), "10.244.91.2" if direct else "10.244.91.3")  # fmt: skip
        result: dict[str, float] = json.loads(out)
        return result

    def close(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], check=False)


async def traffic(net: Net, args: argparse.Namespace, label: str) -> float:
    """Alternating rounds straight to the pod and through the ClusterIP; the median throughput ratio."""
    print(f"\ntraffic {label}: a new TCP connection per request, {args.concurrency} concurrent, "
          f"{args.rounds} x {args.seconds:.0f} s alternating")  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {"pod IP": [], "ClusterIP": []}
    for _ in range(args.rounds):
        results["pod IP"].append(net.load("10.244.90.10", args.seconds, args.concurrency))
        results["ClusterIP"].append(net.load("10.96.99.99", args.seconds, args.concurrency))
    for what, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p50 = statistics.median(r["p50"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        errors = sum(int(r["errors"]) for r in runs)
        rounds = ", ".join(f"{r['rps']:.0f}" for r in runs)
        print(f"  {what:10s} {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}"
              f"  (rounds: {rounds})")  # fmt: skip
    pod = statistics.median(r["rps"] for r in results["pod IP"])
    return statistics.median(r["rps"] for r in results["ClusterIP"]) / pod


async def bench(args: argparse.Namespace) -> None:
    services, slices = objects(args.services, args.endpoints)
    t = time.perf_counter()
    ports = service_ports(services, slices)
    t_model = time.perf_counter() - t
    t = time.perf_counter()
    ruleset = rules.build(ports, cluster_cidr="10.244.0.0/16")
    text = ruleset.restore_input()
    t_rules = time.perf_counter() - t
    n_rules = sum(1 for line in text.splitlines() if line.startswith("-A"))
    n_chains = sum(1 for line in text.splitlines() if line.startswith(":"))
    print(f"{args.services} services x {args.endpoints} endpoints: {n_chains} chains, {n_rules} rules, "
          f"{len(text) / 1e6:.1f} MB of restore input")  # fmt: skip
    print(f"  objects -> ServicePorts      {t_model * 1000:8.1f} ms")
    print(f"  ServicePorts -> rules text  {t_rules * 1000:8.1f} ms")

    net = Net()
    try:
        net.setup()
        # the measured service: one endpoint, the pod; the 1,000 others load the chains in front of it
        target = {"metadata": {"namespace": "bench", "name": "target"},
                  "spec": {"clusterIP": "10.96.99.99", "ports": [{"name": "http", "port": 80}]}}  # fmt: skip
        labels = {SERVICE_NAME_LABEL: "target"}
        target_slice = {"metadata": {"namespace": "bench", "name": "target-x", "labels": labels},
                        "ports": [{"name": "http", "port": 8080}],
                        "endpoints": [{"addresses": ["10.244.90.10"]}]}  # fmt: skip
        # the target last in KUBE-SERVICES: the worst case of iptables' linear match
        all_ports = service_ports(services, slices) + service_ports([target], [target_slice])
        syncer = Syncer(cluster_cidr="10.244.0.0/16", netns=net.node)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        await syncer.sync(all_ports)
        timings["first sync (full)"] = time.perf_counter() - t
        t = time.perf_counter()
        wrote = await syncer.sync(all_ports)
        timings[f"no-change sync (wrote: {wrote})"] = time.perf_counter() - t
        changed = list(all_ports)
        first = changed[0]
        changed[0] = type(first)(**{**first.__dict__, "endpoints": first.endpoints[:-1]})
        t = time.perf_counter()
        await syncer.sync(changed)
        timings["one endpoint removed (incremental)"] = time.perf_counter() - t
        t = time.perf_counter()
        intact = await syncer.verify()
        timings[f"periodic check (intact: {intact})"] = time.perf_counter() - t
        syncer.invalidate()
        t = time.perf_counter()
        await syncer.sync(changed)
        timings["full rewrite (after an error)"] = time.perf_counter() - t
        for what, secs in timings.items():
            print(f"  {what:35s} {secs * 1000:8.1f} ms")

        ratios = [await traffic(net, args, f"with {len(all_ports)} services")]
        t = time.perf_counter()
        await syncer.sync(service_ports([target], [target_slice]))
        print(f"\n  sync down to 1 service: {(time.perf_counter() - t) * 1000:.1f} ms")
        ratios.append(await traffic(net, args, "with 1 service"))
        print(f"\nClusterIP / pod IP throughput: {ratios[0]:.2f} with {len(all_ports)} services, "
              f"{ratios[1]:.2f} with 1 (target >= 0.9); load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        t = time.perf_counter()
        await syncer.cleanup()
        print(f"\ncleanup: {(time.perf_counter() - t) * 1000:.1f} ms")
    finally:
        net.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/proxy.py needs root (network namespaces, iptables)")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

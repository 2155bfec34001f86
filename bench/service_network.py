"""Service networking across two real nodes: request latency through a ClusterIP, DNS lookups, convergence.

Why this exists: the issue asks that traffic to a Service stop going to a backend that dies
"within a few seconds", and Services and names are on every request's path. On the two-node lab
of the e2e tests (tests/e2e/two_nodes.py: `skiff server` with its DNS, two `skiff agent`s in
their own network namespaces), with three busybox httpd backends (two on node A, one on B) and a
client pod on node A:

* HTTP: N sequential `wget`s from the client pod (one connection each) to the remote backend's
  pod IP, to the Service's ClusterIP, and to its name (a DNS lookup through 10.43.0.10 each time:
  ndots:5 tries the search domains first, as in any pod); mean time per request;
* DNS: N `nslookup`s of the Service name from the pod; mean time per lookup;
* convergence: a loop in the pod asks the Service continuously and stamps each answer with
  /proc/uptime (the same clock as the host's); the time from `kubectl delete pod` (and from a
  readiness gate set False) to the last answer from that backend.

    .venv/bin/python -m bench.service_network [--requests 100] [--rounds 3]

Needs root; prints figures, never fails on time. Busybox process start (fork+exec per wget) is
part of every request time, the same for all three HTTP targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.cluster import Server
from tests.e2e.two_nodes import TwoNodes, missing

GATE = "skiff.bench/serving"


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def deploy(lab: TwoNodes) -> None:
    server, reg = lab.server, lab.registry
    assert server is not None and reg is not None
    web = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"

    def pod(name: str, node: int, script: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": spec.pop("labels", {})},
                "spec": {"nodeName": lab.nodes[node].node, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "c", "image": reg.busybox, "command": ["sh", "-c", script]}],
                         **spec}}  # fmt: skip

    gates = [{"conditionType": GATE}]
    docs = [pod(n, i, web, labels={"app": "web"}, readinessGates=gates)
            for n, i in (("web-a1", 0), ("web-a2", 0), ("web-b1", 1))]  # fmt: skip
    docs += [pod("client", 0, "exec sleep 3600"),
             {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}}]  # fmt: skip
    server.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    for name in ("web-a1", "web-a2", "web-b1", "client"):
        wait(lambda n=name: "ContainersReady" in conditions(server, n), f"{name} running")
    for name in ("web-a1", "web-a2", "web-b1"):
        gate(server, name, True)
    wait(lambda: ready_endpoints(server) == 3, "3 ready endpoints")


def wait(fn: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.3)


def get_pod(server: Server, name: str) -> dict[str, Any]:
    out = server.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def conditions(server: Server, name: str) -> set[str]:
    return {c["type"] for c in (get_pod(server, name).get("status") or {}).get("conditions") or []
            if c["status"] == "True"}  # fmt: skip


def gate(server: Server, name: str, ready: bool) -> None:
    patch = json.dumps({"status": {"conditions": [{"type": GATE, "status": "True" if ready else "False"}]}})
    server.kubectl("patch", "pod", name, "--subresource=status", "--type=strategic", "-p", patch)


def ready_endpoints(server: Server) -> int:
    out = server.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json").stdout
    return sum(1 for s in json.loads(out)["items"] for e in s.get("endpoints") or []
               if (e.get("conditions") or {}).get("ready"))  # fmt: skip


def client(lab: TwoNodes, script: str, timeout: float = 300.0) -> tuple[str, float]:
    assert lab.server is not None
    cid = get_pod(lab.server, "client")["status"]["containerStatuses"][0]["containerID"].removeprefix("runc://")
    start = time.monotonic()
    res = lab.nodes[0].exec(cid, "sh", "-c", script, timeout=timeout)
    return res.stdout + res.stderr, time.monotonic() - start


def per_request(lab: TwoNodes, command: str, n: int) -> tuple[float, int]:
    """Mean ms per run of `command` (the exec's own cost taken off) and how many runs answered."""
    _, empty = client(lab, f"for i in $(seq {n}); do echo; done")
    out, took = client(lab, f"for i in $(seq {n}); do {command} 2>/dev/null; echo; done")
    answered = sum(1 for line in out.splitlines() if line.startswith(("web-", "Name:")))
    return (took - empty) / n * 1000, answered


def convergence(lab: TwoNodes, name: str, act: Any) -> tuple[float, float]:
    """Seconds from `act()` to the last answer from `name`, and to the first answer from another after it."""
    log: list[tuple[float, str]] = []
    script = ("end=$(( $(cut -d. -f1 /proc/uptime) + 20 )); while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do "
              "r=$(wget -qO- http://web 2>&1); echo \"$(cut -d' ' -f1 /proc/uptime) $r\"; done")  # fmt: skip
    runner = threading.Thread(target=lambda: log.extend(
        (float(t), r) for t, _, r in (line.partition(" ") for line in client(lab, script)[0].splitlines())))
    runner.start()
    time.sleep(3)
    at = uptime()
    act()
    runner.join()
    last = max((t for t, r in log if r == name), default=at)
    return max(0.0, last - at), len([1 for t, r in log if t > at and r != name]) / max(1, len(log))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if reason := missing():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    from dnslib.server import BaseResolver, DNSServer
    from tests.e2e.cluster import free_port

    port = free_port()
    upstream = DNSServer(BaseResolver(), port=port, address="127.0.0.1")
    upstream.start_thread()
    with tempfile.TemporaryDirectory(prefix="skiff-bench-svcnet-") as work:
        lab = TwoNodes(Path(work))
        try:
            t0 = time.monotonic()
            lab.start(upstream_dns=f"127.0.0.1:{port}")
            deploy(lab)
            assert lab.server is not None
            print(f"two-node lab up with 4 pods Ready: {time.monotonic() - t0:.1f} s")
            svc = json.loads(lab.server.kubectl("get", "service", "web", "-o", "json").stdout)
            remote = get_pod(lab.server, "web-b1")["status"]["podIP"]
            n = args.requests
            targets = {
                "pod IP on node B": f"wget -qO- http://{remote}/",
                "ClusterIP": f"wget -qO- http://{svc['spec']['clusterIP']}/",
                "name web (search path, DNS, ClusterIP)": "wget -qO- http://web/",
                "web.default.svc.cluster.local.": "wget -qO- http://web.default.svc.cluster.local./",
                "nslookup web.default.svc.cluster.local": "nslookup web.default.svc.cluster.local",
            }
            rounds: dict[str, list[float]] = {label: [] for label in targets}
            for _ in range(args.rounds):  # alternating, so that the shared machine's load hits all alike
                for label, cmd in targets.items():
                    ms, answered = per_request(lab, cmd, n)
                    rounds[label].append(ms)
                    if answered != n:
                        print(f"  {label}: only {answered} of {n} answered")
            for label, values in rounds.items():
                print(f"{label:40s} {statistics.median(values):7.1f} ms per request (median of {args.rounds} "
                      f"rounds of {n})")  # fmt: skip
            gone, _ = convergence(lab, "web-b1", lambda: gate(lab.server, "web-b1", False))  # type: ignore[arg-type]
            print(f"readiness gate False -> last answer from web-b1: {gone:.2f} s")
            gone, _ = convergence(lab, "web-a2", lambda: lab.server.kubectl(  # type: ignore[union-attr]
                "delete", "pod", "web-a2", "--wait=false"))
            print(f"kubectl delete pod -> last answer from web-a2:   {gone:.2f} s")
        finally:
            lab.close()
            upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

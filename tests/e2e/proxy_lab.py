"""A throw-away network for the service proxy's tests: a node, its pods and an outside client, all netns.

    client netns (192.168.<n>.2) ──veth── node netns: 192.168.<n>.1 (the node IP), bridge 10.244.<n>.1/24
                                                   ├─veth── pod netns p0: 10.244.<n>.10, busybox httpd :8080
                                                   ├─veth── pod netns p1: 10.244.<n>.11
                                                   └─ ...

Each pod serves `GET /name` with its own name. The proxy programs the node netns only;
the host's root namespace is never touched. `Lab.close()` deletes every namespace (and so
every process' network, veth and rule in them) and is safe to call after a half-made setup.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_CIDR = "10.244.0.0/16"

# Requests from inside a netns: one TCP connection per request, each answer's body or the error's kind.
CLIENT = r"""
import json, socket, sys, time
url_host, port, path, count, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
out = []
for _ in range(count):
    t = time.monotonic()
    try:
        with socket.create_connection((url_host, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1].decode().strip()
        out.append({"ok": body, "s": time.monotonic() - t})
    except ConnectionRefusedError:
        out.append({"err": "refused", "s": time.monotonic() - t})
    except (TimeoutError, socket.timeout):
        out.append({"err": "timeout", "s": time.monotonic() - t})
    except OSError as e:
        out.append({"err": type(e).__name__ + ": " + str(e), "s": time.monotonic() - t})
print(json.dumps(out))
"""


# A UDP server answering every datagram with the pod's name.
UDP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    _, addr = s.recvfrom(512)
    s.sendto(sys.argv[1].encode(), addr)
"""

# One datagram from a fixed source port (so that every call is the same conntrack flow); the answer.
UDP_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(2.0)
s.sendto(b"who", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recvfrom(512)[0].decode())
except (TimeoutError, OSError) as e:
    print("error: " + type(e).__name__)
"""


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_ns(ns: str, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check, input=input)


@dataclass
class Pod:
    name: str
    netns: str
    ip: str


@dataclass
class Lab:
    subnet: int  # the <n> of 10.244.<n>.0/24 and 192.168.<n>.0/24
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    pods: list[Pod] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    www: Path | None = None

    @property
    def node(self) -> str:
        return f"skp{self.tag}-node"

    @property
    def client(self) -> str:
        return f"skp{self.tag}-client"

    @property
    def node_ip(self) -> str:
        return f"192.168.{self.subnet}.1"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.subnet}.0/24"

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")

    def setup(self, pod_count: int, www: Path) -> Lab:
        self.www = www
        n = self.subnet
        self._netns(self.node)
        node = self.node
        in_ns(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns(node, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(node, "ip", "addr", "add", f"10.244.{n}.1/24", "dev", "br0")
        in_ns(node, "ip", "link", "set", "br0", "up")
        # an uplink with a default route, as a real node has (service IPs are routed, then DNATed)
        in_ns(node, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
        in_ns(node, "ip", "addr", "add", f"172.31.{n}.1/24", "dev", "uplink")
        in_ns(node, "ip", "link", "set", "uplink-peer", "up")
        in_ns(node, "ip", "link", "set", "uplink", "up")
        in_ns(node, "ip", "route", "add", "default", "via", f"172.31.{n}.254")
        self._netns(self.client)
        in_ns(node, "ip", "link", "add", "toclient", "type", "veth", "peer", "name", "eth0", "netns", self.client)
        in_ns(node, "ip", "addr", "add", f"{self.node_ip}/24", "dev", "toclient")
        in_ns(node, "ip", "link", "set", "toclient", "up")
        in_ns(self.client, "ip", "addr", "add", f"192.168.{n}.2/24", "dev", "eth0")
        in_ns(self.client, "ip", "link", "set", "eth0", "up")
        in_ns(self.client, "ip", "route", "add", "default", "via", self.node_ip)
        for i in range(pod_count):
            self.add_pod(f"pod-{i}", f"10.244.{n}.{10 + i}")
        return self

    def add_pod(self, name: str, ip: str) -> Pod:
        assert self.www is not None
        ns = f"skp{self.tag}-{name}"
        self._netns(ns)
        host_if = f"v{self.tag}{len(self.pods)}"
        in_ns(self.node, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        in_ns(self.node, "ip", "link", "set", host_if, "master", "br0", "up")
        # as skiff's CNI config (hairpinMode): a pod's packet DNATed back to itself leaves by the port it came in
        in_ns(self.node, "bridge", "link", "set", "dev", host_if, "hairpin", "on")
        in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(ns, "ip", "route", "add", "default", "via", f"10.244.{self.subnet}.1")
        root = self.www / name
        root.mkdir(parents=True, exist_ok=True)
        (root / "name").write_text(name + "\n")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "/bin/busybox", "httpd", "-f", "-p", "8080", "-h", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        pod = Pod(name, ns, ip)
        self.pods.append(pod)
        self.wait_serving(pod)
        return pod

    def serve_udp(self, pod: Pod, port: int) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", pod.netns, "python3", "-c", UDP_SERVER, pod.name, str(port)])
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while self.udp(self.client, pod.ip, port, 40999) != pod.name:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pod.name} does not answer on udp {pod.ip}:{port}")
            time.sleep(0.1)

    def udp(self, ns: str, host: str, port: int, source_port: int) -> str:
        """The answer to one datagram sent from `source_port` (or `error: ...`)."""
        return in_ns(ns, "python3", "-c", UDP_CLIENT, host, str(port), str(source_port)).stdout.strip()

    def wait_serving(self, pod: Pod, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(self.client, pod.ip, 8080, count=1, timeout=0.5)[0].get("ok") == pod.name:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{pod.name} does not serve on {pod.ip}:8080")

    def get(
        self, ns: str, host: str, port: int, *, count: int = 1, path: str = "/name", timeout: float = 2.0
    ) -> list[dict[str, object]]:
        """`count` requests from netns `ns`, one connection each: [{"ok": body} or {"err": kind}, ...]."""
        out = in_ns(ns, "python3", "-c", CLIENT, host, str(port), path, str(count), str(timeout)).stdout
        result: list[dict[str, object]] = json.loads(out)
        return result

    def names(self, ns: str, host: str, port: int, count: int = 30) -> list[str]:
        """The bodies of `count` requests; fails on any error."""
        results = self.get(ns, host, port, count=count)
        bad = [r for r in results if "ok" not in r]
        assert not bad, f"{len(bad)} of {count} requests to {host}:{port} failed: {bad[:3]}"
        return [str(r["ok"]) for r in results]

    def rules(self) -> str:
        """The node's rules (both tables) as iptables-save prints them, without counters or comments lines."""
        out = []
        for table in ("filter", "nat"):
            text = in_ns(self.node, "iptables-save", "-t", table).stdout
            out.extend(line for line in text.splitlines() if not line.startswith("#"))
        return "\n".join(out)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def missing() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    return None

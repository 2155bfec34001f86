"""Two real nodes on this machine, each in its own network namespace, for the service networking tests.

    host: skiff server (API, controllers, scheduler, registry, cluster DNS) on 10.198.<n>.1
      │  bridge sk2n<n>br 10.198.<n>.1/24 (the nodes' shared link, host-gw needs one)
      ├─veth── netns sk2n<n>a: eth0 10.198.<n>.2 ── `skiff agent` sk2n<n>-a: pods 10.197.<n>.0/25
      └─veth── netns sk2n<n>b: eth0 10.198.<n>.3 ── `skiff agent` sk2n<n>-b: pods 10.197.<n>.128/25

Each agent is a real `skiff agent` process entered into its node's network namespace (`nsenter
--net`: mounts and cgroups stay the host's, so runc works as on any machine), with its own pod
CIDR, bridge, pod netns prefix, cgroup parent and state dir. The agents run their proxy and pod
network there: routes between the nodes' pod CIDRs, masquerade, Service DNAT, all inside the node
namespaces; the host's own rules are never touched. Node B joins with the server's token
(`skiff agent --server URL --token TOKEN`), node A uses a kubeconfig.

`TwoNodes.close()` deletes the pods through the agents, stops them, then removes by force whatever
is left (containers, pod network namespaces, mounts, cgroups), the node namespaces (and with them
every route, rule and veth inside) and the host bridge. It is safe after a half-made setup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skiff.images.recipes import ensure_builtin_image
from tests.e2e.agent_node import AgentNode, Registry
from tests.e2e.cluster import BIN, Server, node_ready
from tests.ports import free_port

CLUSTER_CIDR = "10.197.0.0/16"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "ip", "iptables", "nsenter", "docker-registry", "skopeo", "umoci", "conntrack"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/lib/cni/bridge").exists() and not Path("/opt/cni/bin/bridge").exists():
        return "needs the CNI plugins"
    return None


@dataclass
class NetnsNode(AgentNode):
    """An AgentNode whose agent lives in the network namespace `netns_name` with address `ip`."""

    netns_name: str = ""
    ip: str = ""
    agent_args: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> NetnsNode:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir.parent / "agent.log"
        cmd = ["nsenter", f"--net=/run/netns/{self.netns_name}", "--", str(BIN / "skiff"), "agent",
               "--node-name", self.node, "--node-ip", self.ip, "--pod-cidr", self.pod_cidr, "--bridge", self.bridge,
               "--netns-prefix", self.netns_prefix, "--cgroup-parent", self.cgroup_parent,
               "--state-dir", str(self.state_dir), "--registry", self.registry.host,
               "--insecure-registry", self.registry.host, "--cluster-cidr", CLUSTER_CIDR, *self.agent_args]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiff agent exited with {self.proc.returncode}:\n{self.logs()}")
            out = self.server.kubectl("get", "node", self.node, "-o", "json", check=False)
            if out.returncode == 0 and node_ready(json.loads(out.stdout)) == "True":
                return self
            time.sleep(0.3)
        raise RuntimeError(f"node {self.node} not Ready after {timeout}s:\n{self.logs()}")

    def nat_rules(self) -> list[str]:
        return []  # the node's rules live in its namespace, which goes as a whole

    def in_node(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns_name, *argv, check=check)

    def exec(self, container_id: str, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `argv` in a running container of this node (runc exec: the container's own view)."""
        root = self.state_dir / "runtime" / "runc"
        return subprocess.run(["runc", "--root", str(root), "exec", container_id, *argv], capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip


@dataclass
class TwoNodes:
    work: Path
    subnet: int = field(default_factory=lambda: 100 + os.getpid() % 50)  # 10.198.<subnet>.0/24
    server: Server | None = None
    registry: Registry | None = None
    nodes: list[NetnsNode] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"sk2n{self.subnet}"

    @property
    def host_ip(self) -> str:
        return f"10.198.{self.subnet}.1"

    def start(self, *, upstream_dns: str) -> TwoNodes:
        """Network, server (with its DNS forwarding to `upstream_dns`), registry with busybox, both agents."""
        self._network()
        registry_port = free_port()
        registry_host = f"{self.host_ip}:{registry_port}"
        dns_port = free_port()
        self.server = Server(self.work / "server", dns=True, extra_args=[
            "--bind-address", "0.0.0.0", "--tls-san", self.host_ip, "--registry-address", registry_host,
            "--dns-address", self.host_ip, "--dns-port", str(dns_port), "--dns-upstream", upstream_dns,
        ]).start(timeout=60)  # fmt: skip
        import asyncio

        busybox = str(asyncio.run(ensure_builtin_image("busybox", registry_host, insecure=True)))
        assert self.server.proc is not None
        self.registry = Registry(host=registry_host, proc=self.server.proc, storage=self.work, busybox=busybox)
        for i, name in enumerate(("a", "b")):
            node = NetnsNode(
                server=self.server, state_dir=self.work / f"node-{name}" / "state", registry=self.registry,
                node=f"{self.tag}-{name}", pod_cidr=f"10.197.{self.subnet}.{128 * i}/25", bridge=f"{self.tag}{name}0",
                netns_prefix=f"{self.tag}{name}-", cgroup_parent=f"skiff{self.tag}{name}",
                netns_name=f"{self.tag}{name}", ip=f"10.198.{self.subnet}.{2 + i}",
                agent_args=self._credentials(name),
            )  # fmt: skip
            self.nodes.append(node)
            node.start()
        return self

    def _network(self) -> None:
        bridge = f"{self.tag}br"
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        for i, name in enumerate(("a", "b")):
            ns, veth = f"{self.tag}{name}", f"{self.tag}{name}h"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"10.198.{self.subnet}.{2 + i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", self.host_ip)

    def _credentials(self, name: str) -> list[str]:
        """Node B joins with the server's token (TLS bootstrap); node A gets a kubeconfig for the bridge address."""
        assert self.server is not None
        url = f"https://{self.host_ip}:{self.server.port}"
        if name == "b":
            return ["--server", url, "--token", (self.server.data_dir / "token").read_text().strip()]
        config: dict[str, Any] = yaml.safe_load(self.server.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = url
        path = self.work / f"node-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return ["--kubeconfig", str(path)]

    def close(self) -> None:
        for node in self.nodes:
            try:
                node.cleanup()
            except Exception as e:  # keep going: the rest must still be removed
                print(f"cleanup of {node.node}: {e}")
        if self.server is not None and self.server.proc is not None:
            self.server.stop()
        for name in ("a", "b"):  # a veth goes with its peer at once; a namespace's links go when the kernel gets to it
            sh("ip", "link", "delete", f"{self.tag}{name}h", check=False)
            sh("ip", "netns", "delete", f"{self.tag}{name}", check=False)
        sh("ip", "link", "delete", f"{self.tag}br", check=False)

    def leftovers(self) -> dict[str, Any]:
        """What the lab left on the host: namespaces, links, cgroups, processes of its agents."""
        netns = sh("ip", "netns", "list").stdout
        links = sh("ip", "-br", "link").stdout
        found = {
            "netns": [line.split()[0] for line in netns.splitlines() if line.startswith(self.tag)],
            "links": [line.split()[0] for line in links.splitlines() if line.startswith(self.tag)],
            "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"skiff{self.tag}*")],
        }
        return {k: v for k, v in found.items() if v}

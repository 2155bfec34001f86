"""A real node agent for end-to-end tests: a registry with the busybox image, `skiff agent` as a process,
and a cleanup that leaves no container, mount, network namespace, bridge or cgroup behind.

The agent runs on a test-only pod CIDR, bridge, netns prefix and cgroup parent, so it never
touches the host's pod network (nor the runtime tests', on 10.199.0.0/24).

`node_fixtures` makes a test module's `registry`, `cluster` and `agent` fixtures (module-scoped): a
module with a node of its own declares only what differs (its name, pod CIDR, images and flags).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from skiff.images.recipes import ensure_builtin_image
from skiff.images.registry import registry_config
from tests.e2e.cluster import BIN, Server, node_ready
from tests.ports import free_port

NODE = "e2e-agent"
POD_CIDR = "10.199.42.0/24"
BRIDGE = "skagent0"
NETNS_PREFIX = "skagent-"
CGROUP_PARENT = "skiffagenttest"


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "the node agent needs root"
    for tool in ("runc", "ip", "iptables", "docker-registry", "skopeo", "umoci", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/lib/cni/bridge").exists() and not Path("/opt/cni/bin/bridge").exists():
        return "needs the CNI plugins"
    return None


@dataclass
class Registry:
    host: str
    proc: subprocess.Popen[bytes]
    storage: Path
    busybox: str = ""

    @classmethod
    def start(
        cls, data_dir: Path, timeout: float = 60.0, *, storage: Path | None = None, htpasswd: str = ""
    ) -> Registry:
        """A registry on a free port; `storage` shares another's images, `htpasswd` asks for basic auth."""
        host = f"127.0.0.1:{free_port()}"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "config.yml"
        settings: dict[str, Any] = registry_config(storage or data_dir / "storage", host)
        if htpasswd:
            (data_dir / "htpasswd").write_text(htpasswd)
            settings["auth"] = {"htpasswd": {"realm": "skiff-test", "path": str(data_dir / "htpasswd")}}
        config.write_text(yaml.safe_dump(settings))
        with (data_dir / "registry.log").open("ab") as log:
            proc = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        reg = cls(host=host, proc=proc, storage=storage or data_dir / "storage")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as e:
                if e.code == 401:  # up, and asking for credentials
                    return reg
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    reg.stop()
                    raise RuntimeError(f"registry not ready: {(data_dir / 'registry.log').read_text()}") from None
                time.sleep(0.1)
        reg.busybox = str(asyncio.run(ensure_builtin_image("busybox", host)))
        return reg

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class AgentNode:
    server: Server
    state_dir: Path
    registry: Registry
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    # a test that must not share the pod network with test_agent.py's node (another run may clean it up) picks its own
    node: str = NODE
    pod_cidr: str = POD_CIDR
    bridge: str = BRIDGE
    netns_prefix: str = NETNS_PREFIX
    cgroup_parent: str = CGROUP_PARENT
    kubelet_port: int = field(default_factory=free_port)  # the kubelet API (logs, exec, port-forward)
    extra_args: tuple[str, ...] = ()  # more `skiff agent` flags

    def start(self, timeout: float = 60.0) -> AgentNode:
        # no proxy and no pod network: they would program the host's own iptables (tests/e2e/two_nodes.py does)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir.parent / "agent.log"
        cmd = [str(BIN / "skiff"), "agent", "--kubeconfig", str(self.server.kubeconfig), "--node-name", self.node,
               "--pod-cidr", self.pod_cidr, "--bridge", self.bridge, "--netns-prefix", self.netns_prefix,
               "--cgroup-parent", self.cgroup_parent, "--state-dir", str(self.state_dir),
               "--registry", self.registry.host,
               "--disable-proxy", "--disable-pod-network", "--kubelet-port", str(self.kubelet_port),
               *self.extra_args]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiff agent exited with {self.proc.returncode}:\n{self.logs()}")
            out = self.server.kubectl("get", "node", self.node, "-o", "json", check=False)
            if out.returncode == 0 and node_ready(json.loads(out.stdout)) == "True":
                return self
            time.sleep(0.2)
        raise RuntimeError(f"node {self.node} not Ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # --- what a node leaves behind --------------------------------------------------------
    def runc_ids(self) -> list[str]:
        root = self.state_dir / "runtime" / "runc"
        if not root.is_dir():
            return []
        out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
        return out.stdout.split()

    def netns(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(self.netns_prefix)]

    def mounts(self) -> list[str]:
        prefix = str(self.state_dir.resolve()) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)

    def processes(self, marker: str) -> list[int]:
        """Host pids whose command line contains `marker` (container processes are visible from the host)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if marker in cmdline:
                    found.append(int(entry.name))
        return found

    def nat_rules(self) -> list[str]:
        """iptables NAT rules naming the test pod CIDR (the bridge plugin's masquerade chains)."""
        out = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
        net = self.pod_cidr.rsplit(".", 1)[0] + "."
        return [line for line in out.splitlines() if net in line]

    def leftovers(self) -> dict[str, Any]:
        found = {"runc": self.runc_ids(), "netns": self.netns(), "mounts": self.mounts(), "nat": self.nat_rules()}
        return {k: v for k, v in found.items() if v}

    def cleanup(self) -> None:
        """Delete the node's pods while the agent runs (its own teardown), then remove whatever is left by
        force: containers, namespaces, mounts, NAT rules, the bridge, cgroups."""
        if self.proc is not None and self.proc.poll() is None and self.server.proc and self.server.proc.poll() is None:
            self.server.kubectl("delete", "pods", "-A", "--field-selector", f"spec.nodeName={self.node}", "--wait=true",
                                "--timeout=60s", check=False, timeout=90)  # fmt: skip
        self.stop()
        root = self.state_dir / "runtime" / "runc"
        for cid in self.runc_ids():
            subprocess.run(["runc", "--root", str(root), "kill", "--all", cid, "KILL"], capture_output=True)
            subprocess.run(["runc", "--root", str(root), "delete", "-f", cid], capture_output=True)
        for ns in self.netns():
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        for point in self.mounts():
            subprocess.run(["umount", "-l", point], capture_output=True)
        for rule in self.nat_rules():
            parts = shlex.split(rule)
            if parts[0] == "-A":
                subprocess.run(["iptables", "-t", "nat", "-D", *parts[1:]], capture_output=True)
                if "-j" in parts and parts[parts.index("-j") + 1].startswith("CNI-"):
                    chain = parts[parts.index("-j") + 1]
                    subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
                    subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        for base in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]:
            parent = base / self.cgroup_parent
            if parent.is_dir():
                dirs = sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
                for d in [*dirs, parent]:  # deepest first; cgroupfs removes a directory with its control files
                    try:
                        d.rmdir()
                    except OSError:
                        pass


def wait_for(fn: Any, timeout: float = 60.0, interval: float = 0.3, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@dataclass(frozen=True, kw_only=True)
class NodeSetup:
    """A test module's own cluster: a registry, a server and one agent node on a network of its own.

    `name` is short (it names the module's temporary directories, its bridge `sk<name>0`, netns prefix
    `sk<name>-` and cgroup parent `skiff<name>test`); `pod_cidr` is a /24 of 10.199.0.0/16 no other module uses.
    """

    name: str
    pod_cidr: str
    node: str = ""  # default: e2e-<name>
    images: tuple[str, ...] = ()  # built-in images the registry holds besides busybox
    server_args: tuple[str, ...] = ("--disable-scheduler",)  # pods name their node
    local_storage: bool = False  # the server's --default-local-storage-path: a directory of the module's
    agent_args: tuple[str, ...] = ()

    @property
    def node_name(self) -> str:
        return self.node or f"e2e-{self.name}"


def local_storage_of(cluster: Server) -> Path:
    """Where the local-path provisioner of a `NodeSetup(local_storage=True)` cluster makes its volumes."""
    return Path(cluster.extra_args[cluster.extra_args.index("--default-local-storage-path") + 1])


Fixture = Callable[..., Iterator[Any]]


def node_fixtures(setup: NodeSetup) -> tuple[Fixture, Fixture, Fixture]:
    """The module-scoped `registry`, `cluster` and `agent` fixtures of `setup`; bind them in the test module:
    `registry, cluster, agent = node_fixtures(NodeSetup(...))`. The agent is cleaned up even when it fails."""

    @pytest.fixture(scope="module", name="registry")
    def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
        reg = Registry.start(tmp_path_factory.mktemp(f"{setup.name}-registry"))
        try:
            for image in setup.images:
                asyncio.run(ensure_builtin_image(image, reg.host))
            yield reg
        finally:
            reg.stop()

    @pytest.fixture(scope="module", name="cluster")
    def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        args = list(setup.server_args)
        if setup.local_storage:
            args += ["--default-local-storage-path", str(tmp_path_factory.mktemp(f"{setup.name}-volumes"))]
        srv = Server(tmp_path_factory.mktemp(f"{setup.name}-server"), extra_args=args).start()
        yield srv
        srv.stop()

    @pytest.fixture(scope="module", name="agent")
    def agent(cluster: Server, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentNode]:
        node = AgentNode(server=cluster, state_dir=tmp_path_factory.mktemp(f"{setup.name}-agent") / "state",
                         registry=registry, node=setup.node_name, pod_cidr=setup.pod_cidr, bridge=f"sk{setup.name}0",
                         netns_prefix=f"sk{setup.name}-", cgroup_parent=f"skiff{setup.name}test",
                         extra_args=setup.agent_args)  # fmt: skip
        try:
            yield node.start()
        finally:
            node.cleanup()

    return registry, cluster, agent

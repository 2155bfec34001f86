"""The `skiff` command as a user runs it: `skiff server`, `skiff kubectl`, credentials, shutdown, restart."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.apiserver.serve import ServerConfig, serve
from tests.e2e.cluster import BIN, Server
from tests.ports import free_port

pytestmark = pytest.mark.e2e

SKIFF = str(BIN / "skiff")


def skiff(
    *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `skiff` command with a clean environment (no KUBECONFIG) and its own HOME."""
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "SKIFF_DATA_DIR")}
    if data_dir is not None:
        base["SKIFF_DATA_DIR"] = str(data_dir)
        base["HOME"] = str(data_dir.parent / "home")
    return subprocess.run([SKIFF, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout)


def https_get(
    server: Server, path: str, *, headers: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> tuple[int, str, str]:
    """GET without a client certificate (like curl --cacert); returns (status, content type, body)."""
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "ca.crt"))
    conn = http.client.HTTPSConnection(host, server.port, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
    finally:
        conn.close()


def admin_token(server: Server) -> str:
    return (server.data_dir / "tokens.csv").read_text().split(",", 1)[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


def test_version() -> None:
    result = skiff("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("skiff ")


def test_skiff_kubectl_finds_the_servers_kubeconfig(server: Server) -> None:
    result = skiff("kubectl", "get", "namespaces", "-o", "name", data_dir=server.data_dir)
    assert result.returncode == 0, result.stderr
    assert {"namespace/default", "namespace/kube-system"} <= set(result.stdout.split())
    # every argument reaches kubectl untouched, flags included
    result = skiff("kubectl", "get", "namespaces", "-o", "wide", "--request-timeout=20s", data_dir=server.data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["NAME", "STATUS", "AGE"]
    result = skiff("kubectl", "--help", data_dir=server.data_dir)
    assert result.returncode == 0 and "kubectl controls the Kubernetes cluster manager" in result.stdout


def test_skiff_kubectl_keeps_an_explicit_kubeconfig(server: Server, tmp_path: Path) -> None:
    result = skiff(
        "kubectl",
        "get",
        "namespace",
        "default",
        "-o",
        "name",
        data_dir=tmp_path / "elsewhere",
        env={"KUBECONFIG": str(server.kubeconfig)},
    )
    assert (result.returncode, result.stdout.strip()) == (0, "namespace/default"), result.stderr


def test_skiff_kubectl_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    result = skiff("kubectl", "get", "pods", data_dir=tmp_path / "empty")
    assert result.returncode == 1
    assert f"no kubeconfig at {tmp_path / 'empty' / 'kubeconfig.yaml'}" in result.stderr
    assert "skiff server" in result.stderr


def test_requests_without_credentials_are_401(server: Server) -> None:
    status, ctype, body = https_get(server, "/api/v1/namespaces")
    assert (status, ctype) == (401, "application/json")
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    status, _ctype, _body = https_get(server, "/api/v1/namespaces", headers={"Authorization": "Bearer nope"})
    assert status == 401


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/version"])
def test_health_and_version_are_public(server: Server, path: str) -> None:
    status, _ctype, _body = https_get(server, path)
    assert status == 200


def test_admin_token_and_kubectl_with_a_token(server: Server) -> None:
    token = admin_token(server)
    status, _ctype, body = https_get(server, "/api/v1/namespaces", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(body)["kind"] == "NamespaceList"
    # kubectl with only a token, no client certificate
    result = skiff(
        "kubectl",
        f"--server={server.url}",
        f"--certificate-authority={server.data_dir / 'tls' / 'ca.crt'}",
        f"--token={token}",
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
        env={"KUBECONFIG": os.devnull},
    )
    assert (result.returncode, result.stdout) == (0, "admin"), result.stderr


def test_serving_certificate_names_the_host(server: Server) -> None:
    for host in ("localhost", socket.gethostname()):
        status, _ctype, _body = https_get(server, "/healthz", host=host)
        assert status == 200, host


def test_sigterm_ends_watches_and_exits_0_then_restart_keeps_state(server: Server) -> None:
    server.kubectl("create", "configmap", "survivor", "--from-literal=k=v")
    ca_before = (server.data_dir / "tls" / "ca.crt").read_bytes()
    kubeconfig_before = server.kubeconfig.read_bytes()
    watch = subprocess.Popen(
        [str(BIN / "kubectl"), "get", "configmaps", "--watch", "--request-timeout=0"],
        env={**os.environ, "KUBECONFIG": str(server.kubeconfig)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        assert b"survivor" in watch.stdout.readline() + watch.stdout.readline()  # header, then the object
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # a watch must not hold the shutdown: well inside the harness's 15 s kill deadline
        assert server.proc.wait(timeout=10) == 0, server.logs()
    finally:
        watch.kill()
        watch.wait()
    assert "stopped" in server.logs()

    restarted = Server(server.data_dir, port=server.port).start()
    try:
        assert (server.data_dir / "tls" / "ca.crt").read_bytes() == ca_before
        assert server.kubeconfig.read_bytes() == kubeconfig_before
        result = skiff("kubectl", "get", "configmap", "survivor", "-o", "jsonpath={.data.k}", data_dir=server.data_dir)
        assert (result.returncode, result.stdout) == (0, "v"), result.stderr
    finally:
        assert restarted.stop() == 0


def test_sigint_exits_0(server: Server) -> None:
    assert server.stop(signal.SIGINT) == 0, server.logs()


def test_port_in_use_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            SKIFF,
            "server",
            "--data-dir",
            str(tmp_path / "other"),
            "--port",
            str(server.port),
            "--bind-address",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_in_process_with_ready_and_stop_events(tmp_path: Path) -> None:
    """`serve` as a component: `ready` once listening, returns once `stop` is set."""
    port = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    config = ServerConfig(data_dir=str(tmp_path / "data"), bind_address="127.0.0.1", port=port)
    task = asyncio.create_task(serve(config, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
        server = Server(tmp_path / "data", port=port)
        status, _ctype, body = await asyncio.to_thread(https_get, server, "/readyz")
        assert status == 200, body
        code, namespaces, _headers = await asyncio.to_thread(server.raw, "GET", "/api/v1/namespaces")
        assert code == 200 and namespaces["kind"] == "NamespaceList"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert task.done() and task.exception() is None

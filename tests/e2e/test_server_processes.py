"""`skiff server`'s process model: the controller manager and scheduler as supervised child processes.

A user sees: the cluster reconciles; a child that dies takes the server down
with an error naming it (rather than a cluster that silently stops
reconciling); the children never outlive the server, even a SIGKILLed one;
`--single-process` keeps everything in one process. The bundled image
registry is another child and goes the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Server

pytestmark = pytest.mark.e2e


def children(pid: int) -> dict[int, str]:
    """pid -> command line of the direct children of `pid` (from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def component_pids(server: Server, timeout: float = 60.0) -> dict[str, int]:
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for pid, cmd in children(server.proc.pid).items():
            for name in ("controller-manager", "scheduler"):
                if f"skiff.cli.main {name} " in cmd:
                    found[name] = pid
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError(f"children of the server: {children(server.proc.pid)}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def wait_replicas(server: Server, name: str, want: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    got = ""
    while time.monotonic() < deadline:
        jsonpath = "jsonpath={.items[*].status.replicas}"
        got = server.kubectl("get", "replicaset", "-l", f"app={name}", "-o", jsonpath).stdout
        if got.strip() == str(want):
            return
        time.sleep(0.2)
    raise AssertionError(f"replicaset of {name}: status.replicas {got!r}, want {want}")


def wait_replicas_ready(server: Server) -> None:
    """Until both children are past their start-up (a SIGTERM while importing kills a process outright)."""
    server.kubectl("create", "deployment", "probe", "--image=busybox")
    wait_replicas(server, "probe", 1)
    deadline = time.monotonic() + 60
    while "scheduler running" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


def test_components_run_as_children_and_reconcile(server: Server) -> None:
    pids = component_pids(server)
    assert set(pids) == {"controller-manager", "scheduler"}
    server.kubectl("create", "deployment", "web", "--image=busybox", "--replicas=2")
    wait_replicas(server, "web", 2)  # the controller manager (a child process) did that


def test_sigterm_stops_the_children_then_the_server(server: Server) -> None:
    pids = component_pids(server)
    wait_replicas_ready(server)
    assert server.stop() == 0
    assert all(wait_gone(pid) for pid in pids.values()), server.logs()
    assert "controller-manager stopped (exit code 0)" in server.logs()
    assert "scheduler stopped (exit code 0)" in server.logs()


def test_a_dead_child_stops_the_server_with_an_error(server: Server) -> None:
    pids = component_pids(server)
    os.kill(pids["scheduler"], signal.SIGKILL)
    assert server.proc is not None
    code = server.proc.wait(timeout=60)
    assert code == 1
    assert "scheduler exited with code -9" in server.logs()
    assert wait_gone(pids["controller-manager"]), "the other child outlived the server"


def test_children_die_with_a_sigkilled_server(server: Server) -> None:
    pids = component_pids(server)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    for name, pid in pids.items():
        assert wait_gone(pid), f"{name} (pid {pid}) outlived a SIGKILLed server"


def test_single_process_runs_the_components_inside(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", extra_args=["--single-process"]).start()
    try:
        assert srv.proc is not None
        time.sleep(1)
        components = [cmd for cmd in children(srv.proc.pid).values() if "skiff.cli.main" in cmd]
        assert not components, components
        srv.kubectl("create", "deployment", "web", "--image=busybox", "--replicas=3")
        wait_replicas(srv, "web", 3)
    finally:
        assert srv.stop() == 0


def registry_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_the_server_runs_an_image_registry_that_dies_with_it(server: Server) -> None:
    assert registry_answers(server.registry_port)
    assert (server.data_dir / "registry" / "storage").is_dir()
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while registry_answers(server.registry_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not registry_answers(server.registry_port), "the registry outlived a SIGKILLed server"


def test_a_taken_registry_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = Server(tmp_path / "data", registry_port=taken.getsockname()[1])
        with pytest.raises(RuntimeError) as failed:
            srv.start()
    assert srv.proc is not None and srv.proc.returncode == 1
    message = str(failed.value)
    assert "cannot start the registry on 127.0.0.1:" in message
    assert "--registry-address" in message

"""The API server's local socket for its own children (skiff.apiserver.local_access), as a user meets it.

What an operator sees: `<data dir>/apiserver.sock`, mode 0600, that answers 401 to anyone without the
token of this start; the scheduler and the controller manager reach the server through it with the
identity they had over HTTPS (the admin kubeconfig's system:admin), and the server removes it on exit.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from tests.e2e.cluster import Server


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.socket_path)
        self.sock = sock


def call(path: Path, method: str, url: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    conn = UnixConnection(path)
    try:
        headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, url, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw.startswith(b"{") else raw.decode())
    finally:
        conn.close()


def wait_for_socket(server: Server) -> Path:
    path = server.data_dir / "apiserver.sock"
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path


def child_environment(server: Server, component: str) -> dict[str, str]:
    assert server.proc is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == server.proc.pid and component.encode() in cmdline:
                return dict(v.decode().split("=", 1) for v in environ if b"=" in v)
        time.sleep(0.2)
    raise AssertionError(f"no {component} child of the server")


def test_socket_is_private_and_turns_away_unknown_callers(server: Server) -> None:
    path = wait_for_socket(server)
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    code, body = call(path, "GET", "/api/v1/namespaces")
    assert code == 401 and body["reason"] == "Unauthorized"
    code, body = call(path, "GET", "/api/v1/namespaces", token="not-the-token")
    assert code == 401
    code, body = call(path, "GET", "/readyz")  # the public endpoints stay public
    assert code == 200


def test_children_use_it_as_the_identity_they_had_over_https(server: Server) -> None:
    path = wait_for_socket(server)
    env = child_environment(server, "scheduler")
    assert env["SKIFF_LOCAL_API_SOCKET"] == str(path)
    token = env["SKIFF_LOCAL_API_TOKEN"]
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    code, body = call(path, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token, body=review)
    assert code == 201, body  # as Kubernetes answers every create
    user = body["status"]["userInfo"]
    assert user["username"] == "system:admin" and "system:masters" in user["groups"]
    code, body = call(path, "GET", "/api/v1/namespaces/default", token=token)
    assert code == 200 and body["metadata"]["name"] == "default"
    # each child has a token of its own
    assert env["SKIFF_LOCAL_API_TOKEN"] != child_environment(server, "controller-manager")["SKIFF_LOCAL_API_TOKEN"]


def test_socket_goes_with_the_server(fresh_server: Server) -> None:
    path = wait_for_socket(fresh_server)
    assert path.exists()
    assert fresh_server.stop() == 0
    assert not path.exists()

"""One HTTPS connection carrying several requests, as clients use it (`apiserver/leanhttp.py`).

The API server serves plain REST requests itself and hands a connection to aiohttp for anything
else (watches, upgrades, chunked bodies...). A client must not be able to tell: pipelined requests
answer in order, bodies arrive whole however they are framed, an oversized body gets its 413
Status and the connection goes on, and a watch or an upgrade after plain requests on the same
connection is answered as on a fresh one.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest

from tests.e2e.cluster import Server

pytestmark = pytest.mark.e2e


class Connection:
    """A raw HTTP/1.1 connection over TLS with the admin client certificate."""

    def __init__(self, server: Server) -> None:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        self.sock = server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unread: {self.buf[:200]!r}")
        self.buf += chunk

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self) -> tuple[int, dict[str, str]]:
        status = int(self.read_line().split(b" ")[1])
        headers: dict[str, str] = {}
        while line := self.read_line():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def read_chunk(self) -> bytes:
        size = int(self.read_line().split(b";")[0], 16)
        data = self.read_exact(size)
        assert self.read_line() == b""
        return data

    def read_response(self) -> tuple[int, dict[str, str], Any]:
        status, headers = self.read_head()
        if status == 100:
            return status, headers, None
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while chunk := self.read_chunk():
                body += chunk
            assert self.read_line() == b""
        else:
            body = self.read_exact(int(headers.get("content-length", "0")))
        return status, headers, json.loads(body) if body else None


def request(method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body is not None:
        lines += [f"Content-Length: {len(body)}"]
        headers.setdefault("Content_Type", "application/json")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def configmap(name: str, **data: str) -> bytes:
    return json.dumps({"metadata": {"name": name}, "data": data}).encode()


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    return server.create_namespace(f"conn-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def conn(server: Server) -> Any:
    c = Connection(server)
    yield c
    c.close()


def test_pipelined_requests_answer_in_order(conn: Connection, ns: str) -> None:
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    conn.send(
        request("POST", cms, configmap("piped", k="v"))
        + request("GET", f"{cms}/piped")
        + request("GET", f"{cms}/nosuch")
        + request("PATCH", f"{cms}/piped", b'{"data":{"k":"w"}}', Content_Type="application/merge-patch+json")
        + request("DELETE", f"{cms}/piped")
        + request("GET", f"{cms}/piped")
    )
    answers = [conn.read_response() for _ in range(6)]
    assert [a[0] for a in answers] == [201, 200, 404, 200, 200, 404], answers
    assert answers[1][2]["data"] == {"k": "v"}
    assert answers[2][2]["reason"] == "NotFound"
    assert answers[3][2]["data"] == {"k": "w"}


def test_chunked_body(conn: Connection, server: Server, ns: str) -> None:
    body = configmap("chunked", text="x" * 5000)
    head = (
        f"POST /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:3000], body[3000:]))
    conn.send(head + chunks[:50])
    conn.send(chunks[50:] + b"0\r\n\r\n")
    status, _, created = conn.read_response()
    assert status == 201, created
    assert created["data"]["text"] == "x" * 5000
    conn.send(request("GET", f"/api/v1/namespaces/{ns}/configmaps/chunked"))
    status, _, got = conn.read_response()
    assert (status, got["metadata"]["name"]) == (200, "chunked")


def test_chunked_body_with_extensions_and_trailers_pipelined(conn: Connection, ns: str) -> None:
    body = configmap("trailed", k="v")
    head = (
        f"POST /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunked = b"%x;name=value\r\n%s\r\n0\r\nX-Trailer: yes\r\n\r\n" % (len(body), body)
    conn.send(head + chunked + request("GET", f"/api/v1/namespaces/{ns}/configmaps/trailed"))
    (status, _, created), (status2, _, got) = conn.read_response(), conn.read_response()
    assert (status, created["data"]) == (201, {"k": "v"}), created
    assert (status2, got["metadata"]["name"]) == (200, "trailed")


def test_chunked_body_over_3_mib_and_bad_framing(server: Server, ns: str) -> None:
    head = (
        f"POST /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    conn = Connection(server)
    try:
        big = configmap("big-chunked", blob="x" * (3 * 1024 * 1024))
        piece = 256 * 1024
        conn.send(head + b"".join(b"%x\r\n%s\r\n" % (len(big[i : i + piece]), big[i : i + piece])
                                  for i in range(0, len(big), piece)) + b"0\r\n\r\n")  # fmt: skip
        status, _, body = conn.read_response()
        assert (status, body["reason"]) == (413, "RequestEntityTooLarge"), body
    finally:
        conn.close()
    conn = Connection(server)
    try:
        conn.send(head + b"zz\r\nnot a chunk\r\n0\r\n\r\n")
        assert conn.read_head()[0] == 400
    finally:
        conn.close()


def test_oversized_body_gets_413_and_the_connection_goes_on(conn: Connection, server: Server, ns: str) -> None:
    big = configmap("big", blob="x" * (3 * 1024 * 1024))
    conn.send(request("POST", f"/api/v1/namespaces/{ns}/configmaps", big))
    status, _, body = conn.read_response()
    assert (status, body["kind"], body["reason"]) == (413, "Status", "RequestEntityTooLarge"), body
    assert "3 MiB" in body["message"]
    conn.send(request("GET", f"/api/v1/namespaces/{ns}/configmaps/big"))
    status, _, body = conn.read_response()
    assert (status, body["reason"]) == (404, "NotFound")
    # the same, pipelined: the request after the oversized body is answered too
    conn.send(request("POST", f"/api/v1/namespaces/{ns}/configmaps", big) + request("GET", f"/api/v1/namespaces/{ns}"))
    assert [conn.read_response()[0] for _ in range(2)] == [413, 200]
    # with Connection: close, as urllib sends: the whole body still goes out and the answer arrives
    conn.send(request("POST", f"/api/v1/namespaces/{ns}/configmaps", big, Connection="close"))
    status, headers, body = conn.read_response()
    assert (status, body["reason"], headers.get("connection")) == (413, "RequestEntityTooLarge", "close")


def test_expect_continue(conn: Connection, ns: str) -> None:
    body = configmap("expected", k="v")
    head = request("POST", f"/api/v1/namespaces/{ns}/configmaps", body, Expect="100-continue")
    conn.send(head[: -len(body)])
    assert conn.read_response()[0] == 100
    conn.send(body)
    status, _, created = conn.read_response()
    assert (status, created["data"]) == (201, {"k": "v"})

    # too large: answered at once, the body never sent
    conn.send(request("POST", f"/api/v1/namespaces/{ns}/configmaps", Expect="100-continue",
                      Content_Length=str(4 * 1024 * 1024), Content_Type="application/json"))  # fmt: skip
    status, _, answer = conn.read_response()
    assert (status, answer["reason"]) == (413, "RequestEntityTooLarge")


def test_watch_after_plain_requests_on_the_same_connection(conn: Connection, server: Server, ns: str) -> None:
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    conn.send(request("POST", cms, configmap("before-watch")))
    status, _, created = conn.read_response()
    assert status == 201, created
    rv = created["metadata"]["resourceVersion"]
    # a plain request and a watch behind it in one write: answered in order
    conn.send(request("GET", f"{cms}/before-watch") + request("GET", f"{cms}?watch=1&resourceVersion={rv}"))
    status, _, got = conn.read_response()
    assert (status, got["metadata"]["name"]) == (200, "before-watch")
    status, headers = conn.read_head()
    assert status == 200 and headers.get("transfer-encoding") == "chunked", headers
    code, body, _ = server.raw("POST", cms, {"metadata": {"name": "during-watch"}})
    assert code == 201, body
    event = json.loads(conn.read_chunk())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "during-watch")


def test_upgrade_after_a_plain_request_on_the_same_connection(conn: Connection, ns: str) -> None:
    conn.send(request("GET", f"/api/v1/namespaces/{ns}"))
    status, _, body = conn.read_response()
    assert (status, body["kind"]) == (200, "Namespace")
    # exec into a pod that does not exist: the upgrade is refused with the Status kubectl shows
    conn.send(request("GET", f"/api/v1/namespaces/{ns}/pods/nosuch/exec?command=true&stdout=true",
                      Connection="Upgrade", Upgrade="websocket", Sec_WebSocket_Version="13",
                      Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==",
                      Sec_WebSocket_Protocol="v4.channel.k8s.io"))  # fmt: skip
    status, _, body = conn.read_response()
    assert (status, body["reason"]) == (404, "NotFound"), body
    conn.send(request("GET", f"/api/v1/namespaces/{ns}"))
    status, _, body = conn.read_response()
    assert (status, body["metadata"]["name"]) == (200, ns)


def test_connection_close_and_malformed_requests(server: Server, ns: str) -> None:
    conn = Connection(server)
    try:
        conn.send(request("GET", f"/api/v1/namespaces/{ns}", Connection="close"))
        status, headers, _ = conn.read_response()
        assert status == 200 and headers.get("connection") == "close"
        assert conn.sock.recv(1) == b""  # the server closed it
    finally:
        conn.close()
    conn = Connection(server)
    try:
        conn.send(request("GET", f"/api/v1/namespaces/{ns}") + b"NOT HTTP AT ALL\r\n\r\n")
        assert conn.read_response()[0] == 200
        assert conn.read_head()[0] == 400
    finally:
        conn.close()

"""skiff.client.http11: requests framed safely, responses parsed however the bytes arrive, and the
client's lean path over it: kept-alive connections, a GET re-sent (a POST not) when the server dropped
the connection, error statuses and timeouts as the client's errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from skiff.api import errors
from skiff.client import Client, ClientConfig, ServerUnreachable
from skiff.client import resources as R
from skiff.client.http11 import ProtocolError, Response, ResponseParser, encode_request

JSON_201 = b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"kind":"Pod"}'


def feed_in_pieces(raw: bytes, size: int, *, head_request: bool = False) -> Response | None:
    """Feed `raw` `size` bytes at a time; the response must appear exactly with the last piece."""
    parser = ResponseParser(head_request=head_request)
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
    for piece in pieces[:-1]:
        assert parser.feed(piece) is None
    return parser.feed(pieces[-1])


def test_a_request_carries_its_headers_and_a_content_length() -> None:
    data = encode_request("POST", "/api/v1/namespaces/a/pods?fieldManager=x", {"Host": "localhost"}, b'{"a":1}')
    assert data == (b"POST /api/v1/namespaces/a/pods?fieldManager=x HTTP/1.1\r\nHost: localhost\r\n"
                    b'Content-Length: 7\r\n\r\n{"a":1}')  # fmt: skip
    assert encode_request("GET", "/healthz", {}, None) == b"GET /healthz HTTP/1.1\r\n\r\n"
    assert b"Content-Length: 0\r\n" in encode_request("POST", "/x", {}, None)


@pytest.mark.parametrize("name, value", [("X-Evil", "a\r\nInjected: 1"), ("X-Evil", "a\nb"), ("X\r\nY", "v")])
def test_a_line_break_inside_a_header_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_request("GET", "/", {name: value}, None)
    with pytest.raises(ValueError, match="line break"):
        encode_request("GET", "/a\r\nHost: evil", {}, None)


@pytest.mark.parametrize("size", [1, 7, 40, 10_000], ids=["byte-by-byte", "7-bytes", "40-bytes", "at-once"])
def test_a_content_length_response_in_any_split(size: int) -> None:
    response = feed_in_pieces(JSON_201, size)
    assert response is not None
    assert (response.status, response.reason, response.body) == (201, "Created", b'{"kind":"Pod"}')
    assert response.headers["content-type"] == "application/json" and response.keep_alive


@pytest.mark.parametrize("size", [1, 5, 10_000], ids=["byte-by-byte", "5-bytes", "at-once"])
def test_a_chunked_response_is_put_back_together(size: int) -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")  # fmt: skip
    response = feed_in_pieces(raw, size)
    assert response is not None and response.body == b"hello world" and response.keep_alive


def test_an_error_status_keeps_its_body_and_connection_close_is_honoured() -> None:
    raw = b'HTTP/1.1 409 Conflict\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}'
    response = ResponseParser().feed(raw)
    assert response is not None and response.status == 409 and response.body == b"{}"
    assert not response.keep_alive


def test_http_1_0_keeps_the_connection_only_when_asked() -> None:
    plain = ResponseParser().feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    kept = ResponseParser().feed(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
    assert plain is not None and not plain.keep_alive
    assert kept is not None and kept.keep_alive


def test_a_body_without_length_runs_to_the_close() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ") is None
    assert parser.feed(b"part two") is None
    response = parser.feed_eof()
    assert response is not None and response.body == b"part one, part two" and not response.keep_alive


def test_a_response_cut_short_is_not_a_response() -> None:
    parser = ResponseParser()
    assert parser.feed(JSON_201[:-3]) is None
    assert parser.feed_eof() is None and parser.started
    assert not ResponseParser().started


def test_no_body_for_head_204_304_and_informational_answers_are_skipped() -> None:
    head = ResponseParser(head_request=True).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 512\r\n\r\n")
    assert head is not None and head.body == b""
    for status in (b"204 No Content", b"304 Not Modified"):
        response = ResponseParser().feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 9\r\n\r\n")
        assert response is not None and response.body == b""
    response = ResponseParser().feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert response is not None and (response.status, response.body) == (200, b"ok")


def test_repeated_headers_are_joined() -> None:
    response = ResponseParser().feed(b"HTTP/1.1 200 OK\r\nWarning: a\r\nwarning: b\r\nContent-Length: 0\r\n\r\n")
    assert response is not None and response.headers["warning"] == "a, b"


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
    ],
    ids=["not-http", "bad-status", "no-colon", "folded", "negative-length", "bad-chunk-size", "chunk-overrun"],
)
def test_bytes_that_are_not_a_response_are_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(raw)


def test_headers_without_an_end_are_bounded() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(ProtocolError, match="longer than"):
        parser.feed(b"X-Big: " + b"x" * 70_000)


# --- the pool and the client's lean path, against a scripted server on a Unix socket ------------------
class ScriptedServer:
    """Answers requests on a Unix socket as told: "ok", "status 404", "close" (hang up without an answer)
    or "hang" (never answer); counts connections and requests."""

    def __init__(self, path: Path, script: list[str]) -> None:
        self.path, self.script = path, script
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                body = await reader.readexactly(length)
                self.requests.append(head.split(b"\r\n", 1)[0] + b" " + body)
                step = self.script.pop(0)
                if step == "close":
                    break
                if step == "hang":
                    await asyncio.sleep(3600)
                if step.startswith("status"):
                    code = int(step.split()[1])
                    status = orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                           "reason": "NotFound", "message": 'pods "p" not found'})  # fmt: skip
                    writer.write(b"HTTP/1.1 %d Not Found\r\nContent-Length: %d\r\n\r\n" % (code, len(status)) + status)
                else:
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


def local_client(path: Path, **kwargs: Any) -> Client:
    config = ClientConfig(server="http://localhost", ssl_context=None, token="t", unix_socket=str(path))
    return Client(config, lean_requests=True, **kwargs)


async def test_requests_share_one_kept_alive_connection(tmp_path: Path) -> None:
    async with ScriptedServer(tmp_path / "s.sock", ["ok", "ok", "ok"]) as server, local_client(server.path) as c:
        for _ in range(3):
            assert await c.get(R.PODS, "p", namespace="a") == {"ok": True}
    assert server.connections == 1
    assert server.requests[0] == b"GET /api/v1/namespaces/a/pods/p HTTP/1.1 "


async def test_a_get_on_a_connection_the_server_dropped_is_sent_again(tmp_path: Path) -> None:
    async with ScriptedServer(tmp_path / "s.sock", ["ok", "close", "ok"]) as server, local_client(server.path) as c:
        await c.get(R.PODS, "p", namespace="a")
        assert await c.get(R.PODS, "p", namespace="a") == {"ok": True}
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_post_the_server_may_have_acted_on_is_not_sent_again(tmp_path: Path) -> None:
    binding = {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}
    async with ScriptedServer(tmp_path / "s.sock", ["ok", "close", "ok"]) as server, local_client(server.path) as c:
        await c.get(R.PODS, "p", namespace="a")
        with pytest.raises(ServerUnreachable, match="closed the connection before answering"):
            await c.create(R.PODS, binding, namespace="a", name="p", subresource="binding")
        assert await c.get(R.PODS, "p", namespace="a") == {"ok": True}  # a fresh connection afterwards
    assert server.requests[1].startswith(b"POST /api/v1/namespaces/a/pods/p/binding HTTP/1.1 {")


async def test_error_statuses_and_timeouts_are_the_clients_errors(tmp_path: Path) -> None:
    async with ScriptedServer(tmp_path / "s.sock", ["status 404", "hang"]) as server:
        async with local_client(server.path, request_timeout=0.3) as c:
            with pytest.raises(errors.NotFound, match='pods "p" not found'):
                await c.get(R.PODS, "p", namespace="a")
            with pytest.raises(ServerUnreachable, match="TimeoutError"):
                await c.get(R.PODS, "p", namespace="a")
    async with local_client(tmp_path / "nobody.sock") as c:
        with pytest.raises(ServerUnreachable):
            await c.get(R.PODS, "p", namespace="a")

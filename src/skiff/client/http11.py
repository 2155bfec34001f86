"""A small keep-alive HTTP/1.1 client for a component's simple JSON requests to the API server.

Why this exists: a component's writes (the scheduler's binding and Scheduled
event per pod, a controller's status updates) are small JSON requests to one
server. Through aiohttp's `ClientSession` each costs ~0.4 ms of CPU even on the
server's local Unix socket -- URL objects, cookie jar, tracing hooks, a response
object with a stream reader, timers -- most of it for features these requests
never use. This module does only what they need: one request at a time per
connection, a pool of keep-alive connections (Unix socket, or TCP with TLS),
a response parsed from the bytes the protocol receives (status line, headers,
a `Content-Length`, chunked or read-to-close body), and a timeout per request.
Watches and anything streaming stay on aiohttp (`skiff.client.rest`).

Failures are `OSError`s (`ConnectionClosed`, `ProtocolError` or the socket's
own) or `TimeoutError`; `skiff.client.rest` turns them into `ServerUnreachable`
and non-2xx answers into the API's `StatusError`s. A request on a reused idle
connection that the server closed before answering is sent again on a fresh
connection when the method is idempotent (as Go's net/http does); a POST is
not, since the server may have acted on it. Idle connections older than
`idle_timeout` (below aiohttp's server keep-alive of 75 s) are not reused.

The parser (`ResponseParser`, `encode_request`) is pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
MAX_HEAD = 64 * 1024  # bytes of status line and headers a response may have
_NO_BODY_STATUS = frozenset({204, 304})


class ProtocolError(ConnectionError):
    """The server's bytes are not an HTTP/1.x response this client understands."""


class ConnectionClosed(ConnectionError):
    """The connection ended before the whole response arrived."""

    def __init__(self, message: str, *, got_response_bytes: bool) -> None:
        super().__init__(message)
        self.got_response_bytes = got_response_bytes


@dataclass(slots=True)
class Response:
    """One complete response: status, headers (names in lower case), body, and whether the connection stays."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def encode_request(method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The bytes of one request; `Content-Length` is added when there is a body (or the method sends one)."""
    head = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        head.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body) if body else 0}")
    text = "\r\n".join(head)
    breaks = len(head) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:  # a CR or LF inside would split the request
        raise ValueError("a request line or header holds a line break")
    data = (text + "\r\n\r\n").encode("latin-1")
    return data + body if body else data


class ResponseParser:
    """Turns received bytes into one `Response`; feed what arrives until `feed` returns it.

    `head_request`: the request was a HEAD (no body follows whatever the headers say).
    Informational (1xx) responses before the final one are skipped.
    """

    __slots__ = ("_body", "_buf", "_chunked", "_head_request", "_headers", "_keep_alive", "_length", "_reason",
                 "_status", "_until_close", "started")  # fmt: skip

    def __init__(self, *, head_request: bool = False) -> None:
        self._buf = bytearray()
        self._head_request = head_request
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._keep_alive = True
        self._length = -1  # the body's Content-Length; -1 before the head (or when not known)
        self._chunked = False
        self._until_close = False
        self._body: list[bytes] = []  # the chunks decoded so far
        self.started = False  # any byte of a response seen

    def feed(self, data: bytes) -> Response | None:
        """Take more bytes; the response once it is complete."""
        if data:
            self.started = True
            self._buf += data
        while self._length == -1 and not self._chunked and not self._until_close:
            if not self._parse_head():
                return None
            if self._status >= 200:
                break
            self._reset_head()  # 100 Continue and friends: the real answer follows
        if self._chunked:
            return self._parse_chunks()
        if self._until_close:
            return None
        if len(self._buf) < self._length:
            return None
        body = bytes(self._buf[: self._length])
        del self._buf[: self._length]
        return self._done(body)

    def feed_eof(self) -> Response | None:
        """The connection ended: the response if its body runs to the close, else None (it was cut short)."""
        if self._until_close:
            self._keep_alive = False
            return self._done(bytes(self._buf))
        return None

    def _reset_head(self) -> None:
        self._status, self._reason, self._headers, self._keep_alive = 0, "", {}, True
        self._length, self._chunked, self._until_close = -1, False, False

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"response headers longer than {MAX_HEAD} bytes")
            return False
        lines = self._buf[:end].decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self._status, self._reason = int(code), reason
        headers = self._headers
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t" or name[0] in " \t":
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self._keep_alive = "keep-alive" in connection
        else:
            self._keep_alive = "close" not in connection
        if self._head_request or self._status < 200 or self._status in _NO_BODY_STATUS:
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit():
                raise ProtocolError(f"bad Content-Length {raw[:40]!r}")
            self._length = int(raw)
        else:
            self._until_close, self._keep_alive = True, False
        return True

    def _parse_chunks(self) -> Response | None:
        buf = self._buf
        pos = 0
        try:
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:  # the last chunk, then trailer lines (ignored) up to an empty line
                    end = buf.find(b"\r\n\r\n", eol)
                    if end < 0:
                        return None
                    pos = end + 4
                    return self._done(b"".join(self._body))
                if len(buf) < eol + 4 + size:
                    return None
                if buf[eol + 2 + size : eol + 4 + size] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                self._body.append(bytes(buf[eol + 2 : eol + 2 + size]))
                pos = eol + 4 + size
        finally:
            del buf[:pos]

    def _done(self, body: bytes) -> Response:
        return Response(self._status, self._reason, self._headers, body, self._keep_alive)


class _Connection(asyncio.Protocol):
    """One connection: sends a request, collects its response through a `ResponseParser`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        waiter, parser = self._waiter, self._parser
        if waiter is None or parser is None or waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted any more
            return
        try:
            response = parser.feed(data)
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if response is not None:
            self._waiter = self._parser = None
            waiter.set_result(response)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost reports the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, parser = self._waiter, self._parser
        self._waiter = self._parser = None
        if waiter is None or parser is None or waiter.done():
            return
        response = parser.feed_eof()
        if response is not None:
            waiter.set_result(response)
            return
        detail = f": {exc}" if exc else ""
        waiter.set_exception(ConnectionClosed(f"the server closed the connection before answering{detail}",
                                              got_response_bytes=parser.started))  # fmt: skip

    def send(self, data: bytes, *, head_request: bool) -> asyncio.Future[Response]:
        assert self.transport is not None
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._parser = ResponseParser(head_request=head_request)
        self._waiter = waiter
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HTTPPool:
    """Keep-alive connections to one server (a Unix socket, or host:port with optional TLS)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        unix_socket: str | None = None,
        limit: int = 64,
        timeout: float = 60.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.unix_socket = unix_socket
        self.timeout = timeout  # seconds per request, from asking for a connection to the last byte
        self.idle_timeout = idle_timeout
        default_port = 443 if ssl_context is not None else 80
        self.host_header = host if port == default_port or unix_socket else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            self.host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        """Send one request and return its response (any status); raises OSError or TimeoutError on failure."""
        data = encode_request(method, target, {"Host": self.host_header, **headers}, body)
        async with self._slots, asyncio.timeout(self.timeout):
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, data, method)
                except ConnectionClosed as exc:
                    if exc.got_response_bytes or method not in IDEMPOTENT:
                        raise
            return await self._exchange(await self._connect(), data, method)

    async def _exchange(self, conn: _Connection, data: bytes, method: str) -> Response:
        ok = False
        try:
            response = await conn.send(data, head_request=method == "HEAD")
            ok = True
        finally:
            if not ok or conn.closed:
                self._discard(conn)
        if response.keep_alive and not conn.closed:
            conn.idle_since = time.monotonic()
            conn.reused = True
            self._idle.append(conn)
        else:
            self._discard(conn)
        return response

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recent: the least likely to have been closed by the server
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
                return conn
            self._discard(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection
        if self.unix_socket:
            _, conn = await loop.create_unix_connection(_Connection, self.unix_socket)
        else:
            _, conn = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self.ssl_context,
                server_hostname=(self.server_hostname or self.host) if self.ssl_context else None,
            )  # fmt: skip
        self._open.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def close(self) -> None:
        """Close every connection (requests in flight fail with ConnectionClosed)."""
        for conn in list(self._open):
            self._discard(conn)
        self._idle.clear()

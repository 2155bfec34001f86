"""HTTP/1.1 for the API server's plain REST requests, without aiohttp's per-request machinery.

Why this exists: a create's CPU on the API server was ~27 % aiohttp's
connection handling (its request, payload stream, response and writer
objects, a task and a keep-alive timer per request), for requests whose
handlers only read a method, a path, a query, headers and a small body and
return a `web.Response` with a bytes body.

`LeanServer` is the listener's protocol factory. Its connections parse
request heads themselves and serve a request when it is plain REST: HTTP/1.1
GET/POST/PUT/PATCH/DELETE on a path `fastroute.RestRoutes` dispatches,
without a streaming segment (watch, log, exec, attach, portforward, proxy)
or a `watch` query, with no body, a Content-Length one or a chunked one
(`Expect: 100-continue` answered; a Content-Length over `content.MAX_BODY`
answered by the handler's 413 and the body dropped as it arrives). The
handler chain is the
same one aiohttp's path runs (`fastroute`), given a `LeanRequest`: the part
of `web.Request` the REST handlers and middlewares read. Responses are
written whole, in order, one request at a time per connection (pipelined
requests wait in the buffer), through `tlswrite`.

Anything else -- an upgrade (exec/attach/port-forward), a watch, the pod
proxy, other routes, HTTP/1.0, a chunked body over the limit or badly
framed, a head this parser finds odd -- hands the connection to aiohttp's `RequestHandler` at that request's
first byte (`set_protocol`, `connection_made`, the buffered bytes as
`data_received`), which keeps it from then on and answers as it always did,
malformed requests included. Nothing of a request is consumed before it is
known to be ours, so a hand-off is always at a request boundary.

This module is the connection: its state, keep-alive, pipelining,
100-continue, the linger after a 413, writing responses and the hand-off.
What the bytes are (head parsing, chunked bodies) is `httpframing`; the
request object the handlers get is `leanrequest`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from skiff.api import errors
from skiff.apiserver import content, tlswrite
from skiff.apiserver.fastroute import Handler, RestRoutes
from skiff.apiserver.httpframing import MAX_HEAD, RequestHead, dechunk, parse_head
from skiff.apiserver.leanrequest import LeanRequest

log = logging.getLogger(__name__)

LINGER = 10.0  # how long an answered oversized body may still come in before a closing connection goes (aiohttp's)
KEEPALIVE_TIMEOUT = 75.0  # an idle connection is closed after this long (aiohttp's default)
READ_HIGH_WATER = content.MAX_BODY + MAX_HEAD  # buffered while a request runs: reading pauses above

_OWN_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})


class LeanServer:
    """The listener's protocol factory: a `LeanProtocol` per connection, handed to `fallback` when not ours.

    `fallback` is aiohttp's server (`runner.server`), whose `RequestHandler` takes
    over a connection; `routes` the REST routes and their handler chains.
    """

    def __init__(self, routes: RestRoutes, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.routes = routes
        self.fallback = fallback
        self.connections: set[LeanProtocol] = set()
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._date = (0, "")

    def __call__(self) -> LeanProtocol:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE_TIMEOUT / 5, self._sweep)
        return LeanProtocol(self)

    def date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        return self._date[1]

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() - KEEPALIVE_TIMEOUT
        for conn in list(self.connections):
            conn.close_if_idle(deadline)
        self._sweeper = loop.call_later(KEEPALIVE_TIMEOUT / 5, self._sweep)

    async def shutdown(self, grace: float) -> None:
        """Close idle connections now, the others once their request is answered (waiting up to `grace` seconds)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = []
        for conn in list(self.connections):
            task = conn.close_when_done()
            if task is not None:
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)


class LeanProtocol(asyncio.Protocol):
    """One client connection: serves its plain REST requests in order, hands it to aiohttp otherwise."""

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: RequestHead | None = None
        self._task: asyncio.Task[None] | None = None  # the request being served
        self._close_after = False
        self._discard = 0  # bytes of an oversized body still to come, dropped as they arrive
        self._read_paused = False
        self._write_paused: asyncio.Future[None] | None = None
        self._last = self._loop.time()

    # ---------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._server.connections.add(self)
        if self._server.closing:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._server.connections.discard(self)
        self._buf.clear()
        waiter = self._write_paused
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._last = self._loop.time()
        if self._discard:
            dropped = min(self._discard, len(data))
            self._discard -= dropped
            data = data[dropped:]
            if not self._discard and self._close_after and self._task is None and self.transport is not None:
                self.transport.close()  # answered, and the client has finished sending: now it may go
                return
        self._buf += data
        if self._task is None:
            self._next()
        elif len(self._buf) > READ_HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; a response still being made has no one to go to

    def pause_writing(self) -> None:
        if self._write_paused is None:
            self._write_paused = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._write_paused = self._write_paused, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------- lifecycle
    def close_if_idle(self, deadline: float) -> None:
        if self._task is None and self._last < deadline and self.transport is not None:
            self.transport.close()

    def close_when_done(self) -> asyncio.Task[None] | None:
        """Close now when idle; else after the request being served, which is returned."""
        if self._task is None:
            if self.transport is not None:
                self.transport.close()
            return None
        self._close_after = True
        return self._task

    # ---------------------------------------------------------------- requests
    def _next(self) -> None:
        """Start the next buffered request if it is whole (or hand the connection over if it is not ours)."""
        buf = self._buf
        if not buf or self.transport is None:
            return
        head = self._head
        if head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._hand_off()
                return
            head = parse_head(buf, end, self._server.routes)
            if head is None:
                self._hand_off()
                return
            self._head = head
            body_sent = len(buf) > head.body_start if head.chunks is not None else len(buf) >= head.total
            if head.expect_continue and not head.too_large and not body_sent:
                tlswrite.write(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
        if head.chunks is not None:
            decoded = dechunk(buf, head)
            if decoded is False:
                return
            if decoded is True:
                self._hand_off()
                return
            assert isinstance(decoded, bytes)
            body = decoded
            del buf[: head.total]
        elif head.too_large:  # answered without its body (the handler's 413)
            body = b""
            if head.expect_continue:  # the client waits for a go-ahead it will not get: no body follows
                self._close_after = True
                buf.clear()
            elif len(buf) >= head.total:
                del buf[: head.total]
            else:  # dropped as it comes; the connection goes on after it
                self._discard = head.total - len(buf)
                buf.clear()
        elif len(buf) < head.total:
            return
        else:
            body = bytes(buf[head.body_start : head.total])
            del buf[: head.total]
        self._head = None
        self._close_after = self._close_after or head.close
        request = LeanRequest(
            head.method, head.path, head.query_string, head.headers, body, head.length, self,
            self._server.routes, head.route, head.params,
        )  # fmt: skip
        self._task = self._loop.create_task(self._serve(request, head.handler))

    async def _serve(self, request: LeanRequest, handler: Handler) -> None:
        try:
            try:
                response = await handler(cast(web.Request, request))
            except Exception as exc:  # what aiohttp would answer 500 for: a Status, and the log says why
                log.exception("error handling %s %s", request.method, request.path)
                response = content.status_response(errors.InternalError(f"internal error: {exc}"))
            self._respond(request, response)
            if self._write_paused is not None:
                await self._write_paused
        finally:
            self._task = None
        if self.transport is None:
            return
        if self._close_after:
            if self._discard:  # closing under a client still sending its body would cut our answer off
                self._loop.call_later(LINGER, self.transport.close)
            else:
                self.transport.close()
            return
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        self._next()

    def _respond(self, request: LeanRequest, response: web.StreamResponse) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body: Any = getattr(response, "body", None) if type(response) is web.Response else None
        if body is None:
            body = b""
        if not isinstance(body, bytes | bytearray) or response.prepared:
            kind = type(response).__name__
            log.error("%s %s answered with a %s this path cannot send", request.method, request.path, kind)
            response = content.status_response(errors.InternalError("the response could not be sent"))
            body = response.body
            assert isinstance(body, bytes)
        lines = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
        headers = response.headers
        if "Content-Type" not in headers:
            lines.append("Content-Type: application/octet-stream\r\n")
        for name, value in headers.items():
            if name.lower() in _OWN_RESPONSE_HEADERS:
                continue
            if "\r" in value or "\n" in value:
                value = value.replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\nDate: {self._server.date()}\r\nServer: {SERVER_SOFTWARE}\r\n")
        if self._close_after:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("utf-8")
        if len(body) <= 65536:
            tlswrite.write(transport, data + body)
        else:
            tlswrite.write(transport, data)
            tlswrite.write(transport, bytes(body))

    def _hand_off(self) -> None:
        """Give the connection, with what it has sent that is not answered yet, to aiohttp's RequestHandler."""
        transport = self.transport
        if transport is None:
            return
        self._server.connections.discard(self)
        data = bytes(self._buf)
        self._buf.clear()
        self._head = None
        self.transport = None
        handler = self._server.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._write_paused is not None:
            handler.pause_writing()
            self._write_paused = None
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if data:
            handler.data_received(data)


class LeanTCPSite(web.TCPSite):
    """A TCP(+TLS) listener of `runner` whose connections start with `lean` (aiohttp's server as fallback)."""

    def __init__(self, runner: web.BaseRunner, lean: LeanServer, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, reuse_address: bool | None = None,
                 shutdown_timeout: float = 5.0) -> None:  # fmt: skip
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=reuse_address)
        self._lean = lean
        self._lean_timeout = shutdown_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._lean,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        await self._lean.shutdown(self._lean_timeout)


class LeanSockSite(web.SockSite):
    """A listener on a bound socket (the local Unix socket) whose connections start with `lean`."""

    def __init__(self, runner: web.BaseRunner, lean: LeanServer, sock: socket.socket, *,
                 shutdown_timeout: float = 5.0) -> None:  # fmt: skip
        super().__init__(runner, sock)
        self._lean = lean
        self._lean_timeout = shutdown_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._lean, sock=self._sock, ssl=self._ssl_context,
                                                backlog=self._backlog)  # fmt: skip

    async def stop(self) -> None:
        await super().stop()
        await self._lean.shutdown(self._lean_timeout)

"""Port-forward into a pod: the kubelet's side of `portforward.k8s.io` over SPDY/3.1.

kubectl opens, for every local connection, a pair of SPDY streams with headers `streamtype`
(`error` or `data`), `port` and `requestid`. Once both are there the agent connects to
localhost:<port> inside the pod's network namespace (a socket made in that namespace, as the
kubelet does, so a server bound to 127.0.0.1 in the pod is reachable) and copies bytes both ways;
a failure is written to the error stream, which kubectl prints. The SPDY bytes arrive in
WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+), relayed unchanged by
the apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

from skiff.node.agent import spdy

log = logging.getLogger(__name__)

CHUNK = 32 * 1024
Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    """setns(2) for the calling thread (os.setns is Python 3.12+)."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def connect_in_netns(netns: Path, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to localhost:`port` inside the network namespace `netns`. Blocking.

    The socket is made by a thread of its own that enters the namespace (a socket stays in the
    namespace it was made in) and ends right after, so no other work ever runs in the pod's network.
    """
    result: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            with open(netns) as target:
                _setns(target.fileno(), CLONE_NEWNET)
            errors: list[OSError] = []
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect((host, port))
                except OSError as e:
                    sock.close()
                    errors.append(e)
                    continue
                sock.setblocking(False)
                result.append(sock)
                return
            result.append(errors[0])
        except BaseException as e:  # handed to the caller
            result.append(e)

    thread = threading.Thread(target=run, name="portforward-dial", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


@dataclass
class _Pair:
    port: int
    data_id: int = 0
    error_id: int = 0
    task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None
    pending: list[bytes] = field(default_factory=list)  # client data before the pod connection is up
    client_done: bool = False


class Session:
    """The server side of one SPDY port-forward session."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], dial: Dial, pod: str = "") -> None:
        self._send_bytes = send
        self.dial = dial
        self.pod = pod
        self.codec = spdy.Codec()
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self._lock = asyncio.Lock()

    async def send(self, frame: spdy.Frame) -> None:
        async with self._lock:  # encoding order is the header compressor's order
            await self._send_bytes(self.codec.encode(frame))

    async def feed(self, data: bytes) -> None:
        for frame in self.codec.feed(data):
            await self.handle(frame)

    async def handle(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.SynStream):
            await self._syn_stream(frame)
        elif isinstance(frame, spdy.Data):
            await self._data(frame)
        elif isinstance(frame, spdy.Ping):
            await self.send(frame)  # a ping is answered with the same id
        elif isinstance(frame, spdy.RstStream):
            pair = self.by_stream.get(frame.stream_id)
            if pair is not None:
                self._end(pair)

    async def _syn_stream(self, frame: spdy.SynStream) -> None:
        def header(name: str) -> str:
            return (frame.headers.get(name) or [""])[0]

        await self.send(spdy.SynReply(frame.stream_id))
        kind, request_id = header("streamtype"), header("requestid")
        try:
            port = int(header("port"))
        except ValueError:
            await self.send(spdy.RstStream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        pair = self.pairs.setdefault(request_id, _Pair(port))
        if kind == "data":
            pair.data_id = frame.stream_id
        elif kind == "error":
            pair.error_id = frame.stream_id
        else:
            await self.send(spdy.RstStream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        self.by_stream[frame.stream_id] = pair
        if pair.data_id and pair.error_id and pair.task is None:
            pair.task = asyncio.create_task(self._forward(pair), name=f"portforward {self.pod}:{port}")

    async def _data(self, frame: spdy.Data) -> None:
        pair = self.by_stream.get(frame.stream_id)
        if pair is None or frame.stream_id != pair.data_id:
            return  # data on the error stream, or on a stream already gone: nothing to do
        if pair.writer is None:
            pair.pending.append(frame.data)
        elif frame.data:
            pair.writer.write(frame.data)
            with contextlib.suppress(ConnectionError):
                await pair.writer.drain()
        if frame.flags & spdy.FLAG_FIN:
            pair.client_done = True
            if pair.writer is not None and pair.writer.can_write_eof():
                with contextlib.suppress(OSError):
                    pair.writer.write_eof()

    async def _forward(self, pair: _Pair) -> None:
        try:
            reader, writer = await self.dial(pair.port)
        except OSError as e:
            message = (f"error forwarding port {pair.port} to pod {self.pod}: failed to connect to "
                       f"localhost:{pair.port} inside the pod's network namespace: {e.strerror or e}")  # fmt: skip
            await self.send(spdy.Data(pair.error_id, message.encode()))
            await self.send(spdy.Data(pair.error_id, b"", spdy.FLAG_FIN))
            await self.send(spdy.Data(pair.data_id, b"", spdy.FLAG_FIN))
            return
        pair.writer = writer
        try:
            for chunk in pair.pending:
                writer.write(chunk)
            pair.pending.clear()
            if pair.client_done and writer.can_write_eof():
                writer.write_eof()
            while data := await reader.read(CHUNK):
                await self.send(spdy.Data(pair.data_id, data))
            await self.send(spdy.Data(pair.data_id, b"", spdy.FLAG_FIN))
            await self.send(spdy.Data(pair.error_id, b"", spdy.FLAG_FIN))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _end(self, pair: _Pair) -> None:
        if pair.task is not None and not pair.task.done():
            pair.task.cancel()
        if pair.writer is not None:
            pair.writer.close()
        for sid in (pair.data_id, pair.error_id):
            self.by_stream.pop(sid, None)
        for key, value in list(self.pairs.items()):
            if value is pair:
                del self.pairs[key]

    async def close(self) -> None:
        pairs = list(self.pairs.values())
        for pair in pairs:
            self._end(pair)
        tasks = [p.task for p in pairs if p.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve_websocket(ws: web.WebSocketResponse, dial: Dial, pod: str = "") -> None:
    """Run a port-forward session whose SPDY bytes come and go in the WebSocket's binary messages."""

    async def send(data: bytes) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(data)

    session = Session(send, dial, pod)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                try:
                    await session.feed(msg.data)
                except spdy.ProtocolError as e:
                    log.info("port-forward to %s: %s", pod, e)
                    break
    finally:
        await session.close()


async def serve_channels(ws: web.WebSocketResponse, dial: Dial, ports: list[int], pod: str = "") -> None:
    """Port-forward without SPDY (`v4.channel.k8s.io` over WebSocket, as the Python client speaks it).

    Each port of the `ports` query parameter has two channels, 2i for data and 2i+1 for errors; one
    connection per port, made when the WebSocket opens. The first message on every channel starts
    with the port, two bytes little-endian.
    """
    writers: dict[int, asyncio.StreamWriter] = {}
    pending: dict[int, list[bytes]] = {i: [] for i in range(len(ports))}  # data before the connection is up

    async def send(channel: int, data: bytes) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([channel]) + data)

    async def forward(i: int, port: int) -> None:
        prefix = port.to_bytes(2, "little")
        await send(2 * i, prefix)
        await send(2 * i + 1, prefix)
        try:
            reader, writer = await dial(port)
        except OSError as e:
            message = (f"error forwarding port {port} to pod {pod}: failed to connect to localhost:{port} inside "
                       f"the pod's network namespace: {e.strerror or e}")  # fmt: skip
            await send(2 * i + 1, message.encode())
            return
        writers[i] = writer
        for chunk in pending.pop(i, []):
            writer.write(chunk)
        try:
            while data := await reader.read(CHUNK):
                await send(2 * i, data)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    tasks = [asyncio.create_task(forward(i, port), name=f"portforward {pod}:{port}") for i, port in enumerate(ports)]

    async def close_when_done(forwards: list[asyncio.Task[None]]) -> None:
        """Every connection ended: so does the WebSocket, as the kubelet's."""
        await asyncio.gather(*forwards, return_exceptions=True)
        await ws.close()

    closer = asyncio.create_task(close_when_done(list(tasks)), name=f"portforward {pod} close")
    tasks.append(closer)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel % 2 or not payload:
                continue
            writer = writers.get(channel // 2)
            if writer is None:
                if channel // 2 in pending:
                    pending[channel // 2].append(payload)
                continue
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

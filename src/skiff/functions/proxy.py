"""The gateway's client to instances: HTTP/1.1 over pooled keep-alive connections, raw bytes.

A warm call through the gateway must add well under a millisecond, so the hop to the instance does
the least a proxy can: the request head is written as bytes (the caller's headers passed through
as they came, the hop-by-hop ones left out), the body as it was read; the answer's head is parsed
for its status, length and the two headers the gateway acts on (`Content-Type`,
`X-Skiff-Retire`) and its body handed back as it came. Connections to an instance are kept open
and reused (the runtime answers keep-alive, `Content-Length` always), one call at a time each.

A reused connection the instance closed meanwhile fails before any answer byte arrives: the call
is sent again once on a new connection (the runtime only closes a connection between calls).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length", b"upgrade",
     b"proxy-connection", b"te", b"trailer"}
)  # fmt: skip
MAX_HEAD = 64 * 1024
IDLE_KEPT = 64  # idle connections kept per instance


class InstanceUnreachable(Exception):
    """The instance could not be reached or broke the connection mid-answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: bytes
    body: bytes
    retire: bool  # the runtime exits after this answer (a timed-out call)


def request_head(method: str, target: str, raw_headers: tuple[tuple[bytes, bytes], ...], length: int) -> bytes:
    """The request head sent to an instance: the caller's end-to-end headers, our length."""
    parts = [f"{method} {target} HTTP/1.1\r\nHost: fn\r\nContent-Length: {length}\r\n".encode()]
    for k, v in raw_headers:
        if k.lower() not in HOP_HEADERS:
            parts.append(k + b": " + v + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def parse_head(head: bytes) -> tuple[int, int, bytes, bool]:
    """Status, content length (-1: none), content type and the retire flag of a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, ctype, retire = -1, b"application/octet-stream", False
    for line in lines[1:]:
        k, sep, v = line.partition(b":")
        if not sep:
            continue
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v.strip())
        elif k == b"content-type":
            ctype = v.strip()
        elif k == b"x-skiff-retire":
            retire = True
    return status, length, ctype, retire


class Connections:
    """Keep-alive connections to one instance."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self, head: bytes, body: bytes) -> Answer:
        """Send one request and read its answer; raises InstanceUnreachable, TimeoutError (by the caller's
        timeout: the connection is then dropped)."""
        while self.idle:  # a reused connection: sent again once on a new one when it was closed meanwhile
            conn = self.idle.pop()
            try:
                return await self._exchange(conn, head, body)
            except _ClosedBeforeAnswer:
                continue
        conn = await self._open()
        try:
            return await self._exchange(conn, head, body)
        except _ClosedBeforeAnswer as e:
            raise InstanceUnreachable(f"{self.host}:{self.port} closed the connection") from e

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        except OSError as e:
            raise InstanceUnreachable(f"{self.host}:{self.port}: {e}") from e

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], head: bytes,
                        body: bytes) -> Answer:  # fmt: skip
        reader, writer = conn
        done = False
        try:
            if len(body) < 65536:
                writer.write(head + body)
            else:
                writer.writelines((head, body))
                await writer.drain()
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                if not e.partial:
                    raise _ClosedBeforeAnswer from e
                raise InstanceUnreachable(f"{self.host}:{self.port}: a truncated answer") from e
            except ConnectionResetError as e:
                raise _ClosedBeforeAnswer from e
            status, length, ctype, retire = parse_head(raw)
            if length < 0:  # the runtime always sends a length; anything else is read to the end
                payload = await reader.read()
                answer = Answer(status, ctype, payload, retire)
                return answer
            payload = await reader.readexactly(length) if length else b""
            done = not retire and len(self.idle) < IDLE_KEPT
            return Answer(status, ctype, payload, retire)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            raise InstanceUnreachable(f"{self.host}:{self.port}: a broken answer ({e})") from e
        except OSError as e:
            raise InstanceUnreachable(f"{self.host}:{self.port}: {e}") from e
        finally:
            if done:
                self.idle.append(conn)
            else:
                writer.close()

    def close(self) -> None:
        for _, writer in self.idle:
            with contextlib.suppress(Exception):
                writer.close()
        self.idle.clear()


class _ClosedBeforeAnswer(Exception):
    """The connection ended before any byte of an answer (a kept-alive one the server closed)."""

"""The agent's half of an attach session to a container's shim (`shim_stdin.py` is the shim's half).

`open_session` connects to the shim of a container started with `stdin: true`: the session carries the
container's output as it is written (`output`) and, if asked for, the client's input, its end and its
terminal sizes. None when the container keeps no stdin (it was started without it, or it has ended):
attach then serves the output from the container's log, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from skiff.node.runtime.shim_stdin import (
    CLOSE,
    DATA,
    HEADER,
    RESIZE,
    SOCKET,
    STDERR,
    STDIN_SESSION,
    short_path,
)

FRAME_MAX = 32 * 1024


class AttachSession:
    """Frames to and from one container's shim."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def _send(self, kind: bytes, payload: bytes = b"") -> None:
        if self.writer.is_closing():
            return
        self.writer.write(HEADER.pack(kind, len(payload)) + payload)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def write(self, data: bytes) -> None:
        for start in range(0, len(data), FRAME_MAX):
            await self._send(DATA, data[start : start + FRAME_MAX])

    async def close_stdin(self) -> None:
        """The client's input ended (with stdinOnce, the container's stdin is closed)."""
        await self._send(CLOSE)

    async def resize(self, rows: int, cols: int) -> None:
        await self._send(RESIZE, f"{rows} {cols}".encode())

    async def output(self) -> AsyncIterator[tuple[bool, bytes]]:
        """(is stderr, bytes) as the container writes them, until its shim ends (the container has exited)."""
        while True:
            try:
                kind, length = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                payload = await self.reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            yield kind == STDERR, payload

    async def aclose(self) -> None:
        """The session ends (for a stdin session with stdinOnce, so does the container's stdin)."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def open_session(container_dir: Path, *, stdin: bool) -> AttachSession | None:
    """A session with the shim of the container whose state directory is `container_dir`, if it keeps
    stdin; `stdin`: this session's input goes to the container."""
    try:
        fd, path = short_path(str(container_dir), SOCKET)
    except OSError:
        return None
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return None
    finally:
        os.close(fd)
    session = AttachSession(reader, writer)
    if stdin:
        await session._send(STDIN_SESSION)
    return session

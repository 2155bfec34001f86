"""The agent's half of a container's kept-open stdin (`shim_stdin.py` is the shim's): one attach session.

`open_stdin` connects to the shim of a container started with `stdin: true`; None when the container
keeps no stdin (it was started without it, or it has ended), in which case attach serves output only,
as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from skiff.node.runtime.shim_stdin import CLOSE, DATA, HEADER, RESIZE, SOCKET, short_path

FRAME_MAX = 32 * 1024


class StdinSession:
    """Frames to one container's shim: input, the end of the client's input, terminal sizes."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

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

    async def aclose(self) -> None:
        """The session ends (with stdinOnce, so does the container's stdin)."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def open_stdin(container_dir: Path) -> StdinSession | None:
    """A session on the stdin of the container whose state directory is `container_dir`, if it keeps one."""
    try:
        fd, path = short_path(str(container_dir), SOCKET)
    except OSError:
        return None
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return None
    finally:
        os.close(fd)
    return StdinSession(writer)

"""Exec and attach over WebSocket with Kubernetes' remotecommand channel protocol (v4 and v5).

Each binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a Status
once the command has ended: Success, or NonZeroExitCode with the exit code as cause), 4 resize
(`{"Width":..,"Height":..}`), and in v5 255 close (payload: the channel closed, 0 = stdin). This
is what kubectl 1.30+ speaks to the apiserver, which relays the messages to the node unchanged.

Without a tty the process's stdin, stdout and stderr are pipes; with one it is a pty master, whose
output goes to stdout and whose size follows the resize channel. Attach relays the same channels
to and from a container's shim (`attach_input`, `attach_output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
from collections.abc import AsyncGenerator

from aiohttp import WSMsgType, web

from skiff.api.kubelet_api import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT, exec_status
from skiff.node.runtime.attach import AttachSession
from skiff.node.runtime.runc import ExecHandle, resize_tty

log = logging.getLogger(__name__)

CHUNK = 32 * 1024
RUNC_FAILED = 255  # runc exec's exit code when it could not start the process
CANNOT_EXECUTE = 126  # what containerd reports then (the shell's "found but cannot execute")
_RUNC_ERROR = re.compile(rb'^time="[^"]*" level=error msg="(.*)"\s*$', re.S)
PTY_DRAIN_IDLE = 0.3  # after the process ended: how long a pty may stay silent before it counts as drained


async def send(ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionResetError):  # the client went away meanwhile
            await ws.send_bytes(bytes([channel]) + data)


async def send_status(ws: web.WebSocketResponse, status: dict[str, object]) -> None:
    await send(ws, ERROR, json.dumps(status).encode())


def runc_failure(first_output: bytes) -> str | None:
    """runc's own error, if the process's first output is runc saying it could not start it."""
    match = _RUNC_ERROR.match(first_output)
    return match.group(1).decode(errors="replace").replace('\\"', '"') if match else None


class _Output:
    """Copies a process's output to a channel, holding back a first chunk that is runc's start failure:
    it is shown as containerd words it (`OCI runtime exec failed: ...`), or as it was if the process ran."""

    def __init__(self, ws: web.WebSocketResponse, channel: int, forward: bool) -> None:
        self.ws, self.channel, self.forward = ws, channel, forward
        self.first = True
        self.held = b""

    async def write(self, data: bytes) -> None:
        if self.first:
            self.first = False
            if runc_failure(data) is not None:
                self.held = data
                return
        if self.forward:
            await send(self.ws, self.channel, data)

    async def finish(self, code: int) -> int:
        """The exit code to report: a runc start failure becomes 126 (cannot execute), as with containerd."""
        failure = runc_failure(self.held) if self.held else None
        if failure is not None and code == RUNC_FAILED:
            await send(self.ws, self.channel, f"OCI runtime exec failed: {failure}: unknown\r\n".encode())
            return CANNOT_EXECUTE
        if self.held and self.forward:
            await send(self.ws, self.channel, self.held)
        return code


async def _pump(reader: asyncio.StreamReader | None, out: _Output) -> None:
    if reader is None:
        return
    while data := await reader.read(CHUNK):
        await out.write(data)


async def _pty_output(master: int) -> AsyncGenerator[bytes, None]:
    """What the pty master gives, until EIO (every slave closed) or, once the process ended, silence."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
        queue.put_nowait(data)

    loop.add_reader(master, readable)
    try:
        while data := await queue.get():
            yield data
    finally:
        loop.remove_reader(master)


async def _write_pty(master: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(master, data)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        data = data[n:]


async def run_exec(
    ws: web.WebSocketResponse, handle: ExecHandle, argv: list[str], *, stdin: bool, stdout: bool, stderr: bool
) -> int:
    """Relay between the WebSocket and a started `runc exec` until it ends; its exit code."""
    proc, master = handle.process, handle.pty_master
    if master is not None:
        os.set_blocking(master, False)
    elif proc.stdin is not None and not stdin:
        proc.stdin.close()

    async def input_loop() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN and stdin:
                if master is not None:
                    await _write_pty(master, payload)
                elif proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(payload)
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                if master is not None:
                    await _write_pty(master, b"\x04")  # end of input at a terminal: ^D
                elif proc.stdin is not None:
                    proc.stdin.close()
            elif channel == RESIZE and master is not None:
                try:
                    size = json.loads(payload)
                    resize_tty(master, int(size.get("Height", 0)), int(size.get("Width", 0)))
                except (ValueError, TypeError, AttributeError, OSError):
                    log.debug("ignoring a bad resize message %r", payload[:100])
        # the client went away: nobody reads the output any more
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    # runc's own errors come on stderr (on the terminal with a tty)
    out, err = _Output(ws, STDOUT, stdout), _Output(ws, STDERR, stderr)
    runc_says = out if master is not None else err
    if master is None:
        out.first = False

    async def output() -> None:
        if master is None:
            await asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err))
            return
        chunks = _pty_output(master)
        exited = asyncio.ensure_future(proc.wait())
        nxt: asyncio.Future[bytes] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(chunks))
                if not exited.done():
                    await asyncio.wait({nxt, exited}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    # the process has ended: what is left comes soon, or a grandchild holds the pty
                    await asyncio.wait({nxt}, timeout=PTY_DRAIN_IDLE)
                    if not nxt.done():
                        return
                try:
                    data = nxt.result()
                except StopAsyncIteration:
                    return
                await out.write(data)
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
            await chunks.aclose()
            exited.cancel()

    reader = asyncio.create_task(input_loop(), name="exec input")
    try:
        await output()
        code = await runc_says.finish(await proc.wait())
        await send_status(ws, exec_status(argv, code))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if master is not None:
            os.close(master)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return code


def _size(payload: bytes) -> tuple[int, int] | None:
    try:
        size = json.loads(payload)
        return int(size.get("Height", 0)), int(size.get("Width", 0))
    except (ValueError, TypeError, AttributeError):
        log.debug("ignoring a bad resize message %r", payload[:100])
        return None


async def attach_input(ws: web.WebSocketResponse, session: AttachSession | None, *, stdin: bool) -> None:
    """Read an attach WebSocket until the client goes away: with `stdin`, its input, the input's close and
    terminal sizes go to the container's `session`; the session ends with the socket."""
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data or session is None or not stdin:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN:
                await session.write(payload)
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                await session.close_stdin()
            elif channel == RESIZE and (size := _size(payload)) is not None:
                await session.resize(*size)
    finally:
        if session is not None:
            await session.aclose()


async def attach_output(ws: web.WebSocketResponse, session: AttachSession) -> None:
    """The container's output as its shim passes it on, until the container ends or the session is closed."""
    async for is_stderr, data in session.output():
        await send(ws, STDERR if is_stderr else STDOUT, data)

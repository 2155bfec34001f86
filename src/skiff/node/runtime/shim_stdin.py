"""A container's stdin, kept open by its shim for `kubectl attach -i` (a container with `stdin: true`).

The shim holds the write end of the container's stdin pipe (or, with a tty, the terminal's master)
and listens on `attach.sock` in the container's state directory. Each attach session is one
connection that sends frames: a type byte, a 4-byte big-endian length and the payload -- `d` data for
stdin, `c` the client closed its stdin, `r` a terminal size ("rows cols"). With `stdinOnce` the
container's stdin is closed when the first session ends (its `c`, or its connection closing), as the
kubelet's runtimes do; without it, sessions come and go and stdin stays open. Closing a terminal's
input is a ^D, as at a keyboard.

Imported by the shim only for such containers, so it imports little (os, socket, struct); the
agent's side, `attach.py`, writes the frames.
"""

from __future__ import annotations

import os
import socket
import struct

SOCKET = "attach.sock"
HEADER = struct.Struct(">cI")
DATA, CLOSE, RESIZE = b"d", b"c", b"r"
MAX_PENDING = 1 << 20  # stdin bytes the container has not read yet, kept before input is dropped
TIOCSWINSZ = 0x5414


def short_path(directory: str, name: str) -> tuple[int, str]:
    """A path to `name` in `directory` short enough for AF_UNIX (107 bytes), through an O_PATH descriptor of
    the directory; the caller closes the descriptor once bound or connected."""
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    return fd, f"/proc/self/fd/{fd}/{name}"


class _Session:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""


class StdinServer:
    """The shim's half: accepts sessions and copies their input into `target` (non-blocking writes)."""

    def __init__(self, state_dir: str, target: int, *, tty: bool, once: bool) -> None:
        self.target: int | None = target
        self.tty, self.once = tty, once
        self.pending = b""
        self.closing = False  # stdin is to be closed once `pending` is written
        self.sessions: dict[int, _Session] = {}
        os.set_blocking(target, False)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fd, path = short_path(state_dir, SOCKET)
        try:
            self.listener.bind(path)
        finally:
            os.close(fd)
        self.listener.listen(8)

    def read_fds(self) -> list[int]:
        return [self.listener.fileno(), *self.sessions]

    def write_fds(self) -> list[int]:
        return [self.target] if self.pending and self.target is not None else []

    def handle(self, fd: int) -> None:
        """`fd` is readable (a new session or a session's frames) or, if it is the target, writable."""
        if fd == self.listener.fileno():
            conn, _ = self.listener.accept()
            self.sessions[conn.fileno()] = _Session(conn)
        elif fd == self.target:
            self._flush()
        elif fd in self.sessions:
            self._read(self.sessions[fd])

    def _read(self, session: _Session) -> None:
        try:
            data = session.conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            del self.sessions[session.conn.fileno()]
            session.conn.close()
            if self.once:
                self._close_stdin()
            return
        session.buffer += data
        while len(session.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(session.buffer)
            if len(session.buffer) < HEADER.size + length:
                break
            payload = session.buffer[HEADER.size : HEADER.size + length]
            session.buffer = session.buffer[HEADER.size + length :]
            if kind == DATA and self.target is not None and len(self.pending) < MAX_PENDING:
                self.pending += payload
                self._flush()
            elif kind == CLOSE and self.once:
                self._close_stdin()
            elif kind == RESIZE and self.tty and self.target is not None:
                rows, _, cols = payload.decode().partition(" ")
                _resize(self.target, int(rows), int(cols))

    def _flush(self) -> None:
        if self.target is None:
            return
        while self.pending:
            try:
                n = os.write(self.target, self.pending)
            except BlockingIOError:
                return
            except OSError:  # the container closed its stdin or exited
                self.pending = b""
                return
            self.pending = self.pending[n:]
        if self.target is not None and self.closing:
            self._close_stdin()

    def _close_stdin(self) -> None:
        """End the container's input: EOF on the pipe, ^D at a terminal (whose master the log pump still reads)."""
        if self.target is None:
            return
        if self.pending:  # what was sent before the close goes first
            self.closing = True
            return
        if self.tty:
            try:
                os.write(self.target, b"\x04")
            except OSError:
                pass
        else:
            os.close(self.target)
        self.target = None


def _resize(fd: int, rows: int, cols: int) -> None:
    import fcntl

    try:
        fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError:
        pass

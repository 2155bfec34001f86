"""A container's stdio, served by its shim to `kubectl attach` (a container with `stdin: true`).

The shim holds the write end of the container's stdin pipe (or, with a tty, the terminal's master)
and listens on `attach.sock` in the container's state directory. Each attach session is one
connection carrying frames both ways: a type byte, a 4-byte big-endian length and the payload. The
agent sends `i` (this session attaches stdin), `d` data for stdin, `c` the client closed its stdin,
`r` a terminal size ("rows cols"); the shim sends what the container writes, as it comes (`o` stdout,
`e` stderr), so a terminal shows prompts and echoes at once rather than line by line as the log has
them. A session that cannot keep up is dropped; the shim never waits for one. With `stdinOnce` the
container's stdin is closed when the first stdin session ends (its `c`, or its connection closing), as
the kubelet's runtimes do; without it, sessions come and go and stdin stays open. Closing a
terminal's input is a ^D, as at a keyboard.

Imported by the shim only for such containers, so it imports little (os, socket, struct); the
agent's side, `attach.py`, writes the frames.
"""

from __future__ import annotations

import os
import socket
import struct

SOCKET = "attach.sock"
HEADER = struct.Struct(">cI")
STDIN_SESSION, DATA, CLOSE, RESIZE = b"i", b"d", b"c", b"r"
STDOUT, STDERR = b"o", b"e"
MAX_PENDING = 1 << 20  # stdin bytes the container has not read yet, kept before input is dropped
MAX_BEHIND = 4 << 20  # output a session has not taken yet, kept before the session is dropped
TIOCSWINSZ = 0x5414


def short_path(directory: str, name: str) -> tuple[int, str]:
    """A path to `name` in `directory` short enough for AF_UNIX (107 bytes), through an O_PATH descriptor of
    the directory; the caller closes the descriptor once bound or connected."""
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    return fd, f"/proc/self/fd/{fd}/{name}"


class _Session:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""  # frames received, not yet whole
        self.out = b""  # frames to send, not yet taken
        self.stdin = False


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
        waiting = [fd for fd, s in self.sessions.items() if s.out]
        return [self.target, *waiting] if self.pending and self.target is not None else waiting

    def readable(self, fd: int) -> None:
        """A new session, or a session's frames."""
        if fd == self.listener.fileno():
            conn, _ = self.listener.accept()
            conn.setblocking(False)
            self.sessions[conn.fileno()] = _Session(conn)
        elif fd in self.sessions:
            self._read(self.sessions[fd])

    def writable(self, fd: int) -> None:
        if fd == self.target:
            self._flush()
        elif fd in self.sessions:
            self._send(self.sessions[fd])

    def output(self, stream: str, data: bytes) -> None:
        """What the container wrote on `stream`, to every session."""
        frame = HEADER.pack(STDERR if stream == "stderr" else STDOUT, len(data)) + data
        for session in list(self.sessions.values()):
            session.out += frame
            self._send(session)

    def _send(self, session: _Session) -> None:
        try:
            sent = session.conn.send(session.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end(session)
            return
        session.out = session.out[sent:]
        if len(session.out) > MAX_BEHIND:
            self._end(session)

    def _end(self, session: _Session) -> None:
        if self.sessions.pop(session.conn.fileno(), None) is None:
            return
        session.conn.close()
        if self.once and session.stdin:
            self._close_stdin()

    def _read(self, session: _Session) -> None:
        try:
            data = session.conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._end(session)
            return
        session.buffer += data
        while len(session.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(session.buffer)
            if len(session.buffer) < HEADER.size + length:
                break
            payload = session.buffer[HEADER.size : HEADER.size + length]
            session.buffer = session.buffer[HEADER.size + length :]
            if kind == STDIN_SESSION:
                session.stdin = True
            elif kind == DATA and self.target is not None and len(self.pending) < MAX_PENDING:
                self.pending += payload
                self._flush()
            elif kind == CLOSE and self.once and session.stdin:
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

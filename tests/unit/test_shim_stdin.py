"""The shim's side of attach (shim_stdin.StdinServer) with a real socket and pipe, driven as the shim's
loop drives it: sessions' input reaches the container's stdin, output reaches every session, stdinOnce
closes stdin when the first stdin session ends and not when an output-only one does."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.node.runtime.shim_stdin import CLOSE, DATA, HEADER, SOCKET, STDIN_SESSION, STDOUT, StdinServer, short_path


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class Shim:
    """A StdinServer on a pipe standing for the container's stdin, and the loop that serves it."""

    def __init__(self, state: Path, *, once: bool) -> None:
        self.container_stdin, target = os.pipe()
        self.server = StdinServer(str(state), target, tty=False, once=once)
        self.state = state

    def connect(self, *, stdin: bool) -> socket.socket:
        fd, path = short_path(str(self.state), SOCKET)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        os.close(fd)
        self.step()
        if stdin:
            conn.sendall(frame(STDIN_SESSION))
        return conn

    def step(self) -> None:
        for _ in range(5):
            ready, writable, _ = select.select(self.server.read_fds(), self.server.write_fds(), [], 0.05)
            for fd in writable:
                self.server.writable(fd)
            for fd in ready:
                self.server.readable(fd)

    def read_stdin(self) -> bytes:
        ready, _, _ = select.select([self.container_stdin], [], [], 1.0)
        return os.read(self.container_stdin, 65536) if ready else b"<nothing>"


@pytest.fixture
def shim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Shim]:
    s = Shim(tmp_path, once=getattr(request, "param", False))
    yield s
    s.server.listener.close()
    os.close(s.container_stdin)


def test_input_reaches_stdin_and_output_every_session(shim: Shim) -> None:
    a, b = shim.connect(stdin=True), shim.connect(stdin=False)
    a.sendall(frame(DATA, b"hello\n"))
    shim.step()
    assert shim.read_stdin() == b"hello\n"
    shim.server.output("stdout", b"prompt> ")
    for conn in (a, b):
        assert conn.recv(100) == frame(STDOUT, b"prompt> ")
    a.close()  # without stdinOnce the container's stdin stays open for the next session
    shim.step()
    c = shim.connect(stdin=True)
    c.sendall(frame(DATA, b"again\n"))
    shim.step()
    assert shim.read_stdin() == b"again\n"


@pytest.mark.parametrize("shim", [True], indirect=True, ids=["stdinOnce"])
def test_stdin_once_closes_after_the_first_stdin_session(shim: Shim) -> None:
    watcher = shim.connect(stdin=False)
    watcher.close()  # an output-only session ending does not close stdin
    shim.step()
    a = shim.connect(stdin=True)
    a.sendall(frame(DATA, b"last\n") + frame(CLOSE))  # what came before the close is written first
    shim.step()
    assert shim.read_stdin() == b"last\n"
    assert shim.read_stdin() == b""  # then EOF

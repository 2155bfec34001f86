"""Starting container shims through one prefork server instead of a Python start-up per container.

Why this exists: every container gets a shim (`shim.py`), a Python process; started as
`python -S -m skiff.node.runtime.shim ...` it spends ~50 ms (far more on a loaded machine) in
interpreter start-up before it can run `runc create`, which was the largest single step of a pod
start. `ShimLauncher` starts `python -S -m skiff.node.runtime.shim --serve` once, on first use, and
hands it each shim's arguments; the server forks the shim, detached in its own session exactly as
a directly started one is, so shims still outlive the agent. The server ends when its stdin closes
(the agent is gone, or `close`). Talking to it is a line each way, done in a thread (a fork takes a
millisecond, but the server may not be scheduled at once on a busy machine). If the server cannot
be started or dies, the launcher says so (`False`) and the caller starts the shim directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


class ShimLauncher:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._server: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._broken = False

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self._server is not None and self._server.poll() is None:
            return self._server
        if self._broken:
            return None
        try:
            self._server = subprocess.Popen(
                [sys.executable, "-S", "-m", "skiff.node.runtime.shim", "--serve"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=self.env, close_fds=True, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            log.warning("the shim server could not be started (%s); shims are started one by one", exc)
            self._broken = True
            return None
        return self._server

    def _launch(self, args: Sequence[str]) -> bool:
        with self._lock:
            for _ in range(2):  # a server that died (killed, say) is started again once
                server = self._ensure()
                if server is None:
                    return False
                assert server.stdin is not None and server.stdout is not None
                try:
                    server.stdin.write(json.dumps(list(args)).encode() + b"\n")
                    server.stdin.flush()
                    answer = server.stdout.readline()
                except OSError:
                    answer = b""
                if answer == b"ok\n":
                    return True
                if answer.startswith(b"error"):
                    raise ValueError(answer.decode(errors="replace").strip())
                self._stop(server)
            self._broken = True
            log.warning("the shim server keeps failing; shims are started one by one")
            return False

    async def launch(self, args: Sequence[str]) -> bool:
        """Fork a detached shim with `args` (the shim's command-line options); False: start it yourself."""
        return await asyncio.to_thread(self._launch, args)

    @staticmethod
    def _stop(server: subprocess.Popen[bytes]) -> None:
        for stream in (server.stdin, server.stdout):
            if stream is not None:
                stream.close()
        try:
            server.wait(timeout=2)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def close(self) -> None:
        """End the server (the shims it started run on)."""
        with self._lock:
            if self._server is not None:
                self._stop(self._server)
                self._server = None

    def __del__(self) -> None:
        server = self._server
        if server is not None and server.poll() is None and server.stdin is not None:
            try:
                server.stdin.close()  # the server ends at EOF
            except OSError:
                pass


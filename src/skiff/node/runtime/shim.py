"""The per-container shim: holds the container's stdio, writes its CRI log and records its exit.

Why a process per container: logs and exit codes must outlive the agent. The agent starts
`python -m skiff.node.runtime.shim ...`, which daemonizes (double fork, new session) and becomes
a child subreaper, then runs `runc create` with its own pipes (or, with a tty, a console socket)
as the container's stdio. runc's init process is re-parented to the shim, so the shim reaps it
and learns the real exit status. Until then it copies stdout/stderr into the log file in CRI
format. When the container has exited and its output is drained, the shim reads the cgroup's OOM
counter (before `runc delete` removes the cgroup) and atomically writes `exit.json`; then it ends.
An agent that restarts finds everything in the container's state directory:

    ready.json   {"pid": N, "created_at": T} once `runc create` succeeded, or {"error": "..."}
    exit.json    {"exit_code": N, "finished_at": T, "oom_killed": bool}
    shim.pid     SIGUSR1 to it reopens the log file (after the agent has rotated it)

Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skiff.node.runtime.crilog import format_lines

PR_SET_CHILD_SUBREAPER = 36
DRAIN_AFTER_EXIT = 2.0


def write_json(path: Path, value: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def oom_kills(cgroup_dirs: list[str]) -> int:
    """The OOM-kill counter of the container's memory cgroup (v1 memory.oom_control, v2 memory.events)."""
    for directory in cgroup_dirs:
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError):
                for line in Path(directory, name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
    return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runc_error(log: Path) -> str:
    """The last error runc logged (its --log file is JSON lines)."""
    message = ""
    with contextlib.suppress(OSError):
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    return message


def receive_console(listener: socket.socket, proc: subprocess.Popen[bytes]) -> int | None:
    """Accept runc's connection on the console socket and take the pty master it sends."""
    while True:
        ready, _, _ = select.select([listener], [], [], 0.05)
        if ready:
            conn, _ = listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            return fds[0] if fds else None
        if proc.poll() is not None:
            return None


class Pump:
    """Copies the container's output fds into the CRI log file, line by line."""

    def __init__(self, log_path: str, streams: dict[int, str]) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab", buffering=0)  # lives as long as the shim
        self.streams = dict(streams)
        self.rest = dict.fromkeys(streams, b"")
        self.reopen = False
        signal.signal(signal.SIGUSR1, self._ask_reopen)

    def _ask_reopen(self, signum: int, frame: object) -> None:
        self.reopen = True

    def step(self, timeout: float) -> None:
        if self.reopen:  # the agent rotated the log (renamed it): continue in a new file at the path
            self.reopen = False
            self.log.close()
            self.log = open(self.log_path, "ab", buffering=0)
        if not self.streams:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(list(self.streams), [], [], timeout)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the tty's other side is closed
                data = b""
            encoded, self.rest[fd] = format_lines(self.streams[fd], self.rest[fd] + data, final=not data)
            if encoded:
                self.log.write(encoded)
            if not data:
                del self.streams[fd]
                os.close(fd)


def run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    (state / "shim.pid").write_text(str(os.getpid()))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    runc_log = state / "runc.log"
    command = [args.runc, "--root", args.runc_root, "--log", str(runc_log), "--log-format", "json", "create",
               "--bundle", args.bundle, "--pid-file", str(state / "pid")]  # fmt: skip
    devnull = os.open(os.devnull, os.O_RDWR)
    listener: socket.socket | None = None
    streams: dict[int, str] = {}
    if args.tty:
        sock_dir = Path(tempfile.mkdtemp(prefix="skiff-console-"))  # short: AF_UNIX paths max 107 bytes
        sock_path = sock_dir / "sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(1)
        command += ["--console-socket", str(sock_path), args.id]
        proc = subprocess.Popen(command, stdin=devnull, stdout=devnull, stderr=devnull)
        master = receive_console(listener, proc)
        proc.wait()
        listener.close()
        sock_path.unlink(missing_ok=True)
        sock_dir.rmdir()
        if master is not None:
            streams[master] = "stdout"
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc = subprocess.Popen([*command, args.id], stdin=devnull, stdout=out_w, stderr=err_w)
        proc.wait()
        os.close(out_w)
        os.close(err_w)
        streams = {out_r: "stdout", err_r: "stderr"}
    pump = Pump(args.log, streams)
    if proc.returncode != 0:
        pump.step(0)
        write_json(state / "ready.json", {"error": runc_error(runc_log) or f"runc create exited {proc.returncode}"})
        return 1
    pid = int((state / "pid").read_text().strip())
    write_json(state / "ready.json", {"pid": pid, "created_at": time.time()})
    status: int | None = None
    finished = 0.0
    while status is None or (pump.streams and time.monotonic() - finished < DRAIN_AFTER_EXIT):
        pump.step(0.2 if status is None else 0.05)
        while status is None:
            try:
                child, child_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # not our child after all (no subreaper?): poll for it
                if not alive(pid):
                    status, finished = 255 << 8, time.monotonic()
                break
            if child == 0:
                break
            if child == pid:
                status, finished = child_status, time.monotonic()
    finished_at = time.time()
    code = os.waitstatus_to_exitcode(status)
    exit_code = 128 - code if code < 0 else code
    oom = oom_kills(args.cgroup_dir) > 0
    write_json(state / "exit.json", {"exit_code": exit_code, "finished_at": finished_at, "oom_killed": oom})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff-shim")
    parser.add_argument("--id", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--runc", default="runc")
    parser.add_argument("--runc-root", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cgroup-dir", action="append", default=[])
    parser.add_argument("--tty", action="store_true")
    args = parser.parse_args(argv)
    if os.fork() > 0:  # the agent waits for this parent only; the shim lives on, re-parented to init
        return 0
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return run(args)
    except Exception as exc:
        ready = Path(args.state_dir, "ready.json")
        if not ready.exists():
            write_json(ready, {"error": f"shim: {exc!r}"})
        raise


if __name__ == "__main__":
    sys.exit(main())

"""The per-container shim: holds the container's stdio, writes its CRI log and records its exit.

Why a process per container: logs and exit codes must outlive the agent. The agent starts
`python -S -m skiff.node.runtime.shim ...`, which daemonizes (double fork, new session) and
becomes a child subreaper, then runs `runc create` with its own pipes (or, with a tty, a console
socket) as the container's stdio. runc's init process is re-parented to the shim, so the shim
reaps it and learns the real exit status. Until then it copies stdout/stderr into the log file in
CRI format. When the container has exited and its output is drained, the shim reads the cgroup's
OOM counter (before `runc delete` removes the cgroup) and atomically writes `exit.json`; then it
ends. An agent that restarts finds everything in the container's state directory:

    ready.json   {"pid": N, "created_at": T} once `runc create` succeeded, or {"error": "..."}
    exit.json    {"exit_code": N, "finished_at": T, "oom_killed": bool}
    shim.pid     SIGUSR1 to it reopens the log file (after the agent has rotated it)

It starts once per container, so it imports little: os-level calls only (no subprocess, pathlib,
argparse, json on the common path -- each costs milliseconds that add up to pod start time).
Quicker still, `--serve` runs it as a prefork server (`shimlauncher.py`): one process, started once,
that reads a shim's arguments per line on stdin and forks that shim, detached as above, so a
container start pays a fork instead of a Python start-up (~50 ms, more on a loaded machine).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time

from skiff.node.runtime.crilog import format_lines

TYPE_CHECKING = False  # typing costs the shim's start-up more than it is worth; mypy reads this name
if TYPE_CHECKING:
    from skiff.node.runtime.shim_stdin import StdinServer

PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
DRAIN_AFTER_EXIT = 2.0


def write_file(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_file(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def oom_kills(cgroup_dirs: list[str]) -> int:
    """The OOM-kill counter of the container's memory cgroup (v1 memory.oom_control, v2 memory.events)."""
    for directory in cgroup_dirs:
        for name in ("memory.events", "memory.oom_control"):
            for line in (read_file(os.path.join(directory, name)) or "").splitlines():
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


def runc_error(log: str) -> str:
    """The last error runc logged (its --log file is JSON lines)."""
    import json

    message = ""
    for line in (read_file(log) or "").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """fork + exec with the given fds as stdio; the shim's other fds are close-on-exec."""
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def wait_exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def create_with_console(command: list[str], devnull: int) -> tuple[int, int | None]:
    """runc create --console-socket: returns runc's exit code and the pty master runc sends."""
    import socket
    import tempfile

    sock_dir = tempfile.mkdtemp(prefix="skiff-console-")  # short: AF_UNIX paths max 107 bytes
    sock_path = os.path.join(sock_dir, "sock")
    master: int | None = None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(sock_path)
        listener.listen(1)
        pid = spawn([*command[:-1], "--console-socket", sock_path, command[-1]], devnull, devnull, devnull)
        code: int | None = None
        while master is None and code is None:
            ready, _, _ = select.select([listener], [], [], 0.05)
            if ready:
                conn, _ = listener.accept()
                with conn:
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                master = fds[0] if fds else None
            else:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
        if code is None:
            code = wait_exit_code(pid)
    os.unlink(sock_path)
    os.rmdir(sock_dir)
    return code, master


class Pump:
    """Copies the container's output fds into the CRI log file, line by line."""

    def __init__(self, log_path: str, streams: dict[int, str]) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab", buffering=0)  # lives as long as the shim
        self.streams = dict(streams)
        self.rest = dict.fromkeys(streams, b"")
        self.reopen = False
        self.stdin: StdinServer | None = None  # for a container with `stdin: true`
        signal.signal(signal.SIGUSR1, self._ask_reopen)

    def _ask_reopen(self, signum: int, frame: object) -> None:
        self.reopen = True

    def step(self, timeout: float) -> None:
        if self.reopen:  # the agent rotated the log (renamed it): continue in a new file at the path
            self.reopen = False
            self.log.close()
            self.log = open(self.log_path, "ab", buffering=0)
        stdin = self.stdin
        extra_r, extra_w = (stdin.read_fds(), stdin.write_fds()) if stdin else ([], [])
        if not self.streams and not extra_r:
            time.sleep(timeout)
            return
        ready, writable, _ = select.select([*self.streams, *extra_r], extra_w, [], timeout)
        for fd in writable:
            if stdin is not None:
                stdin.writable(fd)
        for fd in ready:
            if fd not in self.streams:
                if stdin is not None:
                    stdin.readable(fd)
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:  # a tty master made non-blocking for stdin: nothing after all
                continue
            except OSError:  # EIO: the tty's other side is closed
                data = b""
            if data and stdin is not None:  # attached sessions get it as it comes
                stdin.output(self.streams[fd], data)
            encoded, self.rest[fd] = format_lines(self.streams[fd], self.rest[fd] + data, final=not data)
            if encoded:
                self.log.write(encoded)
            if not data:
                del self.streams[fd]
                os.close(fd)


def run(args: Args) -> int:
    state = args.state_dir
    write_file(os.path.join(state, "shim.pid"), str(os.getpid()))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_NAME, b"skiff-shim", 0, 0, 0)  # what ps shows (forked by the server, its argv is --serve)
    runc_log = os.path.join(state, "runc.log")
    command = [args.runc, "--root", args.runc_root, "--log", runc_log, "--log-format", "json", "create",
               "--bundle", args.bundle, "--pid-file", os.path.join(state, "pid"), args.id]  # fmt: skip
    devnull = os.open(os.devnull, os.O_RDWR)
    streams: dict[int, str] = {}
    stdin_target: int | None = None  # where attached input goes: the stdin pipe, or the terminal
    if args.tty:
        code, master = create_with_console(command, devnull)
        if master is not None:
            streams[master] = "stdout"
            stdin_target = os.dup(master) if args.stdin else None
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, stdin_target = os.pipe() if args.stdin else (devnull, None)
        code = wait_exit_code(spawn(command, in_r, out_w, err_w))
        os.close(out_w)
        os.close(err_w)
        if stdin_target is not None:
            os.close(in_r)
        streams = {out_r: "stdout", err_r: "stderr"}
    pump = Pump(args.log, streams)
    if stdin_target is not None and code == 0:
        from skiff.node.runtime.shim_stdin import StdinServer

        pump.stdin = StdinServer(state, stdin_target, tty=args.tty, once=args.stdin_once)
    ready = os.path.join(state, "ready.json")
    if code != 0:
        import json

        pump.step(0)
        write_file(ready, json.dumps({"error": runc_error(runc_log) or f"runc create exited {code}"}))
        return 1
    pid = int((read_file(os.path.join(state, "pid")) or "0").strip())
    write_file(ready, f'{{"pid": {pid}, "created_at": {time.time()!r}}}')
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
    exit_code = os.waitstatus_to_exitcode(status)
    exit_code = 128 - exit_code if exit_code < 0 else exit_code
    oom = "true" if oom_kills(args.cgroup_dir) > 0 else "false"
    exit_json = f'{{"exit_code": {exit_code}, "finished_at": {finished_at!r}, "oom_killed": {oom}}}'
    write_file(os.path.join(state, "exit.json"), exit_json)
    return 0


class Args:
    """The shim's options: `--name value` pairs and `--tty` (argparse and getopt cost ~10 ms of start-up)."""

    def __init__(self, argv: list[str]) -> None:
        self.cgroup_dir: list[str] = []
        self.tty = self.stdin = self.stdin_once = False
        values: dict[str, str] = {}
        rest = list(argv)
        while rest:
            name = rest.pop(0)
            if name == "--tty":
                self.tty = True
            elif name in ("--stdin", "--stdin-once"):  # keep the container's stdin open for attach (once)
                self.stdin, self.stdin_once = True, self.stdin_once or name == "--stdin-once"
            elif name.startswith("--") and rest:
                if name == "--cgroup-dir":
                    self.cgroup_dir.append(rest.pop(0))
                else:
                    values[name[2:]] = rest.pop(0)
            else:
                raise SystemExit(f"skiff-shim: unexpected argument {name!r}")
        missing = {"id", "bundle", "runc-root", "state-dir", "log"} - set(values)
        if missing:
            raise SystemExit(f"skiff-shim: missing --{', --'.join(sorted(missing))}")
        self.id, self.bundle, self.log = values["id"], values["bundle"], values["log"]
        self.runc_root, self.state_dir = values["runc-root"], values["state-dir"]
        self.runc = values.get("runc", "runc")


def detached(args: Args) -> int:
    """The shim proper, in its own session (its parent has returned)."""
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return run(args)
    except Exception as exc:
        ready = os.path.join(args.state_dir, "ready.json")
        if not os.path.exists(ready):
            import json

            write_file(ready, json.dumps({"error": f"shim: {exc!r}"}))
        raise


def serve() -> int:
    """The prefork server: a JSON list of shim arguments per line on stdin; for each, a detached shim is
    forked and `ok` (or `error <why>`) answered on stdout. Ends when stdin closes (its agent is gone)."""
    import json

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            args = Args(json.loads(line))
        except (ValueError, TypeError, SystemExit) as exc:
            out.write(f"error {exc}\n".encode())
            out.flush()
            continue
        pid = os.fork()
        if pid == 0:  # the first child forks the shim and returns at once, as `main` does
            code = 1
            try:
                if os.fork() == 0:
                    devnull = os.open(os.devnull, os.O_RDWR)
                    err = os.open(os.path.join(args.state_dir, "shim.err"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                    os.dup2(devnull, 0)  # not the server's pipes: the agent must not wait on a shim
                    os.dup2(devnull, 1)
                    os.dup2(err, 2)
                    os.close(devnull)
                    os.close(err)
                    code = detached(args)
                else:
                    code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
        out.write(b"ok\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:
        return serve()
    args = Args(argv)
    if os.fork() > 0:  # the agent waits for this parent only; the shim lives on, re-parented to init
        return 0
    return detached(args)


if __name__ == "__main__":
    sys.exit(main())

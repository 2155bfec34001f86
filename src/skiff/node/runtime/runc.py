"""An async wrapper around the runc command line, with its own `--root` state directory.

Containers are created through the shim (see `shim.py`) so that their stdio and exit status
outlive the agent; everything else (start, state, kill, delete, exec) calls runc directly.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import struct
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.node.runtime.proc import CommandError, run
from skiff.node.runtime.shimlauncher import ShimLauncher

PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # the directory that holds `skiff`


LIST_ATTEMPTS = 3  # `runc list` racing a delete fails; it is tried again


class RuncError(Exception):
    """runc refused or failed; the message is runc's."""


class Runc:
    def __init__(self, root: Path, *, binary: str = "runc") -> None:
        self.root = root
        self.binary = binary
        self.shims = ShimLauncher({**os.environ, "PYTHONPATH": PACKAGE_ROOT})

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def _run(self, *args: str, check: bool = True) -> tuple[int, bytes, bytes]:
        try:
            return await run(*self._argv(*args), check=check)
        except CommandError as exc:
            raise RuncError(exc.stderr.decode(errors="replace").strip() or str(exc)) from exc

    async def create(
        self,
        container_id: str,
        *,
        bundle: Path,
        state_dir: Path,
        log_path: Path,
        cgroup_dirs: list[Path],
        tty: bool = False,
        stdin: str = "",  # "--stdin" or "--stdin-once": the shim keeps the container's stdin for attach
        ready_within: float = 30.0,
    ) -> int:
        """`runc create` under a new shim; return the container's init pid once it exists."""
        self.root.mkdir(parents=True, exist_ok=True)
        args = ["--id", container_id, "--bundle", str(bundle), "--runc", self.binary, "--runc-root", str(self.root),
                "--state-dir", str(state_dir), "--log", str(log_path)]  # fmt: skip
        for directory in cgroup_dirs:
            args += ["--cgroup-dir", str(directory)]
        if tty:
            args.append("--tty")
        if stdin:
            args.append(stdin)
        if not await self.shims.launch(args):  # forked by the shim server; else a shim process of its own:
            # -S: no site (its .pth files cost ~100 ms); the shim needs only the stdlib and this package
            with open(state_dir / "shim.err", "ab") as err:  # noqa: ASYNC230 - opening a local file
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-S", "-m", "skiff.node.runtime.shim", *args, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
                )  # fmt: skip
            await proc.wait()  # the shim's first process forks and returns at once
        ready = state_dir / "ready.json"
        deadline = time.monotonic() + ready_within
        while not ready.exists():
            if time.monotonic() > deadline:
                raise RuncError(f"container {container_id}: the shim did not report within {ready_within}s")
            await asyncio.sleep(0.005)
        info = json.loads(ready.read_text())
        if "error" in info:
            raise RuncError(str(info["error"]))
        return int(info["pid"])

    async def start(self, container_id: str) -> None:
        await self._run("start", container_id)

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """runc's state of the container (status created/running/stopped, pid), None if unknown to runc."""
        code, out, err = await self._run("state", container_id, check=False)
        if code != 0:
            if b"does not exist" in err or b"not exist" in err:
                return None
            raise RuncError(err.decode(errors="replace").strip())
        state: dict[str, Any] = json.loads(out)
        return state

    async def kill(self, container_id: str, signal: str = "TERM", *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, signal]
        code, _, err = await self._run(*args, check=False)
        if code != 0 and b"not running" not in err and b"does not exist" not in err:
            raise RuncError(err.decode(errors="replace").strip())

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete the container (idempotent: a container runc no longer knows is fine)."""
        code, _, err = await self._run("delete", *(["--force"] if force else []), container_id, check=False)
        if code != 0 and b"does not exist" not in err:
            raise RuncError(err.decode(errors="replace").strip())

    async def list_states(self) -> dict[str, dict[str, Any]]:
        """Every container runc knows, id -> its state (status, pid...), in one call."""
        if not self.root.exists():
            return {}
        for attempt in range(LIST_ATTEMPTS):
            try:
                _, out, _ = await self._run("list", "--format", "json")
                break
            except RuncError as exc:
                # runc reads the root's entries, then each one's state: a container deleted in
                # between fails the whole list ("stat <root>/<id>: no such file or directory")
                if "no such file or directory" not in str(exc) or attempt == LIST_ATTEMPTS - 1:
                    raise
        items = json.loads(out or b"null") or []
        return {str(item["id"]): item for item in items}

    async def list_ids(self) -> list[str]:
        return sorted(await self.list_states())

    async def exec_process(
        self, container_id: str, argv: list[str], *, tty: bool = False, env: dict[str, str] | None = None,
        cwd: str | None = None, tty_size: tuple[int, int] | None = None,
    ) -> ExecHandle:
        """Start `runc exec` in the foreground; runc's exit code is the process's.

        Without `tty`: pipes for stdin, stdout and stderr. With `tty`, runc allocates a pty in the
        container and copies between it and its own terminal, which is a pty made here: read and
        write `pty_master` (the process's own pipes are then None). `tty_size` (rows, columns) is the
        terminal's size at start; `resize_tty` changes it later (runc passes it on to the container).
        """
        args = ["exec", *(["--tty"] if tty else [])]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        if cwd:
            args += ["--cwd", cwd]
        command = self._argv(*args, container_id, *argv)
        if not tty:
            pipe = asyncio.subprocess.PIPE
            return ExecHandle(await asyncio.create_subprocess_exec(*command, stdin=pipe, stdout=pipe, stderr=pipe))
        master, slave = os.openpty()
        if tty_size:
            resize_tty(slave, *tty_size)
        try:
            # runc's terminal is its controlling tty, so that a resize reaches it as SIGWINCH
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=_take_ctty
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return ExecHandle(proc, master)


def _take_ctty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def resize_tty(fd: int, rows: int, columns: int) -> None:
    """Set the window size of the pty behind `fd` (an exec's `pty_master`)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


@dataclass
class ExecHandle:
    """A running `runc exec`: its process, and with a tty the pty master to talk to it through."""

    process: asyncio.subprocess.Process
    pty_master: int | None = None

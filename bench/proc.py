"""What the benchmarks read about processes: CPU seconds, RSS, process trees from /proc; and two small helpers.

Each bench script starts real `skiff` processes and reports what they cost;
they read /proc the same way, so they share this module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (index 1 is the parent pid), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User+system CPU seconds of a process (all its threads), 0 if it is gone; with `children`, also those
    of the child processes it ran and waited for (runc, CNI plugins, mount...)."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(f) for f in fields[11:15 if children else 13]) / CLK_TCK


def rss_kb(pid: int) -> int:
    """Resident set size from /proc/<pid>/statm (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def rss_mb(pid: int) -> float:
    return rss_kb(pid) / 1024


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def child_pid(parent: int, component: str, timeout: float = 20.0) -> int:
    """The pid of `skiff server`'s child running `component` (e.g. "scheduler")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in process_tree(parent)[1:]:
            fields = stat_fields(pid)
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if fields is not None and int(fields[1]) == parent and component.encode() in cmd:
                return pid
        time.sleep(0.1)
    raise RuntimeError(f"no {component} child process of {parent}")


async def terminate(*procs: asyncio.subprocess.Process | None, grace: float = 30.0) -> None:
    """SIGTERM each process still running, in order; SIGKILL one still running after `grace` seconds."""
    for proc in procs:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                proc.kill()
                await proc.wait()

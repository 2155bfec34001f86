"""Reading CRI logs as `kubectl logs` prints them, and rotating them by size (files in a temporary dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from skiff.api.kubelet_api import exec_status
from skiff.node.agent import container_logs
from skiff.node.agent.container_logs import LogOptionError, LogOptions
from skiff.node.runtime import crilog

T0 = 1_800_000_000 * 10**9  # ns


def write(path: Path, *lines: tuple[int, str, bytes]) -> None:
    """Append (seconds after T0, stream, text) entries in CRI format."""
    with path.open("ab") as f:
        for secs, stream, text in lines:
            f.write(crilog.format_lines(stream, text, final=True, ns=T0 + secs * 10**9)[0])


async def read(path: Path, opts: LogOptions) -> bytes:
    async def stopped() -> bool:
        return False

    return b"".join([chunk async for chunk in container_logs.stream(path, opts, stopped)])


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "0.log"
    write(path, (0, "stdout", b"one\n"), (1, "stderr", b"two\n"), (2, "stdout", b"three\n"))
    return path


async def test_plain_tail_limit_and_timestamps(log: Path) -> None:
    assert await read(log, LogOptions()) == b"one\ntwo\nthree\n"
    assert await read(log, LogOptions(tail_lines=2)) == b"two\nthree\n"
    assert await read(log, LogOptions(tail_lines=0)) == b""
    assert await read(log, LogOptions(tail_lines=10)) == b"one\ntwo\nthree\n"
    assert await read(log, LogOptions(limit_bytes=6)) == b"one\ntw"
    stamped = (await read(log, LogOptions(timestamps=True))).decode().splitlines()
    assert stamped[0] == crilog.timestamp(T0) + " one"


async def test_since(log: Path) -> None:
    opts = LogOptions.from_query({"sinceSeconds": "2"}, now=(T0 + 3 * 10**9) / 1e9)
    assert await read(log, opts) == b"two\nthree\n"
    opts = LogOptions.from_query({"sinceTime": "2027-01-15T08:00:02Z"})
    assert opts.since == crilog.timestamp(1_800_000_000 * 10**9 + 2 * 10**9)
    assert await read(log, opts) == b"three\n"


def test_query_errors() -> None:
    with pytest.raises(LogOptionError, match="at most one of `sinceTime` or `sinceSeconds`"):
        LogOptions.from_query({"sinceSeconds": "1", "sinceTime": "2027-01-15T08:00:02Z"})
    with pytest.raises(LogOptionError, match="tailLines"):
        LogOptions.from_query({"tailLines": "x"})
    with pytest.raises(LogOptionError, match="limitBytes"):
        LogOptions.from_query({"limitBytes": "0"})
    opts = LogOptions.from_query({"follow": "true", "previous": "true", "timestamps": "true", "tailLines": "3"})
    assert (opts.follow, opts.previous, opts.timestamps, opts.tail_lines) == (True, True, True, 3)


async def test_long_lines_are_joined(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    text = b"x" * (crilog.MAX_LINE * 2 + 5)
    write(path, (0, "stdout", text + b"\n"))
    assert await read(path, LogOptions()) == text + b"\n"


async def test_rotation_keeps_max_files_and_reads_span_them(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    for i in range(8):
        write(path, (i, "stdout", f"line {i}\n".encode()))
        assert container_logs._rotate(path, max_size=10, max_files=3)
        await asyncio.sleep(0.001)  # rotated names carry the time in microseconds
    write(path, (9, "stdout", b"live\n"))
    assert len(container_logs.rotated_files(path)) == 2  # with the live file: 3
    assert await read(path, LogOptions()) == b"line 6\nline 7\nlive\n"
    assert not container_logs._rotate(path, max_size=1000, max_files=3)
    assert container_logs.attempts(tmp_path) == [0]


async def test_follow_continues_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write(path, (0, "stdout", b"a\n"))
    state = {"running": True}

    async def running() -> bool:
        return state["running"]

    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in container_logs.stream(path, LogOptions(follow=True), running):
            got.append(chunk)

    task = asyncio.create_task(follow())
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.02)
    write(path, (1, "stdout", b"b\n"))
    assert container_logs._rotate(path, max_size=1, max_files=5)
    write(path, (2, "stdout", b"c\n"))
    for _ in range(100):
        if len(got) == 3:
            break
        await asyncio.sleep(0.02)
    state["running"] = False
    await asyncio.wait_for(task, 5)
    assert got == [b"a\n", b"b\n", b"c\n"]


def test_exec_status_is_what_kubectl_reads() -> None:
    assert exec_status(["true"], 0) == {"metadata": {}, "status": "Success"}
    failed = exec_status(["sh", "-c", "exit 3"], 3)
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert failed["message"] == (
        "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
    )

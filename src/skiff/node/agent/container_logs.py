"""Serving a container's CRI log as `kubectl logs` shows it, and rotating log files by size.

The shim writes `<attempt>.log` in CRI format; when it grows past `max_size` the rotator renames it
to `<attempt>.log.<UTC timestamp>` and tells the shim to reopen its path, keeping at most
`max_files` files per container (the kubelet's containerLogMaxSize 10Mi and containerLogMaxFiles
5). A read covers the rotated files, oldest first, then the live one; with `follow` it keeps
reading the live file (across a rotation) until the container has stopped.

The query parameters are the kubelet's (and the apiserver's pods/log): follow, tailLines,
sinceSeconds / sinceTime, timestamps, limitBytes, previous.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from skiff.node.runtime import crilog
from skiff.node.runtime.runtime import ContainerNotFound, Runtime
from skiff.node.runtime.types import ContainerState

log = logging.getLogger(__name__)

MAX_SIZE = 10 * 1024 * 1024  # containerLogMaxSize: 10Mi
MAX_FILES = 5  # containerLogMaxFiles
FOLLOW_POLL = 0.1  # seconds between reads of a followed log
_ATTEMPT_LOG = re.compile(r"^(\d+)\.log$")


class LogOptionError(ValueError):
    """A query parameter that cannot be used; the message names it as Kubernetes does."""


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since: str | None = None  # an RFC 3339 (nanosecond) UTC timestamp: entries at or after it
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], now: float | None = None) -> LogOptions:
        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("true", "1")

        def number(name: str, minimum: int) -> int | None:
            raw = query.get(name)
            if raw is None or raw == "":
                return None
            try:
                value = int(raw)
            except ValueError:
                raise LogOptionError(f"{name}: Invalid value: {raw!r}: must be an integer") from None
            if value < minimum:
                raise LogOptionError(f"{name}: Invalid value: {value}: must be greater than {minimum - 1}")
            return value

        since_seconds = number("sinceSeconds", 1)
        since_time = query.get("sinceTime") or None
        if since_seconds is not None and since_time is not None:
            raise LogOptionError("at most one of `sinceTime` or `sinceSeconds` may be specified")
        since = None
        if since_seconds is not None:
            since = crilog.timestamp(int(((time.time() if now is None else now) - since_seconds) * 1e9))
        elif since_time is not None:
            since = crilog.timestamp(int(_parse_rfc3339(since_time) * 1e9))
        return cls(follow=flag("follow"), previous=flag("previous"), timestamps=flag("timestamps"),
                   tail_lines=number("tailLines", 0), since=since,
                   limit_bytes=number("limitBytes", 1))  # fmt: skip


def _parse_rfc3339(value: str) -> float:
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise LogOptionError(f"sinceTime: Invalid value: {value!r}: not an RFC 3339 time") from None


# --- which files --------------------------------------------------------------------------------


def attempts(container_dir: Path) -> list[int]:
    """The attempts of a container that have a log, newest first."""
    try:
        names = os.listdir(container_dir)
    except OSError:
        return []
    return sorted((int(m.group(1)) for n in names if (m := _ATTEMPT_LOG.match(n))), reverse=True)


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of a live log `path`, oldest first."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    prefix = path.name + "."
    return [path.parent / n for n in sorted(n for n in names if n.startswith(prefix) and not n.endswith(".tmp"))]


# --- reading -------------------------------------------------------------------------------------


class _Decoder:
    """CRI lines in, `kubectl logs` lines out (partial chunks joined, since and timestamps applied)."""

    def __init__(self, opts: LogOptions) -> None:
        self.opts = opts
        self.rest = b""
        self.pending: dict[str, bytes] = {}

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        out = []
        for raw in lines:
            try:
                entry = crilog.parse_line(raw)
            except ValueError:
                continue
            if entry.partial:
                self.pending[entry.stream] = self.pending.get(entry.stream, b"") + entry.text
                continue
            text = self.pending.pop(entry.stream, b"") + entry.text
            if self.opts.since is not None and entry.timestamp < self.opts.since:
                continue
            prefix = entry.timestamp.encode() + b" " if self.opts.timestamps else b""
            out.append(prefix + text + b"\n")
        return out


def _read_existing(path: Path, opts: LogOptions) -> tuple[list[bytes], BinaryIO | None, _Decoder]:
    """Every line so far (tailed), and the live file open at its end for following."""
    decoder = _Decoder(opts)
    lines: list[bytes] = []
    for old in rotated_files(path):
        try:
            lines += decoder.feed(old.read_bytes())
        except OSError:
            continue
    live: BinaryIO | None
    try:
        live = path.open("rb")
    except OSError:
        live = None
    if live is not None:
        lines += decoder.feed(live.read())
    if opts.tail_lines is not None:
        lines = lines[len(lines) - opts.tail_lines :] if opts.tail_lines else []
    return lines, live, decoder


def _read_more(path: Path, live: BinaryIO | None) -> tuple[bytes, BinaryIO | None]:
    """New bytes of the followed file; after a rotation, the rest of the old file then the new one."""
    if live is None:
        try:
            return b"", path.open("rb")
        except OSError:
            return b"", None
    data = live.read()
    if data:
        return data, live
    try:
        renamed = os.stat(path).st_ino != os.fstat(live.fileno()).st_ino
    except OSError:
        renamed = False
    if not renamed:
        return b"", live
    live.close()
    try:
        new = path.open("rb")
    except OSError:
        return b"", None
    return new.read(), new


async def stream(path: Path, opts: LogOptions, running: Callable[[], Awaitable[bool]]) -> AsyncIterator[bytes]:
    """The log at `path` as `kubectl logs` prints it; with `follow`, until `running()` says the
    container has stopped and everything it wrote has been sent."""
    lines, live, decoder = await asyncio.to_thread(_read_existing, path, opts)
    budget = opts.limit_bytes
    try:
        while True:
            for line in lines:
                if budget is not None:
                    line = line[:budget]
                    budget -= len(line)
                yield line
                if budget is not None and budget <= 0:
                    return
            if not opts.follow:
                return
            alive = await running()
            data, live = await asyncio.to_thread(_read_more, path, live)
            lines = decoder.feed(data)
            if not data:
                if not alive:
                    return
                await asyncio.sleep(FOLLOW_POLL)
    finally:
        if live is not None:
            live.close()


# --- rotation ------------------------------------------------------------------------------------


def _rotate(path: Path, max_size: int, max_files: int) -> bool:
    """Rename `path` aside if it is larger than `max_size`, dropping the oldest beyond `max_files`."""
    try:
        if path.stat().st_size <= max_size:
            return False
    except OSError:
        return False
    suffix = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S.%f")
    path.rename(path.with_name(f"{path.name}.{suffix}"))
    for old in rotated_files(path)[: max(0, len(rotated_files(path)) - (max_files - 1))]:
        old.unlink(missing_ok=True)
    return True


async def rotate_logs(runtime: Runtime, *, max_size: int = MAX_SIZE, max_files: int = MAX_FILES) -> int:
    """Rotate the log of every running container that outgrew `max_size`; how many were rotated."""
    count = 0
    for info in await runtime.list():
        if info.state != ContainerState.RUNNING:
            continue
        if await asyncio.to_thread(_rotate, info.log_path, max_size, max_files):
            try:
                runtime.reopen_log(info.id)
            except ContainerNotFound:
                pass
            count += 1
    return count


@dataclass(frozen=True)
class LogRotation:
    """The kubelet's containerLogMaxSize, containerLogMaxFiles and containerLogMonitorInterval."""

    max_size: int = MAX_SIZE
    max_files: int = MAX_FILES
    interval: float = 10.0


async def rotation_loop(runtime: Runtime, stop: asyncio.Event, policy: LogRotation = LogRotation()) -> None:
    """Check the logs every `policy.interval` seconds until `stop`."""
    while not stop.is_set():
        try:
            await rotate_logs(runtime, max_size=policy.max_size, max_files=policy.max_files)
        except Exception:  # a failed round is retried next time
            log.exception("log rotation failed")
        try:
            await asyncio.wait_for(stop.wait(), policy.interval)
        except TimeoutError:
            pass

"""Kubernetes' CRI log format: `<RFC3339Nano UTC> stdout|stderr F|P <text>` per line.

Written by the per-container shim, read by whoever serves `kubectl logs`. Standard library only
(the shim imports it). A line longer than MAX_LINE is split into `P` (partial) chunks ending with
an `F` (full) chunk, as the kubelet's readers expect.
"""

from __future__ import annotations

import time

MAX_LINE = 16 * 1024


def timestamp(ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds in UTC, e.g. `2026-11-27T00:08:14.123456789Z`."""
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def format_lines(stream: str, data: bytes, *, final: bool, ns: int | None = None) -> tuple[bytes, bytes]:
    """Encode the complete lines in `data`; return (encoded, the incomplete rest).

    With `final`, the rest is flushed as a full line too (the stream ended without a newline).
    """
    ts = timestamp(ns).encode()
    prefix = ts + b" " + stream.encode() + b" "
    out: list[bytes] = []
    lines = data.split(b"\n")
    rest = lines.pop()
    if final and rest:
        lines.append(rest)
        rest = b""
    for line in lines:
        while len(line) > MAX_LINE:
            out.append(prefix + b"P " + line[:MAX_LINE] + b"\n")
            line = line[MAX_LINE:]
        out.append(prefix + b"F " + line + b"\n")
    while len(rest) > MAX_LINE:
        out.append(prefix + b"P " + rest[:MAX_LINE] + b"\n")
        rest = rest[MAX_LINE:]
    return b"".join(out), rest


class LogEntry:
    """One entry of a CRI log (a plain class: dataclasses or typing would slow the shim's start)."""

    __slots__ = ("partial", "stream", "text", "timestamp")

    def __init__(self, timestamp: str, stream: str, partial: bool, text: bytes) -> None:
        self.timestamp = timestamp
        self.stream = stream
        self.partial = partial
        self.text = text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogEntry):
            return NotImplemented
        return (self.timestamp, self.stream, self.partial, self.text) == (
            other.timestamp, other.stream, other.partial, other.text)  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.timestamp, self.stream, self.partial, self.text))

    def __repr__(self) -> str:
        return f"LogEntry({self.timestamp!r}, {self.stream!r}, {self.partial!r}, {self.text!r})"


def parse_line(line: bytes) -> LogEntry:
    """One line of a CRI log file (without its newline)."""
    ts, stream, tag, text = [*line.split(b" ", 3), b"", b"", b""][:4]
    if stream not in (b"stdout", b"stderr") or tag not in (b"F", b"P"):
        raise ValueError(f"not a CRI log line: {line[:80]!r}")
    return LogEntry(ts.decode(), stream.decode(), tag == b"P", text)


def parse(data: bytes) -> list[LogEntry]:
    """Every entry of a CRI log file's contents, partial chunks joined to their full line."""
    entries: list[LogEntry] = []
    pending: dict[str, bytes] = {}
    for raw in data.splitlines():
        entry = parse_line(raw)
        if entry.partial:
            pending[entry.stream] = pending.get(entry.stream, b"") + entry.text
            continue
        text = pending.pop(entry.stream, b"") + entry.text
        entries.append(LogEntry(entry.timestamp, entry.stream, False, text))
    return entries

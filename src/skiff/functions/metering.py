"""Metering: every invocation recorded durably, and the bill computed from the records.

The gateway appends one row per call (namespace, function, start, duration, status, GB-seconds)
to a SQLite file in its data dir, so records survive a restart. Writes are batched: calls are
queued in memory and flushed by one task (in a thread, never on the event loop) every fraction of
a second; `flush()` is called on shutdown. `summarize` is the pure aggregation behind
`skiff fn usage`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    start REAL NOT NULL,
    duration REAL NOT NULL,
    status INTEGER NOT NULL,
    gb_seconds REAL NOT NULL,
    cold INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS invocations_start ON invocations(start);
"""


@dataclass(frozen=True)
class Invocation:
    namespace: str
    function: str
    start: float  # unix time
    duration: float  # seconds
    status: int  # HTTP status answered
    gb_seconds: float
    cold: bool = False


@dataclass(frozen=True)
class UsageLine:
    namespace: str
    function: str
    invocations: int
    errors: int
    duration: float
    gb_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "function": self.function, "invocations": self.invocations,
                "errors": self.errors, "durationSeconds": round(self.duration, 6),
                "gbSeconds": round(self.gb_seconds, 9)}  # fmt: skip


def summarize(records: Iterable[Invocation]) -> list[UsageLine]:
    """One line per (namespace, function): counts, errors (status ≥ 500 or 429), total duration and GB-s."""
    totals: dict[tuple[str, str], list[float]] = {}
    for r in records:
        t = totals.setdefault((r.namespace, r.function), [0, 0, 0.0, 0.0])
        t[0] += 1
        t[1] += 1 if r.status >= 500 or r.status == 429 else 0
        t[2] += r.duration
        t[3] += r.gb_seconds
    return [UsageLine(ns, fn, int(t[0]), int(t[1]), t[2], t[3]) for (ns, fn), t in sorted(totals.items())]


class Meter:
    """The invocation log of one gateway."""

    def __init__(self, path: Path, *, flush_interval: float = 0.2) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self._pending: list[Invocation] = []
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        def _open() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.executescript(SCHEMA)
            db.execute("PRAGMA journal_mode=WAL")
            return db

        self._db = await asyncio.to_thread(_open)

    def record(self, inv: Invocation) -> None:
        self._pending.append(inv)

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch and self._db is not None:
                await asyncio.to_thread(self._write, batch)

    def _write(self, batch: list[Invocation]) -> None:
        assert self._db is not None
        with self._db:
            self._db.executemany(
                "INSERT INTO invocations (namespace, function, start, duration, status, gb_seconds, cold)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(i.namespace, i.function, i.start, i.duration, i.status, i.gb_seconds, int(i.cold)) for i in batch],
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.flush_interval)
            except TimeoutError:
                pass
            await self.flush()

    async def records(self, *, since: float = 0.0, namespace: str | None = None) -> list[Invocation]:
        await self.flush()

        def _read() -> list[Invocation]:
            assert self._db is not None
            sql = "SELECT namespace, function, start, duration, status, gb_seconds, cold FROM invocations"
            sql += " WHERE start >= ?"
            args: list[Any] = [since]
            if namespace:
                sql += " AND namespace = ?"
                args.append(namespace)
            return [Invocation(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in self._db.execute(sql, args)]

        return await asyncio.to_thread(_read)

    async def counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(namespace, function) → (invocations, errors) over all time: the Function status' counters."""
        return {(u.namespace, u.function): (u.invocations, u.errors) for u in summarize(await self.records())}

    async def close(self) -> None:
        await self.flush()
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

"""Topics: a simple durable queue that functions subscribe to, with at-least-once delivery.

`POST /topics/<namespace>/<topic>` on the gateway (or `skiff fn publish`) stores the message once
for every function of that namespace with a `{"type": "topic", "topic": <topic>}` trigger, in
SQLite in the gateway's data dir, and answers 202. The gateway's trigger loop delivers due messages
through the normal call path; a delivery is deleted only when the function answered below 500
(and not 429); otherwise it is retried with exponential backoff (0.5 s doubling, at most 60 s) up
to `MAX_ATTEMPTS`, after which it stays in the table marked dead. A gateway restart resumes from
the table: deliveries that were in flight are sent again (at least once, not exactly once).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ATTEMPTS = 8
SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    topic TEXT NOT NULL,
    function TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(dead, next_at);
"""


@dataclass(frozen=True)
class Delivery:
    id: int
    namespace: str
    topic: str
    function: str
    body: bytes
    attempts: int


def backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones."""
    return float(min(60.0, 0.5 * 2 ** max(0, attempts - 1)))


class TopicStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self.in_flight: set[int] = set()  # deliveries being sent now (not handed out twice)

    async def open(self) -> None:
        def _open() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.executescript(SCHEMA)
            return db

        self._db = await asyncio.to_thread(_open)

    async def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        def _do() -> list[tuple[Any, ...]]:
            assert self._db is not None
            with self._db:
                return list(self._db.execute(sql, args))

        async with self._lock:
            return await asyncio.to_thread(_do)

    async def publish(self, namespace: str, topic: str, functions: list[str], body: bytes) -> int:
        now = time.time()
        for fn in functions:
            await self._run(
                "INSERT INTO deliveries (namespace, topic, function, body, next_at) VALUES (?, ?, ?, ?, ?)",
                (namespace, topic, fn, body, now),
            )
        return len(functions)

    async def due(self, limit: int = 100) -> list[Delivery]:
        rows = await self._run(
            "SELECT id, namespace, topic, function, body, attempts FROM deliveries"
            " WHERE dead = 0 AND next_at <= ? ORDER BY id LIMIT ?",
            (time.time(), limit),
        )
        found = [Delivery(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4]), int(r[5])) for r in rows]
        return [d for d in found if d.id not in self.in_flight]

    async def ack(self, delivery: Delivery) -> None:
        await self._run("DELETE FROM deliveries WHERE id = ?", (delivery.id,))

    async def retry(self, delivery: Delivery) -> None:
        attempts = delivery.attempts + 1
        await self._run(
            "UPDATE deliveries SET attempts = ?, next_at = ?, dead = ? WHERE id = ?",
            (attempts, time.time() + backoff(attempts), int(attempts >= MAX_ATTEMPTS), delivery.id),
        )

    async def pending(self, namespace: str, topic: str) -> int:
        rows = await self._run(
            "SELECT COUNT(*) FROM deliveries WHERE namespace = ? AND topic = ? AND dead = 0", (namespace, topic)
        )
        return int(rows[0][0])

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

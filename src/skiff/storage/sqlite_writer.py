"""The SQLite store's single writer thread: schema, group commit, compaction.

Every write goes through one thread that owns the only writing connection.
Writers enqueue an operation with an asyncio future; the thread takes
everything queued (up to a batch limit), applies it in ONE transaction --
each operation still gets its own revision, and a failed condition (key
exists, stale revision) fails only that operation -- commits with one fsync
(WAL + synchronous=FULL), then hands the results and the resulting events
back to the event loop in a single callback. While one batch is being
fsynced the next one queues up, which is what makes concurrent writers fast.

A batch costs a handful of SQLite statements whatever its size: one query
looks up the current rows of all its keys, the checks and revisions are
worked out in Python, then one multi-row INSERT appends the log rows, one
upsert and one DELETE bring `current` to the batch's final state, and one
COMMIT makes it durable. That matters because every statement step gives up
the GIL, and getting it back from a busy event loop thread can take up to a
switch interval: per-row statements made the writer wait for the loop
rather than for the disk.

Schema (the log's INTEGER PRIMARY KEY is the revision):

    log(id, key, deleted, create_revision, prev_revision, value)
        append-only; a DELETE row carries the deleted value; prev_revision is
        the row this one supersedes (0 for a create)
    current(key PRIMARY KEY, rev)   -- live keys -> their latest log row
    meta(name PRIMARY KEY, value)   -- 'compact_rev'
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from skiff.storage.interface import (
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
    StorageError,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_id ON log (key, id);
CREATE TABLE IF NOT EXISTS current (
    key TEXT PRIMARY KEY,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('compact_rev', 0);
"""

MAX_BATCH = 1000
COMPACT_CHUNK = 10_000
ROWS_PER_STATEMENT = 500  # keeps every statement far below SQLite's 32,766 bound variables
WRITER_STATEMENT_CACHE = 1024  # one prepared statement per batch size and kind stays cached

_CURRENT_ROWS = (
    "SELECT c.key, l.id, l.create_revision, l.value FROM current c JOIN log l ON l.id = c.rev WHERE c.key IN "
)
_INSERT_LOG = "INSERT INTO log (id, key, deleted, create_revision, prev_revision, value) VALUES "
_UPSERT_CURRENT = "INSERT INTO current (key, rev) VALUES {} ON CONFLICT (key) DO UPDATE SET rev = excluded.rev"
_COMPACT_CHUNK_SQL = """
DELETE FROM log WHERE id >= :lo AND id < :hi AND (
    deleted = 1 OR EXISTS (
        SELECT 1 FROM log AS n WHERE n.key = log.key AND n.id > log.id AND n.id <= :rev
    )
)
"""


def connect(path: str, *, cached_statements: int = 128) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fully synchronous."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=cached_statements)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def read_revisions(conn: sqlite3.Connection) -> tuple[int, int]:
    """(current revision, compacted revision) as seen by `conn`'s snapshot."""
    row = conn.execute(
        "SELECT (SELECT IFNULL(MAX(id), 0) FROM log), (SELECT value FROM meta WHERE name = 'compact_rev')"
    ).fetchone()
    compacted = int(row[1] or 0)
    return max(int(row[0]), compacted), compacted


@dataclass(slots=True)
class WriteOp:
    kind: Literal["create", "update", "delete"]
    key: str
    value: bytes
    expected: int
    future: asyncio.Future[KeyValue]


@dataclass(slots=True)
class CompactOp:
    revision: int
    future: asyncio.Future[None]


# a future and what to resolve it with (an exception instance is set as the exception)
_Result = tuple["asyncio.Future[Any]", object]
# called on the event loop with the batch's results and its events (revision order)
DeliverFn = Callable[[list[_Result], list[Event]], None]


class Writer:
    """Owns the writing connection and the revision counter; runs in its own thread."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop, deliver: DeliverFn) -> None:
        self._conn = connect(path, cached_statements=WRITER_STATEMENT_CACHE)
        self._conn.executescript(SCHEMA)
        # `revision` is the last COMMITTED revision (what readers can see); `_pending` counts inside a batch
        self.revision, self.compacted = read_revisions(self._conn)
        self._pending = self.revision
        self._loop = loop
        self._deliver = deliver
        self._queue: queue.SimpleQueue[WriteOp | CompactOp | list[WriteOp] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="skiff-sqlite-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: WriteOp | CompactOp) -> None:
        self._queue.put(op)

    def submit_many(self, ops: list[WriteOp]) -> None:
        """Queue several writes with one hand-over (one wake-up of the thread)."""
        self._queue.put(ops)

    def stop(self) -> None:
        """Finish everything queued so far, then exit the thread (blocking)."""
        self._queue.put(None)
        self._thread.join()

    # --- writer thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch: list[WriteOp | CompactOp] = []
                item = self._queue.get()
                while item is not None:
                    if isinstance(item, list):
                        batch.extend(item)
                    else:
                        batch.append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                stopping = item is None
                self._process(batch)
        finally:
            self._conn.close()

    def _process(self, batch: list[WriteOp | CompactOp]) -> None:
        writes: list[WriteOp] = []
        for op in batch:
            if isinstance(op, CompactOp):
                self._commit_writes(writes)
                writes = []
                self._compact(op)
            else:
                writes.append(op)
        self._commit_writes(writes)

    def _commit_writes(self, ops: list[WriteOp]) -> None:
        if not ops:
            return
        self._pending = self.revision
        results: list[_Result] = []
        events: list[Event] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                results, events = self._apply(ops)
                self._conn.execute("COMMIT")
                self.revision = self._pending
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # nothing of the batch was committed: fail all of it, keep serving
            error = StorageError(f"sqlite write failed: {exc}")
            results = [(op.future, error) for op in ops]
            events = []
        self._hand_back(results, events)

    def _hand_back(self, results: list[_Result], events: list[Event]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, results, events)
        except RuntimeError:  # the event loop is gone; nobody is waiting any more
            pass

    def _apply(self, ops: list[WriteOp]) -> tuple[list[_Result], list[Event]]:
        """Apply a batch in order inside the open transaction: each op its own revision, or its own error."""
        current = self._current_rows(list(dict.fromkeys(op.key for op in ops)))
        results: list[_Result] = []
        events: list[Event] = []
        log_rows: list[tuple[int, str, int, int, int, bytes]] = []
        written: dict[str, int | None] = {}  # key -> its final revision in `current` (None: deleted)
        for op in ops:
            outcome = self._apply_one(op, current, log_rows)
            if isinstance(outcome, Event):
                events.append(outcome)
                results.append((op.future, outcome.kv))
                written[op.key] = None if outcome.type == "DELETE" else outcome.kv.mod_revision
            else:
                results.append((op.future, outcome))
        if log_rows:
            self._insert_log(log_rows)
            self._write_current(written)
        return results, events

    def _current_rows(self, keys: list[str]) -> dict[str, KeyValue | None]:
        """The current row of each key (None if absent), in one query per ROWS_PER_STATEMENT keys."""
        found: dict[str, KeyValue | None] = dict.fromkeys(keys)
        for lo in range(0, len(keys), ROWS_PER_STATEMENT):
            chunk = keys[lo : lo + ROWS_PER_STATEMENT]
            sql = _CURRENT_ROWS + "(" + ",".join("?" * len(chunk)) + ")"
            for key, rev, create_rev, value in self._conn.execute(sql, chunk):
                found[key] = KeyValue(key, value, create_rev, rev)
        return found

    def _apply_one(
        self, op: WriteOp, current: dict[str, KeyValue | None], log_rows: list[tuple[int, str, int, int, int, bytes]]
    ) -> Event | StorageError:
        """Check one op against the batch's view of `current`; on success queue its log row and update the view."""
        cur = current[op.key]
        if op.kind == "create":
            if cur is not None:
                return KeyExistsError(op.key)
        elif cur is None:
            return KeyNotFoundError(op.key)
        elif (op.kind == "update" or op.expected) and cur.mod_revision != op.expected:
            return RevisionConflictError(op.key, cur)

        rev = self._pending + 1
        event: Event
        if cur is None:
            kv = KeyValue(op.key, op.value, rev, rev)
            log_rows.append((rev, op.key, 0, rev, 0, op.value))
            current[op.key] = kv
            event = Event("CREATE", kv)
        elif op.kind == "update":
            kv = KeyValue(op.key, op.value, cur.create_revision, rev)
            log_rows.append((rev, op.key, 0, cur.create_revision, cur.mod_revision, op.value))
            current[op.key] = kv
            event = Event("UPDATE", kv, cur)
        else:
            kv = KeyValue(op.key, cur.value, cur.create_revision, rev)
            log_rows.append((rev, op.key, 1, cur.create_revision, cur.mod_revision, cur.value))
            current[op.key] = None
            event = Event("DELETE", kv, cur)
        self._pending = rev
        return event

    def _insert_log(self, rows: list[tuple[int, str, int, int, int, bytes]]) -> None:
        for lo in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[lo : lo + ROWS_PER_STATEMENT]
            params = [v for row in chunk for v in row]
            self._conn.execute(_INSERT_LOG + ",".join(["(?,?,?,?,?,?)"] * len(chunk)), params)

    def _write_current(self, written: dict[str, int | None]) -> None:
        """Bring `current` to the batch's final state: one upsert for live keys, one DELETE for deleted ones."""
        live = [(key, rev) for key, rev in written.items() if rev is not None]
        gone = [key for key, rev in written.items() if rev is None]
        for lo in range(0, len(live), ROWS_PER_STATEMENT):
            chunk = live[lo : lo + ROWS_PER_STATEMENT]
            sql = _UPSERT_CURRENT.format(",".join(["(?,?)"] * len(chunk)))
            self._conn.execute(sql, [v for row in chunk for v in row])
        for lo in range(0, len(gone), ROWS_PER_STATEMENT):
            keys = gone[lo : lo + ROWS_PER_STATEMENT]
            self._conn.execute("DELETE FROM current WHERE key IN (" + ",".join("?" * len(keys)) + ")", keys)

    def _compact(self, op: CompactOp) -> None:
        """Record the new compacted revision first (readers check it), then delete in chunks."""
        result: object = None
        target = min(op.revision, self.revision)
        try:
            if target > self.compacted:
                old = self.compacted
                self._conn.execute("UPDATE meta SET value = ? WHERE name = 'compact_rev'", (target,))
                self.compacted = target
                for lo in range(old + 1, target + 1, COMPACT_CHUNK):
                    hi = min(lo + COMPACT_CHUNK, target + 1)
                    self._conn.execute(_COMPACT_CHUNK_SQL, {"lo": lo, "hi": hi, "rev": target})
        except Exception as exc:
            result = StorageError(f"sqlite compaction failed: {exc}")
        self._hand_back([(op.future, result)], [])

"""The default, embedded store: a kine-like revisioned log in one SQLite file.

skiff must run with no external database, so the etcd data model (a global
revision, per-key create/mod revisions, history for watches and paginated
lists) is kept in SQLite in WAL mode. Nothing here blocks the event loop:
writes go to the group-committing writer thread (`sqlite_writer`) -- handed
over once per event-loop iteration, so many concurrent writes wake the
thread once rather than once each -- reads run
on a small pool of reader threads, each with its own connection and a
consistent snapshot per call. Watches are served from memory (`watchhub`)
after replaying history from the log.

Usage: `b = SQLiteBackend(path); await b.start(); ...; await b.close()`
(or `async with SQLiteBackend(path) as b:`). The file's directory is
created if missing. `close()` finishes queued writes and ends all watches.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from skiff.storage.interface import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyValue,
    ListResult,
    Unavailable,
)
from skiff.storage.keys import prefix_end
from skiff.storage.sqlite_writer import CompactOp, WriteOp, Writer, connect, read_revisions
from skiff.storage.watchhub import WatchHub

T = TypeVar("T")

REPLAY_PAGE = 1000

_GET = "SELECT l.id, l.create_revision, l.value FROM current c JOIN log l ON l.id = c.rev WHERE c.key = ?"


def _key_range(column: str, lo: str, hi: str | None) -> str:
    return f"{column} >= :lo" + (f" AND {column} < :hi" if hi is not None else "")


class SQLiteBackend:
    """`Backend` over a SQLite file (see module docstring)."""

    # current_revision() is answered from memory, no round trip (the watch cache need not share calls)
    local_revision = True

    def __init__(self, path: str, *, read_threads: int = 4) -> None:
        self.path = path
        self._read_threads = read_threads
        self._writer: Writer | None = None
        self._hub: WatchHub | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._closed = False
        self._outbox: builtins.list[WriteOp] = []  # writes of this loop iteration, handed over together

    async def __aenter__(self) -> SQLiteBackend:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            return
        if self._closed:
            raise Unavailable("SQLite backend is closed")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        try:
            writer = await asyncio.to_thread(Writer, self.path, loop, self._deliver)
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._hub = WatchHub(last_revision=writer.revision)
        self._readers = ThreadPoolExecutor(
            self._read_threads, thread_name_prefix="skiff-sqlite-read", initializer=self._open_reader
        )
        writer.start()
        self._writer = writer

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        writer, hub, readers = self._writer, self._hub, self._readers
        if writer is None or hub is None or readers is None:
            return
        self._flush_outbox()
        await asyncio.to_thread(writer.stop)  # queued writes are committed and delivered first
        hub.close()
        await asyncio.to_thread(readers.shutdown, True)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()

    def _open_reader(self) -> None:
        conn = connect(self.path)
        conn.execute("PRAGMA query_only = 1")
        self._local.conn = conn
        with self._lock:
            self._reader_conns.append(conn)

    def _require_writer(self) -> Writer:
        if self._closed or self._writer is None:
            raise Unavailable("SQLite backend is closed" if self._closed else "SQLite backend not started")
        return self._writer

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._require_writer()
        assert self._readers is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection = self._local.conn
        conn.execute("BEGIN")  # one snapshot for everything fn reads
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    # --- reads ---------------------------------------------------------------

    async def current_revision(self) -> int:
        return self._require_writer().revision

    async def compacted_revision(self) -> int:
        return self._require_writer().compacted

    async def get(self, key: str) -> KeyValue | None:
        def read(conn: sqlite3.Connection) -> KeyValue | None:
            row = conn.execute(_GET, (key,)).fetchone()
            return KeyValue(key, row[2], row[1], row[0]) if row else None

        return await self._read(read)

    async def count(self, prefix: str) -> int:
        params = {"lo": prefix, "hi": prefix_end(prefix)}
        sql = f"SELECT COUNT(*) FROM current WHERE {_key_range('key', prefix, params['hi'])}"
        return await self._read(lambda conn: int(conn.execute(sql, params).fetchone()[0]))

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start_key: str | None = None) -> ListResult:
        return await self._read(lambda conn: self._list(conn, prefix, revision, limit, start_key))

    def _list(
        self, conn: sqlite3.Connection, prefix: str, revision: int, limit: int, start_key: str | None
    ) -> ListResult:
        current, compacted = read_revisions(conn)
        if revision > current:
            raise FutureRevisionError(revision, current)
        if 0 < revision <= compacted:
            raise CompactedError(revision, compacted)
        at = revision or current
        hi = prefix_end(prefix)
        lo = max(prefix, start_key) if start_key is not None else prefix
        params: dict[str, Any] = {"lo": lo, "hi": hi, "rev": at, "limit": limit + 1 if limit else -1}
        if at == current:
            key_col = "c.key"
            source = f"current c JOIN log l ON l.id = c.rev WHERE {_key_range('c.key', lo, hi)}"
            count_sql = f"SELECT COUNT(*) FROM current WHERE {_key_range('key', lo, hi)}"
        else:
            key_col = "l.key"
            source = self._as_of_source(lo, hi)
            count_sql = f"SELECT COUNT(*) FROM {self._as_of_source(lo, hi)}"
        select = f"SELECT {key_col}, l.id, l.create_revision, l.value FROM {source} ORDER BY 1 LIMIT :limit"
        rows = conn.execute(select, params).fetchall()
        more = bool(limit) and len(rows) > limit
        if more:
            rows = rows[:limit]
        items = [KeyValue(r[0], r[3], r[2], r[1]) for r in rows]
        if not more:
            total = len(items)
        else:
            total = int(conn.execute(count_sql, params).fetchone()[0])
        return ListResult(items=items, revision=at, more=more, count=total)

    @staticmethod
    def _as_of_source(lo: str, hi: str | None) -> str:
        """Rows live as of :rev: each key's newest log row at or below :rev, unless a tombstone.

        Walks the (key, id) index in key order, so LIMIT stops the scan early.
        """
        return (
            f"log l WHERE {_key_range('l.key', lo, hi)} AND l.id <= :rev"
            " AND l.id = (SELECT MAX(n.id) FROM log n WHERE n.key = l.key AND n.id <= :rev)"
            " AND l.deleted = 0"
        )

    # --- writes --------------------------------------------------------------

    async def _write(
        self, kind: Literal["create", "update", "delete"], key: str, value: bytes, expected: int
    ) -> KeyValue:
        self._require_writer()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KeyValue] = loop.create_future()
        if not self._outbox:
            loop.call_soon(self._flush_outbox)
        self._outbox.append(WriteOp(kind, key, value, expected, future))
        return await future

    def _flush_outbox(self) -> None:
        ops, self._outbox = self._outbox, []
        if ops and self._writer is not None:
            self._writer.submit_many(ops)

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._write("create", key, value, 0)

    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue:
        return await self._write("update", key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Returns the deleted value with mod_revision = the delete's revision (as the DELETE event)."""
        return await self._write("delete", key, b"", expected_revision)

    async def compact(self, revision: int) -> None:
        """Forget history before `revision`; afterwards reads at <= `revision` raise CompactedError.

        Compacting at or below the current compacted revision is a no-op.
        """
        writer = self._require_writer()
        if revision > writer.revision:
            raise FutureRevisionError(revision, writer.revision)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_outbox()  # writes asked for before this compaction go first
        writer.submit(CompactOp(revision, future))
        await future

    def _deliver(
        self, results: builtins.list[tuple[asyncio.Future[Any], object]], events: builtins.list[Event]
    ) -> None:
        """On the loop, after a commit: resolve the writers' futures, then feed the watchers."""
        for future, outcome in results:
            if future.done():  # the caller was cancelled; the write happened anyway
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if events and self._hub is not None:
            self._hub.publish(events)

    # --- watch ---------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        """Events under `prefix` with revision >= start_revision (<= 0: from now on).

        Close it with `aclose()` (or drop it after `break`) to release the watcher.
        """
        self._require_writer()
        assert self._hub is not None
        return self._hub.watch(prefix, start_revision, self._replay)

    async def _replay(self, prefix: str, from_revision: int) -> tuple[builtins.list[Event], bool]:
        hi = prefix_end(prefix)
        sql = (
            "SELECT l.id, l.key, l.deleted, l.create_revision, l.prev_revision, l.value,"
            " p.create_revision, p.value FROM log AS l NOT INDEXED"
            " LEFT JOIN log AS p ON p.id = l.prev_revision AND l.prev_revision > 0"
            f" WHERE l.id >= :from AND {_key_range('l.key', prefix, hi)} ORDER BY l.id LIMIT {REPLAY_PAGE}"
        )
        params = {"from": from_revision, "lo": prefix, "hi": hi}

        def read(conn: sqlite3.Connection) -> tuple[builtins.list[Event], bool]:
            _, compacted = read_revisions(conn)
            if from_revision <= compacted:
                raise CompactedError(from_revision, compacted)
            rows = conn.execute(sql, params).fetchall()
            return [_row_event(row) for row in rows], len(rows) < REPLAY_PAGE

        return await self._read(read)


def _row_event(row: tuple[Any, ...]) -> Event:
    rev, key, deleted, create_rev, prev_rev, value, prev_create, prev_value = row
    kv = KeyValue(key, value, create_rev, rev)
    prev = KeyValue(key, prev_value, prev_create, prev_rev) if prev_create is not None else None
    if deleted:
        return Event("DELETE", kv, prev)
    return Event("CREATE" if create_rev == rev else "UPDATE", kv, prev)

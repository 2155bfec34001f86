"""SQLite-only guarantees: restart, durability under SIGKILL, cheap fan-out, watcher cleanup."""

from __future__ import annotations

import asyncio
import gc
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from subprocess import PIPE

import pytest

from skiff.storage.interface import CompactedError, KeyExistsError, KeyValue, Unavailable
from skiff.storage.sqlite import SQLiteBackend

from .conftest import take

WRITER_SCRIPT = """
import asyncio, sys
from skiff.storage.sqlite import SQLiteBackend

async def main() -> None:
    store = SQLiteBackend(sys.argv[1])
    await store.start()

    async def writer(w: int) -> None:
        i = 0
        while True:
            key = f"/d/{w}/{i}"
            await store.create(key, b"x" * 100)
            sys.stdout.write(key + "\\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main())
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(str(tmp_path / "state.db"))
    await backend.start()
    yield backend
    await backend.close()


async def test_reopen_keeps_data_revision_and_compaction(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    async with SQLiteBackend(path) as first:
        a = await first.create("/a", b"1")
        await first.update("/a", b"2", a.mod_revision)
        await first.create("/b", b"3")
        last = await first.delete("/b")
        await first.compact(last.mod_revision)
        revision = await first.current_revision()
        assert revision == last.mod_revision
    async with SQLiteBackend(path) as second:
        assert await second.current_revision() == revision
        assert await second.compacted_revision() == revision
        kv = await second.get("/a")
        assert kv is not None and kv.value == b"2"
        assert await second.get("/b") is None
        nxt = await second.create("/c", b"4")
        assert nxt.mod_revision == revision + 1
        with pytest.raises(KeyExistsError):
            await second.create("/a", b"again")


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER_SCRIPT, path, stdout=PIPE, stderr=PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    acknowledged: list[str] = []
    async with asyncio.timeout(30):
        while len(acknowledged) < 400:
            line = await proc.stdout.readline()
            if not line:
                break
            acknowledged.append(line.decode().strip())
    proc.send_signal(signal.SIGKILL)
    rest, errors = await proc.communicate()
    acknowledged.extend(line for line in rest.decode().splitlines() if line.strip())
    assert len(acknowledged) >= 400, errors.decode()[-2000:]
    async with SQLiteBackend(path) as reopened:
        present = {kv.key for kv in (await reopened.list("/d/")).items}
        missing = [key for key in acknowledged if key not in present]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        assert await reopened.current_revision() >= len(acknowledged)


async def test_thousand_watchers_share_fan_out(store: SQLiteBackend) -> None:
    start = await store.current_revision() + 1
    streams = [store.watch("/fan/", start) for _ in range(1000)]
    writes = [await store.create(f"/fan/{i}", b"v") for i in range(20)]
    began = time.monotonic()
    for stream in streams:
        events = await take(stream, 20)
        assert [e.kv for e in events] == writes
    assert time.monotonic() - began < 10
    assert store._hub is not None and store._hub.watcher_count == 1000
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]
    assert store._hub.watcher_count == 0


async def test_break_releases_the_watcher(store: SQLiteBackend) -> None:
    await store.create("/g/a", b"1")
    async for _batch in store.watch("/g/", 1):
        break
    gc.collect()
    for _ in range(10):
        await asyncio.sleep(0)
    assert store._hub is not None and store._hub.watcher_count == 0


async def test_slow_watcher_catches_up_from_the_log(store: SQLiteBackend) -> None:
    assert store._hub is not None
    store._hub._max_pending = 5
    start = await store.current_revision() + 1
    async with aclosing(store.watch("/s/", start)) as stream:
        first = await store.create("/s/0", b"v")
        assert [e.kv for e in await take(stream, 1)] == [first]
        writes = [await store.create(f"/s/{i}", b"v") for i in range(1, 40)]
        events = await take(stream, 39)
        assert [e.kv for e in events] == writes


async def test_compaction_drops_history_but_not_current_state(store: SQLiteBackend) -> None:
    kv = await store.create("/k", b"0")
    for i in range(1, 50):
        kv = await store.update("/k", str(i).encode(), kv.mod_revision)
    await store.create("/gone", b"x")
    await store.delete("/gone")
    await store.compact(await store.current_revision())
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 1
    assert await store.get("/k") == kv
    with pytest.raises(CompactedError):
        await store.list("/", revision=kv.mod_revision)


async def test_close_ends_watches_and_refuses_further_use(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "state.db"))
    await store.start()
    stream = store.watch("/", 0)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(Unavailable):
        await store.create("/x", b"1")
    with pytest.raises(Unavailable):
        await store.get("/x")


async def test_one_batch_applies_its_ops_in_order(tmp_path: Path) -> None:
    """Several ops on one key in one group commit see each other, exactly as if they ran one by one."""
    path = str(tmp_path / "state.db")
    store = SQLiteBackend(path)
    await store.start()
    try:
        r = await store.current_revision()
        start = r + 1
        stream = store.watch("/m/", start)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next batch waits for this lock...
        first = asyncio.ensure_future(store.create("/m/first", b"0"))
        await asyncio.sleep(0.05)
        ops = [  # ...while these queue up behind it: they are applied as one batch
            store.create("/m/a", b"1"),
            store.update("/m/a", b"2", r + 2),
            store.create("/m/a", b"dup"),
            store.delete("/m/a"),
            store.update("/m/a", b"x", r + 3),
            store.create("/m/a", b"3"),
            store.create("/m/b", b"4"),
            store.delete("/m/b", r + 1),
        ]
        tasks = [asyncio.ensure_future(op) for op in ops]
        await asyncio.sleep(0.05)
        blocker.execute("ROLLBACK")
        blocker.close()
        await first
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        kinds = [type(o).__name__ for o in outcomes]
        assert kinds == [
            "KeyValue",
            "KeyValue",
            "KeyExistsError",
            "KeyValue",
            "KeyNotFoundError",
            "KeyValue",
            "KeyValue",
            "RevisionConflictError",
        ]
        revs = [o.mod_revision for o in outcomes if isinstance(o, KeyValue)]
        assert revs == list(range(r + 2, r + 7))
        events = await take(stream, 6)
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
            ("CREATE", "/m/first", r + 1),
            ("CREATE", "/m/a", r + 2),
            ("UPDATE", "/m/a", r + 3),
            ("DELETE", "/m/a", r + 4),
            ("CREATE", "/m/a", r + 5),
            ("CREATE", "/m/b", r + 6),
        ]
        assert events[2].prev is not None and events[2].prev.value == b"1"
        assert events[3].kv.value == b"2"
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()
    async with SQLiteBackend(path) as reopened:
        assert await reopened.get("/m/a") == KeyValue("/m/a", b"3", r + 5, r + 5)
        assert await reopened.get("/m/b") == KeyValue("/m/b", b"4", r + 6, r + 6)
        listed = await reopened.list("/m/")
        assert [kv.key for kv in listed.items] == ["/m/a", "/m/b", "/m/first"]
        old = await reopened.list("/m/", revision=r + 3)
        assert [(kv.key, kv.value) for kv in old.items] == [("/m/a", b"2"), ("/m/first", b"0")]

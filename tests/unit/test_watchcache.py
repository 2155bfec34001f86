"""The watch cache's current state and consistent reads, over a real SQLite backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from skiff.api import errors
from skiff.apiserver import watchcache
from skiff.apiserver.builtin import builtin_types
from skiff.apiserver.options import ListOptions, WriteOptions
from skiff.apiserver.registry import Registry
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchfanout import bucket_of
from skiff.apiserver.watchwindow import EventWindow
from skiff.storage.interface import CompactedError, FutureRevisionError, KeyValue
from skiff.storage.sqlite import SQLiteBackend


@pytest.fixture
async def cache(backend: SQLiteBackend) -> AsyncIterator[WatchCache]:
    c = WatchCache(backend)
    await c.start()
    yield c
    await c.close()


def test_bucket_of() -> None:
    assert bucket_of("/registry/core/configmaps/ns/a") == "/registry/core/configmaps/"
    assert bucket_of("/registry/core/configmaps/ns/") == "/registry/core/configmaps/"
    assert bucket_of("/registry/core/configmaps/") == "/registry/core/configmaps/"
    assert bucket_of("/registry/apps/deployments/x") == "/registry/apps/deployments/"
    assert bucket_of("/registry/core") is None
    assert bucket_of("/registry/") is None
    assert bucket_of("/other/a/b/c") is None


async def test_seeded_from_storage_then_follows_it(backend: SQLiteBackend) -> None:
    before = await backend.create("/registry/core/configmaps/ns/before", b"1")
    cache = WatchCache(backend)
    await cache.start()
    try:
        assert cache.get_current(before.key) == before
        a = await backend.create("/registry/core/configmaps/ns/a", b"a")
        b = await backend.create("/registry/core/configmaps/other/b", b"b")
        a2 = await backend.update(a.key, b"a2", a.mod_revision)
        await backend.delete(before.key)
        outside = await backend.create("/elsewhere/x", b"x")  # not kept, but its revision counts
        assert await cache.wait_fresh()
        assert cache.revision == outside.mod_revision == await backend.current_revision()
        assert cache.get_current(a.key) == a2
        assert cache.get_current(before.key) is None
        assert cache.get_current("/elsewhere/x") is None
        assert cache.list_current("/registry/core/configmaps/") == [a2, b]
        assert cache.list_current("/registry/core/configmaps/ns/") == [a2]
        assert cache.list_current("/registry/core/secrets/") == []
        assert cache.list_current("/elsewhere/") is None
    finally:
        await cache.close()


async def test_keys_stay_in_storage_order(backend: SQLiteBackend, cache: WatchCache) -> None:
    names = ["b", "a", "c", "a-1", "ä", "A", "b0"]
    for name in names:
        await backend.create(f"/registry/g/r/{name}", b"v")
    await backend.delete("/registry/g/r/c")
    assert await cache.wait_fresh()
    cached = [kv.key for kv in cache.list_current("/registry/g/r/") or []]
    stored = [kv.key for kv in (await backend.list("/registry/g/r/")).items]
    assert cached == stored and len(cached) == len(names) - 1


async def test_every_read_sees_writes_acknowledged_before_it(backend: SQLiteBackend, cache: WatchCache) -> None:
    """No sleeps: the read right after an acknowledged write waits for the cache to catch up."""
    for i in range(50):
        kv = await backend.create(f"/registry/g/r/k{i}", str(i).encode())
        assert await cache.wait_fresh()
        assert cache.get_current(kv.key) == kv


async def test_not_started_or_stuck_cache_says_read_storage(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = WatchCache(backend)
    assert not await cache.wait_fresh()  # not started
    await cache.start()
    try:
        assert cache._task is not None
        cache._task.cancel()  # the storage watch stops: the cache can never catch up
        await asyncio.sleep(0)
        await backend.create("/registry/g/r/x", b"1")
        monkeypatch.setattr(watchcache, "FRESH_TIMEOUT", 0.05)
        assert not await cache.wait_fresh()
    finally:
        await cache.close()


class CountingBackend:
    """A backend whose current_revision is a slow round trip (as etcd's), counting the calls."""

    local_revision = False

    def __init__(self, inner: SQLiteBackend) -> None:
        self.inner = inner
        self.calls = 0

    async def current_revision(self) -> int:
        self.calls += 1
        revision = await self.inner.current_revision()
        await asyncio.sleep(0.02)
        return revision

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_concurrent_readers_share_revision_round_trips(backend: SQLiteBackend) -> None:
    counting = CountingBackend(backend)
    cache = WatchCache(counting)  # type: ignore[arg-type]
    await cache.start()
    try:
        counting.calls = 0
        assert all(await asyncio.gather(*(cache.wait_fresh() for _ in range(50))))
        assert counting.calls == 1
        # a reader arriving while a fetch is in flight waits for the next one: it sees its own write
        first = asyncio.ensure_future(cache.wait_fresh())
        await asyncio.sleep(0.005)
        kv = await backend.create("/registry/g/r/late", b"1")
        assert await cache.wait_fresh()
        assert cache.get_current(kv.key) == kv
        assert await first
        assert counting.calls == 3
    finally:
        await cache.close()


async def test_resync_reloads_the_state(backend: SQLiteBackend, cache: WatchCache) -> None:
    """What the cache does when its watch fell behind compaction: reload, and end every watcher."""
    sub = await cache.subscribe("/registry/g/r/", cache.revision)
    assert cache._task is not None
    cache._task.cancel()
    await asyncio.sleep(0)
    kv = await backend.create("/registry/g/r/missed", b"1")
    await cache._resync()
    assert cache.revision == kv.mod_revision
    assert cache.get_current(kv.key) == kv
    assert await sub.queue.get() is None and sub.error is not None


async def test_store_reads_its_own_writes_through_the_cache(backend: SQLiteBackend, cache: WatchCache) -> None:
    registry = Registry()
    for rt in builtin_types():
        registry.add(rt)
    ns_rt = registry.get("", "v1", "namespaces")
    cm_rt = registry.get("", "v1", "configmaps")
    assert ns_rt is not None and cm_rt is not None
    store = Store(backend, registry, cache)
    await store.create(ns_rt, None, {"metadata": {"name": "ns"}}, WriteOptions())
    for i in range(20):
        created = await store.create(
            cm_rt, "ns", {"metadata": {"name": f"c{i}"}, "data": {"i": str(i)}}, WriteOptions()
        )
        got = await store.get(cm_rt, "ns", f"c{i}")
        assert got == created
    listed = await store.list(cm_rt, "ns", ListOptions())
    assert [o["metadata"]["name"] for o in listed["items"]] == sorted(f"c{i}" for i in range(20))
    assert listed["metadata"]["resourceVersion"] == str(await backend.current_revision())
    paged = await store.list(cm_rt, "ns", ListOptions(limit=5))  # a page from the cache too
    assert len(paged["items"]) == 5 and paged["metadata"]["continue"]
    with pytest.raises(errors.NotFound):
        await store.create(cm_rt, "nope", {"metadata": {"name": "x"}}, WriteOptions())


async def test_cached_kv_is_the_stored_kv(backend: SQLiteBackend, cache: WatchCache) -> None:
    kv = await backend.create("/registry/g/r/same", b"payload")
    assert await cache.wait_fresh()
    assert (
        cache.get_current(kv.key)
        == await backend.get(kv.key)
        == KeyValue(kv.key, b"payload", kv.mod_revision, kv.mod_revision)
    )


# ---------------------------------------------------------------- the event window (pure)
def _filled(size: int, count: int) -> EventWindow:
    window = EventWindow(size, floor=10)
    for rev in range(11, 11 + count):
        kind = "CREATE" if rev % 3 else "UPDATE"
        window.append(
            rev, kind, f"/registry/g/r/{'a' if rev % 2 else 'b'}{rev}", b"v%d" % rev, b"p" if kind == "UPDATE" else None
        )
    return window


def test_window_replays_from_a_revision_by_prefix() -> None:
    window = _filled(100, 10)  # revisions 11..20
    assert window.floor == 10 and len(window) == 10
    assert [ev.revision for ev in window.since(10, "/registry/g/r/")] == list(range(11, 21))
    assert [ev.revision for ev in window.since(15, "/registry/g/r/")] == list(range(16, 21))
    assert [ev.revision for ev in window.since(15, "/registry/g/r/a")] == [17, 19]
    assert window.since(20, "/registry/") == [] and window.since(11, "/registry/other/") == []
    ev = window.since(17, "/registry/g/r/b")[0]
    assert (ev.revision, ev.type, ev.key, ev.value, ev.prev_value) == (18, "UPDATE", "/registry/g/r/b18", b"v18", b"p")
    assert ev.memo == {} and ev is not window.since(17, "/registry/g/r/b")[0]  # made per read, not kept


def test_window_drops_its_oldest_and_raises_the_floor() -> None:
    window = _filled(16, 18)  # 16 + 16/8 = 18: not trimmed yet
    assert (window.floor, len(window)) == (10, 18)
    window.append(29, "CREATE", "/registry/g/r/z", b"z", None)  # the 19th: the oldest 3 go at once
    assert (window.floor, len(window)) == (13, 16)
    assert window.revisions[0] == 14 and window.revisions[-1] == 29
    assert [ev.revision for ev in window.since(13, "")][:2] == [14, 15]
    window.reset(40)
    assert (window.floor, len(window), window.since(0, "")) == (40, 0, [])


async def test_replay_compaction_and_future_revisions_through_the_cache(backend: SQLiteBackend) -> None:
    cache = WatchCache(backend, window=8)
    await cache.start()
    try:
        kvs = [await backend.create(f"/registry/g/r/k{i}", b"%d" % i) for i in range(12)]
        other = await backend.create("/registry/g/s/x", b"x")
        assert await cache.wait_fresh()
        assert cache.floor == kvs[3].mod_revision  # 13 events, window 8 (+1): the oldest 4 dropped
        sub = await cache.subscribe("/registry/g/r/", kvs[5].mod_revision)
        got = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
        assert [(ev.key, ev.type, ev.value) for ev in got] == [(kv.key, "CREATE", kv.value) for kv in kvs[6:]]
        # then the fan-out: an update of a watched key arrives with its previous value, others' keys do not
        await backend.update(kvs[0].key, b"new", kvs[0].mod_revision)
        await backend.update(other.key, b"y", other.mod_revision)
        ev = await asyncio.wait_for(sub.queue.get(), 5)
        assert ev is not None and (ev.type, ev.key, ev.value, ev.prev_value) == ("UPDATE", kvs[0].key, b"new", b"0")
        assert await cache.wait_fresh() and sub.queue.empty()
        sub.close()
        # below the window: storage's own history, 410 once it is compacted
        old = await cache.subscribe("/registry/g/r/", kvs[0].mod_revision)
        first = await asyncio.wait_for(old.queue.get(), 5)
        assert first is not None and first.key == kvs[1].key
        old.close()
        await backend.compact(kvs[5].mod_revision)
        cache.mark_compacted(kvs[5].mod_revision)
        with pytest.raises(CompactedError):
            await cache.subscribe("/registry/g/r/", kvs[2].mod_revision)
        with pytest.raises(FutureRevisionError):
            await cache.subscribe("/registry/g/r/", cache.revision + 100)
    finally:
        await cache.close()

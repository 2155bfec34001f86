"""The storage contract (skiff.storage.interface), run against every backend.

Each test gets a fresh store from the `backend` fixture, parametrized as
"sqlite" and "etcd" (a real, throw-away etcd process).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from skiff.storage.interface import (
    Backend,
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    RevisionConflictError,
)

from .conftest import take


async def test_create_get_exists(backend: Backend) -> None:
    before = await backend.current_revision()
    assert before >= 0
    assert await backend.get("/a/x") is None
    kv = await backend.create("/a/x", b"one")
    assert kv.key == "/a/x" and kv.value == b"one"
    assert kv.create_revision == kv.mod_revision > before
    assert await backend.get("/a/x") == kv
    assert await backend.current_revision() == kv.mod_revision
    with pytest.raises(KeyExistsError):
        await backend.create("/a/x", b"two")
    assert await backend.get("/a/x") == kv


async def test_update_with_right_and_stale_revision(backend: Backend) -> None:
    kv = await backend.create("/a/x", b"one")
    updated = await backend.update("/a/x", b"two", kv.mod_revision)
    assert updated.value == b"two"
    assert updated.create_revision == kv.create_revision
    assert updated.mod_revision > kv.mod_revision
    with pytest.raises(RevisionConflictError) as conflict:
        await backend.update("/a/x", b"three", kv.mod_revision)
    assert conflict.value.current == updated
    assert await backend.get("/a/x") == updated
    with pytest.raises(KeyNotFoundError):
        await backend.update("/a/missing", b"x", kv.mod_revision)


async def test_delete_conditional_and_unconditional(backend: Backend) -> None:
    a = await backend.create("/a/1", b"one")
    b = await backend.create("/a/2", b"two")
    await backend.update("/a/1", b"uno", a.mod_revision)
    with pytest.raises(RevisionConflictError):
        await backend.delete("/a/1", a.mod_revision)
    current = await backend.get("/a/1")
    assert current is not None
    deleted = await backend.delete("/a/1", current.mod_revision)
    assert deleted.value == b"uno" and deleted.create_revision == a.create_revision
    assert deleted.mod_revision == await backend.current_revision()
    assert await backend.get("/a/1") is None
    gone = await backend.delete("/a/2")
    assert gone.value == b"two" and gone.mod_revision > b.mod_revision
    with pytest.raises(KeyNotFoundError):
        await backend.delete("/a/2")
    with pytest.raises(KeyNotFoundError):
        await backend.delete("/a/2", gone.mod_revision)
    # a deleted key can be created again
    again = await backend.create("/a/1", b"new")
    assert again.create_revision == again.mod_revision > gone.mod_revision


async def test_list_prefix_in_key_order(backend: Backend) -> None:
    for key in ["/r/pods/b", "/r/pods/a", "/r/podsx", "/r/pod", "/r/pods/c/d", "/q/pods/a"]:
        await backend.create(key, key.encode())
    result = await backend.list("/r/pods/")
    assert [kv.key for kv in result.items] == ["/r/pods/a", "/r/pods/b", "/r/pods/c/d"]
    assert [kv.value for kv in result.items] == [b"/r/pods/a", b"/r/pods/b", b"/r/pods/c/d"]
    assert result.revision == await backend.current_revision()
    assert not result.more
    assert result.count == 3
    assert [kv.key for kv in (await backend.list("/r/")).items] == [
        "/r/pod",
        "/r/pods/a",
        "/r/pods/b",
        "/r/pods/c/d",
        "/r/podsx",
    ]
    assert (await backend.list("/nothing/")).items == []


async def test_list_pagination_with_limit_and_start_key(backend: Backend) -> None:
    keys = [f"/p/{i:02d}" for i in range(7)]
    for key in reversed(keys):
        await backend.create(key, b"v")
    await backend.create("/q/after", b"v")
    seen: list[str] = []
    first = await backend.list("/p/", limit=3)
    assert first.more and first.count == 7
    page = first
    while True:
        seen.extend(kv.key for kv in page.items)
        if not page.more:
            break
        # continue token: the key after the last one, at the first page's revision
        page = await backend.list("/p/", revision=first.revision, limit=3, start_key=page.items[-1].key + "\0")
        assert page.revision == first.revision
        assert page.count == 7 - len(seen)  # counted from the start key, as etcd counts a range
    assert seen == keys
    exact = await backend.list("/p/", limit=7)
    assert len(exact.items) == 7 and not exact.more


async def test_list_at_old_revision_after_later_writes(backend: Backend) -> None:
    a = await backend.create("/h/a", b"a1")
    b = await backend.create("/h/b", b"b1")
    snapshot = b.mod_revision
    await backend.update("/h/a", b"a2", a.mod_revision)
    await backend.delete("/h/b")
    await backend.create("/h/c", b"c1")
    old = await backend.list("/h/", revision=snapshot)
    assert old.revision == snapshot
    assert [(kv.key, kv.value, kv.mod_revision) for kv in old.items] == [
        ("/h/a", b"a1", a.mod_revision),
        ("/h/b", b"b1", b.mod_revision),
    ]
    assert old.count == 2
    paged = await backend.list("/h/", revision=snapshot, limit=1)
    assert [kv.key for kv in paged.items] == ["/h/a"] and paged.more and paged.count == 2
    now = await backend.list("/h/")
    assert [(kv.key, kv.value) for kv in now.items] == [("/h/a", b"a2"), ("/h/c", b"c1")]
    with pytest.raises(FutureRevisionError):
        await backend.list("/h/", revision=now.revision + 100)


async def test_count(backend: Backend) -> None:
    assert await backend.count("/c/") == 0
    for i in range(5):
        await backend.create(f"/c/{i}", b"v")
    await backend.create("/cx", b"v")
    await backend.delete("/c/0")
    assert await backend.count("/c/") == 4
    assert await backend.count("/c") == 5


async def test_revisions_strictly_increase_across_keys(backend: Backend) -> None:
    revisions = []
    for i in range(10):
        revisions.append((await backend.create(f"/k/{i % 3}/{i}", b"v")).mod_revision)
    kv = await backend.get("/k/0/0")
    assert kv is not None
    revisions.append((await backend.update("/k/0/0", b"w", kv.mod_revision)).mod_revision)
    revisions.append((await backend.delete("/k/1/1")).mod_revision)
    assert revisions == sorted(set(revisions))
    concurrent = await asyncio.gather(*(backend.create(f"/k/c/{i}", b"v") for i in range(20)))
    assert len({kv.mod_revision for kv in concurrent}) == 20
    assert min(kv.mod_revision for kv in concurrent) > revisions[-1]


async def test_concurrent_creates_of_one_key_exactly_one_wins(backend: Backend) -> None:
    results = await asyncio.gather(
        *(backend.create("/race", f"{i}".encode()) for i in range(25)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, KeyExistsError) for r in losers)
    assert await backend.get("/race") == winners[0]


async def test_watch_replays_history_then_live_events(backend: Backend) -> None:
    a = await backend.create("/w/a", b"1")
    a2 = await backend.update("/w/a", b"2", a.mod_revision)
    await backend.create("/w/b", b"3")
    async with aclosing(backend.watch("/w/", a.mod_revision)) as stream:
        history = await take(stream, 3)
        assert [(e.type, e.kv.key, e.kv.value) for e in history] == [
            ("CREATE", "/w/a", b"1"),
            ("UPDATE", "/w/a", b"2"),
            ("CREATE", "/w/b", b"3"),
        ]
        assert history[0].prev is None
        assert history[1].prev == a
        deleted = await backend.delete("/w/a")
        c = await backend.create("/w/c", b"4")
        live = await take(stream, 2)
        assert [(e.type, e.kv.key) for e in live] == [("DELETE", "/w/a"), ("CREATE", "/w/c")]
        assert live[0].kv == deleted
        assert live[0].kv.value == b"2" and live[0].kv.mod_revision == deleted.mod_revision
        assert live[0].prev == a2
        assert live[1].kv == c
        revisions = [e.kv.mod_revision for e in history + live]
        assert revisions == sorted(set(revisions))


async def test_watch_from_a_later_revision_skips_earlier_events(backend: Backend) -> None:
    await backend.create("/w/a", b"1")
    b = await backend.create("/w/b", b"2")
    async with aclosing(backend.watch("/w/", b.mod_revision)) as stream:
        events = await take(stream, 1)
        assert [e.kv.key for e in events] == ["/w/b"]


async def test_watch_from_now(backend: Backend) -> None:
    await backend.create("/n/old", b"1")
    async with aclosing(backend.watch("/n/", 0)) as stream:
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)  # the watch is established before the write
        kv = await backend.create("/n/new", b"2")
        events = await asyncio.wait_for(pending, 5)
        assert [e.kv for e in events] == [kv]


async def test_watch_filters_by_prefix(backend: Backend) -> None:
    start = await backend.current_revision() + 1
    async with aclosing(backend.watch("/f/pods/", start)) as stream:
        await backend.create("/f/pods/a", b"1")
        await backend.create("/f/podsx", b"no")
        await backend.create("/f/services/a", b"no")
        await backend.create("/f/pods/b", b"2")
        events = await take(stream, 2)
        assert [e.kv.key for e in events] == ["/f/pods/a", "/f/pods/b"]
        await backend.create("/f/other", b"no")
        last = await backend.create("/f/pods/c", b"3")
        assert [e.kv for e in await take(stream, 1)] == [last]


async def test_watch_from_compacted_revision_raises(backend: Backend) -> None:
    first = await backend.create("/z/a", b"1")
    await backend.update("/z/a", b"2", first.mod_revision)
    third = await backend.create("/z/b", b"3")
    await backend.compact(third.mod_revision)
    assert await backend.compacted_revision() == third.mod_revision
    for start in (first.mod_revision, third.mod_revision):
        with pytest.raises(CompactedError) as info:
            async with aclosing(backend.watch("/z/", start)) as stream:
                await anext(stream)
        assert info.value.compacted == third.mod_revision
    # after the compacted revision, watching still works
    async with aclosing(backend.watch("/z/", third.mod_revision + 1)) as stream:
        kv = await backend.create("/z/c", b"4")
        assert [e.kv for e in await take(stream, 1)] == [kv]


async def test_list_at_compacted_revision_raises(backend: Backend) -> None:
    a = await backend.create("/l/a", b"1")
    a2 = await backend.update("/l/a", b"2", a.mod_revision)
    b = await backend.create("/l/b", b"3")
    await backend.delete("/l/b")
    c = await backend.create("/l/c", b"4")
    await backend.compact(c.mod_revision - 1)
    for revision in (a.mod_revision, c.mod_revision - 1):
        with pytest.raises(CompactedError):
            await backend.list("/l/", revision=revision)
    assert [(kv.key, kv.value) for kv in (await backend.list("/l/")).items] == [
        ("/l/a", b"2"),
        ("/l/c", b"4"),
    ]
    at_c = await backend.list("/l/", revision=c.mod_revision)
    assert [kv.key for kv in at_c.items] == ["/l/a", "/l/c"]
    assert await backend.get("/l/a") == a2
    assert b.mod_revision < c.mod_revision
    # compacting again at or below is harmless
    await backend.compact(a.mod_revision)
    assert await backend.compacted_revision() == c.mod_revision - 1
    # history after the compacted revision keeps its prev values
    d = await backend.update("/l/a", b"5", a2.mod_revision)
    async with aclosing(backend.watch("/l/", c.mod_revision)) as stream:
        events = await take(stream, 2)
    assert [e.kv for e in events] == [c, d]
    assert events[1].prev == a2


async def test_current_revision_is_always_readable_during_writes(backend: Backend) -> None:
    await backend.create("/cr/first", b"v")  # an empty SQLite store is at revision 0, which means "now"
    done = False

    async def writer(w: int) -> None:
        for i in range(30):
            await backend.create(f"/cr/{w}/{i}", b"v")

    async def reader() -> int:
        reads = 0
        while not done:
            revision = await backend.current_revision()
            listed = await backend.list("/cr/", revision=revision, limit=1)
            assert listed.revision == revision
            reads += 1
        return reads

    readers = [asyncio.ensure_future(reader()) for _ in range(4)]
    await asyncio.gather(*(writer(w) for w in range(8)))
    done = True
    assert all(reads > 0 for reads in await asyncio.gather(*readers))

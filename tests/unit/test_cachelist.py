"""Paginated lists from the watch cache: the pure paging over a past revision, and the same pages as storage's."""

from __future__ import annotations

import random
from typing import Any

import pytest

from skiff.api import errors
from skiff.apiserver import objects
from skiff.apiserver.builtin import builtin_types
from skiff.apiserver.cachelist import list_page, state_before
from skiff.apiserver.options import DeleteOptions, ListOptions, WriteOptions
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchwindow import EventWindow
from skiff.storage.interface import KeyValue
from skiff.storage.sqlite import SQLiteBackend


# ------------------------------------------------------------------ pure paging
class _State:
    """A current state and its event window, written the way the watch cache writes them."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.created: dict[str, int] = {}
        self.modified: dict[str, int] = {}
        self.window = EventWindow(100)
        self.revision = 0
        self.history: dict[int, dict[str, KeyValue]] = {0: {}}  # what storage would answer at each revision

    @property
    def keys(self) -> list[str]:
        return sorted(self.values)

    def write(self, key: str, value: bytes | None) -> None:
        self.revision += 1
        rev = self.revision
        old = self.values.get(key)
        if value is None:
            assert old is not None
            self.window.append(rev, "DELETE", key, old, old, self.created[key], self.modified[key])
            del self.values[key], self.created[key], self.modified[key]
        elif old is None:
            self.window.append(rev, "CREATE", key, value, None, rev, 0)
            self.values[key], self.created[key], self.modified[key] = value, rev, rev
        else:
            self.window.append(rev, "UPDATE", key, value, old, self.created[key], self.modified[key])
            self.values[key], self.modified[key] = value, rev
        self.history[rev] = {k: KeyValue(k, self.values[k], self.created[k], self.modified[k]) for k in self.values}

    def page(self, revision: int, lo: str, hi: str | None, limit: int, select: Any = None) -> Any:
        before = state_before(self.window, revision, lo, hi)
        assert before is not None
        return list_page(
            self.keys, self.values, self.created, self.modified, before, lo, hi, limit, select or (lambda kv: kv)
        )


def test_a_page_at_a_past_revision_undoes_the_later_events() -> None:
    s = _State()
    for name in "bdfh":
        s.write(f"/r/{name}", b"1")
    listed = s.revision
    s.write("/r/a", b"new")  # created after: not in the list
    s.write("/r/d", b"2")  # updated after: its value then
    s.write("/r/f", None)  # deleted after: still listed
    s.write("/r/f", b"again")  # and created again: its value then, once
    s.write("/r/b", None)
    page = s.page(listed, "/r/", "/r0", 3)
    assert page.items == [s.history[listed][k] for k in ("/r/b", "/r/d", "/r/f")]
    assert (page.last_key, page.more, page.remaining) == ("/r/f", True, 1)
    rest = s.page(listed, page.last_key + "\x00", "/r0", 3)
    assert rest.items == [s.history[listed]["/r/h"]] and not rest.more and rest.remaining == 0
    # the current state is the same function with nothing to undo
    now = s.page(s.revision, "/r/", "/r0", 0)
    assert [kv.key for kv in now.items] == ["/r/a", "/r/d", "/r/f", "/r/h"]


def test_the_limit_counts_selected_items_and_remaining_counts_keys() -> None:
    s = _State()
    for i in range(10):
        s.write(f"/r/{i}", b"even" if i % 2 == 0 else b"odd")
    page = s.page(s.revision, "/r/", "/r0", 3, lambda kv: kv if kv.value == b"even" else None)
    assert [kv.key for kv in page.items] == ["/r/0", "/r/2", "/r/4"]
    assert (page.last_key, page.more, page.remaining) == ("/r/4", True, 5)  # /r/5../r/9, selected or not
    last = s.page(s.revision, "/r/4\x00", "/r0", 3, lambda kv: kv if kv.value == b"even" else None)
    assert [kv.key for kv in last.items] == ["/r/6", "/r/8"] and not last.more
    # a full page with only unselected keys after it still says more, as Kubernetes' does
    s.write("/r/99", b"odd")
    full = s.page(s.revision, "/r/6", "/r0", 2, lambda kv: kv if kv.value == b"even" else None)
    assert [kv.key for kv in full.items] == ["/r/6", "/r/8"] and full.more and full.remaining == 2


def test_the_window_cannot_answer_before_its_floor_or_without_previous_values() -> None:
    window = EventWindow(100, floor=5)
    window.append(6, "UPDATE", "/r/a", b"2", b"1", 3, 4)
    assert state_before(window, 4, "/r/", None) is None
    assert state_before(window, 5, "/r/", None) == {"/r/a": (b"1", 3, 4)}
    assert state_before(window, 5, "/r/b", None) == {}  # outside the range
    window.append(7, "UPDATE", "/r/b", b"2", None, 3, -1)  # storage did not say what it replaced
    assert state_before(window, 6, "/r/", None) is None
    assert state_before(window, 7, "/r/", None) == {}


def test_random_histories_match_a_replay() -> None:
    rng = random.Random(7)
    s = _State()
    names = [f"/r/{i:02d}" for i in range(30)]
    for _ in range(300):
        key = rng.choice(names)
        s.write(key, None if key in s.values and rng.random() < 0.3 else str(rng.random()).encode())
    for _ in range(100):
        revision = rng.randrange(s.window.floor, s.revision + 1)
        want = [s.history[revision][k] for k in sorted(s.history[revision])]
        limit = rng.choice([0, 1, 3, 7])
        got: list[KeyValue] = []
        lo = "/r/"
        while True:
            page = s.page(revision, lo, "/r0", limit)
            got += page.items
            assert page.remaining == len(want) - len(got)
            if not page.more:
                break
            lo = page.last_key + "\x00"
        assert got == want


# ----------------------------------------------------- the cache's pages are storage's pages
def _registry() -> tuple[Registry, ResourceType, ResourceType]:
    registry = Registry()
    for rt in builtin_types():
        registry.add(rt)
    ns_rt, cm_rt = registry.get("", "v1", "namespaces"), registry.get("", "v1", "configmaps")
    assert ns_rt is not None and cm_rt is not None
    return registry, ns_rt, cm_rt


def _page(listed: dict[str, Any]) -> tuple[Any, ...]:
    meta = listed["metadata"]
    items = [(o["metadata"]["name"], o["metadata"]["resourceVersion"], o.get("data")) for o in listed["items"]]
    return items, meta["resourceVersion"], meta.get("continue"), meta.get("remainingItemCount")


async def _both(cached: Store, stored: Store, rt: ResourceType, ns: str | None, opts: ListOptions) -> Any:
    """The same list from the cache and from storage: equal, or the same error."""
    answers = []
    for store in (cached, stored):
        try:
            answers.append(_page(await store.list(rt, ns, opts)))
        except errors.StatusError as exc:
            answers.append((type(exc), exc.status()))
    assert answers[0] == answers[1], opts
    return answers[0]


@pytest.mark.parametrize("window", [20_000, 6])
async def test_cache_pages_equal_storage_pages_while_writes_go_on(backend: SQLiteBackend, window: int) -> None:
    """A small window sends the older pages to storage: they must still be the same pages."""
    registry, ns_rt, cm_rt = _registry()
    cache = WatchCache(backend, window=window)
    await cache.start()
    try:
        cached, stored = Store(backend, registry, cache), Store(backend, registry, None)
        for ns in ("a", "b"):
            await cached.create(ns_rt, None, {"metadata": {"name": ns}}, WriteOptions())
        rng = random.Random(11)
        names = [f"cm-{i:02d}" for i in range(40)]
        live: set[tuple[str, str]] = set()

        async def write() -> None:
            ns, name = rng.choice("ab"), rng.choice(names)
            if (ns, name) in live and rng.random() < 0.3:
                await cached.delete(cm_rt, ns, name, DeleteOptions())
                live.discard((ns, name))
            elif (ns, name) in live:
                await cached.patch(
                    cm_rt, ns, name, "application/merge-patch+json", {"data": {"v": str(rng.random())}}, WriteOptions()
                )
            else:
                labels = {"half": "yes"} if rng.random() < 0.5 else {}
                body = {"metadata": {"name": name, "labels": labels}, "data": {"v": "0"}}
                await cached.create(cm_rt, ns, body, WriteOptions())
                live.add((ns, name))

        for _ in range(60):
            await write()
        for _ in range(25):
            ns = rng.choice(["a", "b", None])
            selector = rng.choice(["", "half=yes", "half!=yes"])
            limit = rng.choice([1, 4, 9])
            opts = ListOptions(label_selector=selector, limit=limit)
            items, rv, token, _ = await _both(cached, stored, cm_rt, ns, opts)
            seen = [i[0] for i in items]
            while token:
                for _ in range(rng.randrange(4)):
                    await write()  # writes between pages: the later pages stay at the list's revision
                page = await _both(
                    cached, stored, cm_rt, ns, ListOptions(label_selector=selector, limit=limit, continue_token=token)
                )
                assert page[1] == rv
                seen += [i[0] for i in page[0]]
                token = page[2]
            whole = await stored.list(
                cm_rt, ns, ListOptions(label_selector=selector, resource_version=rv, resource_version_match="Exact")
            )
            assert seen == [o["metadata"]["name"] for o in whole["items"]]
        # Exact lists and the legacy exact match of a paginated list from a resourceVersion
        rv = str(cache.revision - 5)
        await _both(cached, stored, cm_rt, None, ListOptions(resource_version=rv, resource_version_match="Exact"))
        await _both(cached, stored, cm_rt, "a", ListOptions(resource_version=rv, limit=3))
    finally:
        await cache.close()


async def test_a_compacted_continue_is_410_with_a_token_for_the_rest(backend: SQLiteBackend) -> None:
    registry, ns_rt, cm_rt = _registry()
    cache = WatchCache(backend)
    await cache.start()
    try:
        cached, stored = Store(backend, registry, cache), Store(backend, registry, None)
        await cached.create(ns_rt, None, {"metadata": {"name": "ns"}}, WriteOptions())
        for i in range(5):
            await cached.create(cm_rt, "ns", {"metadata": {"name": f"c{i}"}}, WriteOptions())
        first = await cached.list(cm_rt, "ns", ListOptions(limit=2))
        assert first["metadata"]["remainingItemCount"] == 3
        await cached.create(cm_rt, "ns", {"metadata": {"name": "c9-late"}}, WriteOptions())
        revision = await backend.current_revision()
        await backend.compact(revision)
        cache.mark_compacted(revision)  # as the server's compactor does
        opts = ListOptions(limit=2, continue_token=first["metadata"]["continue"])
        cls, status = await _both(cached, stored, cm_rt, "ns", opts)
        assert cls is errors.Gone and status["code"] == 410 and status["reason"] == "Expired"
        assert status["message"].startswith(
            "The provided continue parameter is too old to display a consistent list result. You can start a new "
            "list without the continue parameter, or use the continue token in this response to retrieve"
        )
        # that token lists the rest at the latest revision, late writes included
        rest = await cached.list(cm_rt, "ns", ListOptions(limit=10, continue_token=status["metadata"]["continue"]))
        assert [o["metadata"]["name"] for o in rest["items"]] == ["c2", "c3", "c4", "c9-late"]
        assert rest["metadata"]["resourceVersion"] == str(revision)
        assert objects.decode_continue(status["metadata"]["continue"], "/registry/")[0] == -1
        with pytest.raises(errors.BadRequest, match="not allowed when using continue"):
            await cached.list(
                cm_rt, "ns", ListOptions(limit=2, continue_token=first["metadata"]["continue"], resource_version="3")
            )
    finally:
        await cache.close()


async def test_list_options_are_checked_as_kubernetes_does(backend: SQLiteBackend) -> None:
    registry, _, cm_rt = _registry()
    store = Store(backend, registry, None)
    cases = [
        (ListOptions(resource_version_match="Exact"), "resourceVersionMatch is forbidden unless resourceVersion"),
        (ListOptions(resource_version="5", resource_version_match="Newest"), 'Unsupported value: "Newest"'),
        (ListOptions(resource_version="0", resource_version_match="Exact"), 'forbidden for resourceVersion "0"'),
        (ListOptions(resource_version="5", resource_version_match="Exact", continue_token="x"), "when continue"),
    ]
    for opts, message in cases:
        with pytest.raises(errors.Invalid) as info:
            await store.list(cm_rt, "ns", opts)
        status = info.value.status()
        assert status["code"] == 422 and status["message"].startswith('ListOptions.meta.k8s.io "" is invalid: ')
        assert message in status["message"] and status["details"]["causes"][0]["field"] == "resourceVersionMatch"


async def test_a_list_not_older_than_a_future_revision_is_a_timeout(backend: SQLiteBackend) -> None:
    registry, _, cm_rt = _registry()
    cache = WatchCache(backend)
    await cache.start()
    try:
        for store in (Store(backend, registry, cache), Store(backend, registry, None)):
            future = str(await backend.current_revision() + 10)
            for opts in (ListOptions(resource_version=future), ListOptions(resource_version=future, limit=0)):
                with pytest.raises(errors.Timeout, match=f"Too large resource version: {future}, current: "):
                    await store.list(cm_rt, "ns", opts)
            now = str(await backend.current_revision())
            listed = await store.list(
                cm_rt, "ns", ListOptions(resource_version=now, resource_version_match="NotOlderThan")
            )
            assert listed["metadata"]["resourceVersion"] == now
    finally:
        await cache.close()

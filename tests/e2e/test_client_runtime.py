"""The client runtime (skiff.client) against a real `skiff server`.

REST verbs and error mapping, watch, event recording, informers (sync,
handlers, indexes, resync, recovery after 410 and after a server restart),
a small controller end to end, and leader election on one Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from skiff.api import errors
from skiff.client import (
    Client,
    ClientConfig,
    Controller,
    Informer,
    InformerFactory,
    LeaderElector,
    ServerUnreachable,
    object_key,
)
from skiff.client import resources as R
from skiff.client.cache import index_by_owner_uid
from skiff.client.ratelimit import Backoff
from tests.e2e.cluster import Server
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
Obj = dict[str, Any]


async def eventually(check: Callable[[], object], within: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(server.kubeconfig) as c:
        yield c


@pytest.fixture(params=["aiohttp", "lean"])
async def rest_client(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Client]:
    """A client over aiohttp's session, or over the lean HTTP/1.1 path (`skiff.client.http11`)."""
    async with Client.from_kubeconfig(server.kubeconfig, lean_requests=request.param == "lean") as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> AsyncIterator[str]:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    await client.create(R.NAMESPACES, {"metadata": {"name": name}})
    await root_ca_published(client, name)
    yield name
    with contextlib.suppress(errors.StatusError):
        await client.delete(R.NAMESPACES, name)


async def root_ca_published(client: Client, ns: str) -> None:
    """The controller manager's root CA publisher adds kube-root-ca.crt to every namespace: let it
    land first, so that tests watching ConfigMaps see only their own."""
    for _ in range(200):
        try:
            await client.get(R.CONFIGMAPS, "kube-root-ca.crt", namespace=ns)
            return
        except errors.NotFound:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no kube-root-ca.crt in namespace {ns}")


def cm(name: str, ns: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"metadata": meta, "data": data or {}}


# --- REST ------------------------------------------------------------------------------------------
async def test_crud_and_error_mapping(rest_client: Client, ns: str) -> None:
    client = rest_client
    created = await client.create(R.CONFIGMAPS, cm("a", ns, {"k": "1"}, {"app": "x"}))
    assert created["kind"] == "ConfigMap" and created["metadata"]["uid"]
    got = await client.get(R.CONFIGMAPS, "a", namespace=ns)
    assert got["data"] == {"k": "1"}

    with pytest.raises(errors.NotFound, match='configmaps "nope" not found') as nf:
        await client.get(R.CONFIGMAPS, "nope", namespace=ns)
    assert nf.value.code == 404 and nf.value.name == "nope"
    with pytest.raises(errors.AlreadyExists):
        await client.create(R.CONFIGMAPS, cm("a", ns))
    with pytest.raises(errors.Invalid) as inv:
        await client.create(R.CONFIGMAPS, cm("Not_Valid", ns))
    assert inv.value.code == 422 and inv.value.causes

    fresh = copy.deepcopy(got)
    fresh["data"]["k"] = "2"
    updated = await client.update(R.CONFIGMAPS, fresh)
    assert updated["data"]["k"] == "2"
    stale = copy.deepcopy(got)
    stale["data"]["k"] = "3"
    with pytest.raises(errors.Conflict, match="has been modified"):
        await client.update(R.CONFIGMAPS, stale)

    merged = await client.patch(R.CONFIGMAPS, "a", {"data": {"m": "merge"}}, namespace=ns)
    strategic = await client.patch(
        R.CONFIGMAPS, "a", {"metadata": {"labels": {"s": "y"}}}, namespace=ns, patch_type="strategic"
    )
    jsonp = await client.patch(
        R.CONFIGMAPS, "a", [{"op": "add", "path": "/data/j", "value": "json"}], namespace=ns, patch_type="json"
    )
    assert merged["data"]["m"] == "merge" and strategic["metadata"]["labels"]["s"] == "y"
    assert jsonp["data"] == {"k": "2", "m": "merge", "j": "json"}
    applied = await client.patch(
        R.CONFIGMAPS,
        "b",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": ns}, "data": {"a": "1"}},
        namespace=ns,
        patch_type="apply",
        field_manager="rt-test",
    )
    assert applied["data"] == {"a": "1"}
    with pytest.raises(ValueError, match="field_manager"):
        await client.patch(R.CONFIGMAPS, "b", {}, namespace=ns, patch_type="apply")

    with pytest.raises(errors.Conflict):
        await client.delete(R.CONFIGMAPS, "a", namespace=ns, preconditions={"uid": str(uuid.uuid4())})
    status = await client.delete(R.CONFIGMAPS, "a", namespace=ns, propagation_policy="Background")
    assert status.get("status") == "Success" or status.get("metadata", {}).get("name") == "a"
    with pytest.raises(errors.NotFound):
        await client.delete(R.CONFIGMAPS, "a", namespace=ns, grace_period_seconds=0)
    with pytest.raises(ValueError, match="namespaced"):
        await client.get(R.CONFIGMAPS, "a")


async def test_list_selectors_and_paging(rest_client: Client, ns: str) -> None:
    client = rest_client
    for i in range(7):
        await client.create(R.CONFIGMAPS, cm(f"c{i}", ns, labels={"parity": "even" if i % 2 == 0 else "odd"}))
    page = await client.list(R.CONFIGMAPS, namespace=ns, label_selector="parity=even", limit=2)
    assert len(page["items"]) == 2 and page["metadata"].get("continue")
    assert all(item["kind"] == "ConfigMap" and item["apiVersion"] == "v1" for item in page["items"])
    names = [o["metadata"]["name"] async for o in client.iter_list(R.CONFIGMAPS, namespace=ns, page_size=2)]
    assert sorted(n for n in names if n.startswith("c")) == [f"c{i}" for i in range(7)]
    odd = [
        o["metadata"]["name"] async for o in client.iter_list(R.CONFIGMAPS, namespace=ns, label_selector="parity=odd")
    ]
    assert sorted(odd) == ["c1", "c3", "c5"]
    by_field = await client.list(R.CONFIGMAPS, namespace=ns, field_selector="metadata.name=c4")
    assert [o["metadata"]["name"] for o in by_field["items"]] == ["c4"]


async def test_update_status_subresource(rest_client: Client, ns: str) -> None:
    client = rest_client
    pod = {"metadata": {"name": "p", "namespace": ns}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    created = await client.create(R.PODS, pod)
    created["status"] = {"phase": "Running", "message": "from the client"}
    created["spec"]["containers"][0]["image"] = "ignored-by-status"
    after = await client.update_status(R.PODS, created)
    assert after["status"]["phase"] == "Running"
    assert after["spec"]["containers"][0]["image"] == "busybox"


@pytest.mark.parametrize("lean", [False, True], ids=["aiohttp", "lean"])
async def test_unreachable_and_unauthenticated(server: Server, lean: bool) -> None:
    closed = ClientConfig(server=f"https://127.0.0.1:{free_port()}", ssl_context=server.ssl_context())
    async with Client(closed, request_timeout=5, lean_requests=lean) as c:
        with pytest.raises(ServerUnreachable, match="cannot reach the API server"):
            await c.get(R.NAMESPACES, "default")
    anonymous = ClientConfig(server=server.url, ssl_context=server.ssl_context(client_cert=False))
    async with Client(anonymous, lean_requests=lean) as c:
        with pytest.raises(errors.Unauthorized):
            await c.get(R.NAMESPACES, "default")
    bad_token = ClientConfig(server=server.url, ssl_context=server.ssl_context(client_cert=False), token="wrong")
    async with Client(bad_token, lean_requests=lean) as c:
        with pytest.raises(errors.Unauthorized):
            await c.get(R.NAMESPACES, "default")


async def test_watch_sees_added_modified_deleted_and_ends_with_the_stream(client: Client, ns: str) -> None:
    rv = (await client.list(R.CONFIGMAPS, namespace=ns))["metadata"]["resourceVersion"]
    seen: list[tuple[str, str, str]] = []

    async def watch() -> None:
        async for ev in client.watch(R.CONFIGMAPS, namespace=ns, resource_version=rv, timeout_seconds=2):
            if ev.type != "BOOKMARK":
                seen.append((ev.type, ev.object["metadata"]["name"], ev.object["data"].get("v", "")))

    task = asyncio.create_task(watch())
    await client.create(R.CONFIGMAPS, cm("w", ns, {"v": "1"}))
    await client.patch(R.CONFIGMAPS, "w", {"data": {"v": "2"}}, namespace=ns)
    await client.delete(R.CONFIGMAPS, "w", namespace=ns)
    await asyncio.wait_for(task, 10)  # ends by itself when the server closes the stream
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


async def test_watch_reassembles_objects_larger_than_a_chunk(client: Client, ns: str) -> None:
    rv = (await client.list(R.CONFIGMAPS, namespace=ns))["metadata"]["resourceVersion"]
    big = {f"k{i}": "x" * 1000 for i in range(400)}  # ~400 KB on one line
    stream = client.watch(R.CONFIGMAPS, namespace=ns, resource_version=rv, timeout_seconds=5)
    async with contextlib.aclosing(stream) as events:
        await client.create(R.CONFIGMAPS, cm("big", ns, big))
        await client.create(R.CONFIGMAPS, cm("small", ns, {"a": "b"}))
        got = [await anext(events), await anext(events)]
    assert [(e.type, e.object["metadata"]["name"]) for e in got] == [("ADDED", "big"), ("ADDED", "small")]
    assert got[0].object["data"] == big


async def test_create_event_aggregates_repeats(client: Client, ns: str) -> None:
    target = await client.create(R.CONFIGMAPS, cm("evt", ns))
    first = await client.create_event(target, reason="Synced", message="all good", component="rt-test")
    again = await client.create_event(target, reason="Synced", message="all good", component="rt-test")
    other = await client.create_event(target, reason="Failed", message="bad", type="Warning", component="rt-test")
    assert first and again and other
    assert again["metadata"]["name"] == first["metadata"]["name"] and again["count"] == 2
    assert other["metadata"]["name"] != first["metadata"]["name"] and other["count"] == 1
    events = await client.list(R.EVENTS, namespace=ns, field_selector="involvedObject.name=evt")
    by_reason = {e["reason"]: e for e in events["items"]}
    assert by_reason["Synced"]["count"] == 2 and by_reason["Synced"]["source"]["component"] == "rt-test"
    assert by_reason["Synced"]["involvedObject"]["uid"] == target["metadata"]["uid"]
    assert by_reason["Failed"]["type"] == "Warning"


# --- informers ---------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def on_add(self, obj: Obj) -> None:
        self.log.append(("add", object_key(obj)))

    async def on_update(self, old: Obj, new: Obj) -> None:  # async handlers are awaited
        kind = "resync" if old is new else "update"
        self.log.append((kind, object_key(new)))

    def on_delete(self, obj: Obj) -> None:
        self.log.append(("delete", object_key(obj)))

    def has(self, kind: str, key: str) -> bool:
        return (kind, key) in self.log


async def test_informer_syncs_tracks_changes_and_indexes(client: Client, ns: str) -> None:
    await client.create(R.CONFIGMAPS, cm("pre", ns, labels={"team": "a"}))
    informer = Informer(client, R.CONFIGMAPS, namespace=ns, resync=0.5)
    informer.add_index("team", lambda o: [(o["metadata"].get("labels") or {}).get("team", "")])
    rec = Recorder()
    informer.add_handlers(on_add=rec.on_add, on_update=rec.on_update, on_delete=rec.on_delete)
    informer.start()
    try:
        async with asyncio.timeout(10):
            await informer.wait_synced()
        assert informer.get(f"{ns}/pre") is not None and rec.has("add", f"{ns}/pre")

        await client.create(R.CONFIGMAPS, cm("new", ns, {"v": "1"}, labels={"team": "b"}))
        await eventually(lambda: rec.has("add", f"{ns}/new"), what="add")
        await client.patch(R.CONFIGMAPS, "new", {"metadata": {"labels": {"team": "a"}}}, namespace=ns)
        await eventually(lambda: rec.has("update", f"{ns}/new"), what="update")
        assert sorted(o["metadata"]["name"] for o in informer.by_index("team", "a")) == ["new", "pre"]
        assert informer.by_index("team", "b") == []
        await client.delete(R.CONFIGMAPS, "pre", namespace=ns)
        await eventually(lambda: rec.has("delete", f"{ns}/pre"), what="delete")
        assert informer.get(f"{ns}/pre") is None
        assert [o["metadata"]["name"] for o in informer.by_index("team", "a")] == ["new"]
        await eventually(lambda: rec.has("resync", f"{ns}/new"), what="resync", within=60)

        late = Recorder()  # registered after sync: gets the cache replayed as adds
        informer.add_handlers(on_add=late.on_add)
        await eventually(lambda: late.has("add", f"{ns}/new"), what="replay")
    finally:
        await informer.stop()


async def test_informer_factory_shares_informers(client: Client, ns: str) -> None:
    factory = InformerFactory(client)
    a = factory.informer(R.CONFIGMAPS, namespace=ns)
    assert factory.informer(R.CONFIGMAPS, namespace=ns) is a
    b = factory.informer(R.CONFIGMAPS, namespace=ns, label_selector="x=y")
    assert b is not a
    factory.start()
    try:
        async with asyncio.timeout(10):
            await factory.wait_synced()
        assert a.has_synced and b.has_synced
    finally:
        await factory.stop()


async def _truth(client: Client, ns: str) -> dict[str, str]:
    listed = await client.list(R.CONFIGMAPS, namespace=ns)
    return {object_key(o): o["metadata"]["resourceVersion"] for o in listed["items"]}


def _cached(informer: Informer) -> dict[str, str]:
    return {object_key(o): o["metadata"]["resourceVersion"] for o in informer.list()}


async def test_informer_relists_after_410_and_emits_the_difference(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", extra_args=["--compact-interval", "1"]).start()
    try:
        async with Client.from_kubeconfig(srv.kubeconfig) as client:
            ns = "default"
            await root_ca_published(client, ns)
            for name in ("keep", "change", "remove"):
                await client.create(R.CONFIGMAPS, cm(name, ns, {"v": "1"}))
            informer = Informer(client, R.CONFIGMAPS, namespace=ns, backoff=Backoff(0.05, 0.5))
            rec = Recorder()
            informer.add_handlers(on_add=rec.on_add, on_update=rec.on_update, on_delete=rec.on_delete)
            informer.start()
            async with asyncio.timeout(10):
                await informer.wait_synced()
            await informer.stop()  # away: changes happen and history is compacted meanwhile
            stale_rv = informer.resource_version
            rec.log.clear()
            await client.patch(R.CONFIGMAPS, "change", {"data": {"v": "2"}}, namespace=ns)
            await client.delete(R.CONFIGMAPS, "remove", namespace=ns)
            await client.create(R.CONFIGMAPS, cm("added", ns))
            await asyncio.sleep(3.2)  # two compaction rounds
            with pytest.raises(errors.Gone):
                async for _ev in client.watch(R.CONFIGMAPS, namespace=ns, resource_version=stale_rv):
                    pass

            informer.start()  # resumes from stale_rv → 410 → relist
            await eventually(lambda: informer.relists == 2, what="a relist")
            truth = await _truth(client, ns)
            await eventually(lambda: _cached(informer) == truth, what="cache == server")
            assert sorted(rec.log) == [
                ("add", "default/added"),
                ("delete", "default/remove"),
                ("update", "default/change"),
            ]

            await client.create(R.CONFIGMAPS, cm("after", ns))  # and it watches again
            await eventually(lambda: rec.has("add", "default/after"), what="watching after relist")
            await informer.stop()
    finally:
        srv.stop()


async def test_informer_survives_a_server_restart(fresh_server: Server) -> None:
    async with Client.from_kubeconfig(fresh_server.kubeconfig) as client:
        informer = Informer(client, R.CONFIGMAPS, namespace="default", backoff=Backoff(0.05, 0.5))
        rec = Recorder()
        informer.add_handlers(on_add=rec.on_add, on_update=rec.on_update, on_delete=rec.on_delete)
        informer.start()
        try:
            async with asyncio.timeout(10):
                await informer.wait_synced()
            await client.create(R.CONFIGMAPS, cm("before", "default"))
            await eventually(lambda: rec.has("add", "default/before"))
            await asyncio.to_thread(fresh_server.stop)
            await asyncio.to_thread(fresh_server.start)
            await client.create(R.CONFIGMAPS, cm("after", "default"))
            await client.delete(R.CONFIGMAPS, "before", namespace="default")
            await eventually(lambda: rec.has("add", "default/after"), what="add after restart", within=60)
            await eventually(lambda: rec.has("delete", "default/before"), what="delete after restart")
            assert _cached(informer) == await _truth(client, "default")
        finally:
            await informer.stop()


# --- a controller ----------------------------------------------------------------------------------
class MirrorController(Controller):
    """For each ConfigMap labelled mirror=yes, keep a `<name>-mirror` ConfigMap with the same data."""

    name = "mirror"

    def __init__(self, client: Client, factory: InformerFactory, ns: str) -> None:
        super().__init__(workers=2)
        self.client = client
        self.cms = self.watch(factory.informer(R.CONFIGMAPS, namespace=ns, label_selector="mirror=yes"))
        self.mirrors = self.watch_owned(
            factory.informer(R.CONFIGMAPS, namespace=ns, label_selector="mirror-of"), "ConfigMap"
        )
        self.mirrors.add_index("owner", index_by_owner_uid)
        self.fail_once: set[str] = set()
        self.reconciled: list[str] = []

    async def reconcile(self, key: str) -> None:
        self.reconciled.append(key)
        if key in self.fail_once:
            self.fail_once.discard(key)
            raise RuntimeError("transient failure")
        src = self.cms.get(key)
        if src is None:
            return  # deleted: the garbage collector's job (ownerReferences)
        ns, name = src["metadata"]["namespace"], src["metadata"]["name"]
        mirror = self.mirrors.get(f"{ns}/{name}-mirror")
        if mirror is None:
            ref = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": name,
                "uid": src["metadata"]["uid"],
                "controller": True,
            }
            body = cm(f"{name}-mirror", ns, dict(src.get("data") or {}), {"mirror-of": name})
            body["metadata"]["ownerReferences"] = [ref]
            await self.client.create(R.CONFIGMAPS, body)
        elif mirror.get("data") != src.get("data"):
            changed = copy.deepcopy(mirror)
            changed["data"] = dict(src.get("data") or {})
            await self.client.update(R.CONFIGMAPS, changed)


async def test_controller_reconciles_retries_and_follows_owned_objects(client: Client, ns: str) -> None:
    factory = InformerFactory(client)
    ctl = MirrorController(client, factory, ns)
    ctl.fail_once.add(f"{ns}/src")
    stop = asyncio.Event()
    factory.start()
    run = asyncio.create_task(ctl.run(stop))
    try:
        await client.create(R.CONFIGMAPS, cm("src", ns, {"a": "1"}, {"mirror": "yes"}))
        await eventually(lambda: ctl.mirrors.get(f"{ns}/src-mirror") is not None, what="mirror created")
        assert ctl.reconciled.count(f"{ns}/src") >= 2, "the failed reconcile was retried"
        src_uid = ctl.cms.get(f"{ns}/src")["metadata"]["uid"]  # type: ignore[index]
        assert [o["metadata"]["name"] for o in ctl.mirrors.by_index("owner", src_uid)] == ["src-mirror"]
        assert ctl.queue.num_requeues(f"{ns}/src") == 0, "success forgets the failures"

        await client.patch(R.CONFIGMAPS, "src", {"data": {"a": "2"}}, namespace=ns)
        await eventually(lambda: (ctl.mirrors.get(f"{ns}/src-mirror") or {}).get("data") == {"a": "2"}, what="update")

        old_uid = ctl.mirrors.get(f"{ns}/src-mirror")["metadata"]["uid"]  # type: ignore[index]
        await client.delete(R.CONFIGMAPS, "src-mirror", namespace=ns)  # owned object gone → owner enqueued

        def recreated() -> bool:
            mirror = ctl.mirrors.get(f"{ns}/src-mirror")
            return mirror is not None and mirror["metadata"]["uid"] != old_uid

        await eventually(recreated, what="mirror re-created")
    finally:
        stop.set()
        await asyncio.wait_for(run, 15)
        await factory.stop()
    assert ctl.queue.shutting_down


# --- leader election -------------------------------------------------------------------------------
async def test_exactly_one_leader_and_failover_on_stop(client: Client, ns: str) -> None:
    leading: dict[str, bool] = {}
    stops = {name: asyncio.Event() for name in ("alpha", "beta")}

    def candidate(name: str) -> asyncio.Task[None]:
        elector = LeaderElector(client, ns, "rt-lock", name, lease_duration=2, renew_deadline=1.5, retry_period=0.2)

        async def lead(stopped: asyncio.Event) -> None:
            leading[name] = True
            await stopped.wait()

        def stopped_leading() -> None:
            leading[name] = False

        return asyncio.create_task(elector.run(lead, stopped_leading, stop=stops[name]), name=f"elector-{name}")

    tasks = {name: candidate(name) for name in stops}
    try:
        await eventually(lambda: any(leading.values()), what="a leader")
        await asyncio.sleep(1.0)  # several renew periods: still exactly one
        leaders = [n for n, v in leading.items() if v]
        assert len(leaders) == 1, leading
        first = leaders[0]
        second = next(n for n in stops if n != first)
        lease = await client.get(R.LEASES, "rt-lock", namespace=ns)
        assert lease["spec"]["holderIdentity"] == first
        transitions = int(lease["spec"].get("leaseTransitions") or 0)

        stops[first].set()
        await asyncio.wait_for(tasks[first], 10)
        assert leading[first] is False
        released = await client.get(R.LEASES, "rt-lock", namespace=ns)
        assert released["spec"].get("holderIdentity") in ("", None, second), "handed back on stop"
        await eventually(lambda: leading.get(second, False), what="failover")
        lease = await client.get(R.LEASES, "rt-lock", namespace=ns)
        assert lease["spec"]["holderIdentity"] == second
        assert int(lease["spec"]["leaseTransitions"]) > transitions
        assert lease["spec"]["renewTime"] and lease["spec"]["acquireTime"]
    finally:
        for event in stops.values():
            event.set()
        await asyncio.wait(tasks.values(), timeout=10)


async def test_a_lease_whose_holder_stopped_renewing_is_taken_over(client: Client, ns: str) -> None:
    spec = {
        "holderIdentity": "ghost",
        "leaseDurationSeconds": 1,
        "acquireTime": "2020-01-01T00:00:00.000000Z",
        "renewTime": "2020-01-01T00:00:00.000000Z",
    }
    await client.create(R.LEASES, {"metadata": {"name": "ghost-lock", "namespace": ns}, "spec": spec})
    elector = LeaderElector(client, ns, "ghost-lock", "heir", lease_duration=3, renew_deadline=2, retry_period=0.2)
    became = asyncio.Event()
    stop = asyncio.Event()

    async def lead(stopped: asyncio.Event) -> None:
        became.set()
        await stopped.wait()

    started = time.monotonic()
    task = asyncio.create_task(elector.run(lead, stop=stop))
    try:
        await asyncio.wait_for(became.wait(), 10)
        waited = time.monotonic() - started
        assert waited >= 0.9, "not before the ghost's lease duration has passed by our own clock"
        assert elector.is_leader and elector.holder == "heir"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    lease = await client.get(R.LEASES, "ghost-lock", namespace=ns)
    assert not lease["spec"].get("holderIdentity"), "released on stop"

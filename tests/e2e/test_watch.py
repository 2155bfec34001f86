"""Watches over raw HTTPS: WatchList initial events, timeouts, selectors, and 410 after compaction."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.cluster import Server


class Stream:
    """One watch response read line by line (each line one JSON event)."""

    def __init__(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse) -> None:
        self.conn, self.resp = conn, resp

    @property
    def status(self) -> int:
        return self.resp.status

    def next(self) -> dict[str, Any] | None:
        """The next event, or None when the server ended the stream."""
        line = self.resp.readline()
        if not line:
            return None
        return dict(json.loads(line))

    def take(self, n: int) -> list[dict[str, Any]]:
        events = []
        for _ in range(n):
            ev = self.next()
            assert ev is not None, f"stream ended after {events}"
            events.append(ev)
        return events


@contextmanager
def watch(server: Server, path: str, timeout: float = 10.0) -> Iterator[Stream]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        yield Stream(conn, conn.getresponse())
    finally:
        conn.close()


def _ns(server: Server) -> str:
    return server.create_namespace(f"watch-{uuid.uuid4().hex[:8]}")


def _cm(server: Server, ns: str, name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    code, body, _ = server.raw(
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": name, "labels": labels or {}}, "data": data},
    )
    assert code == 201, body
    return dict(body)


def _patch(server: Server, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    code, body, _ = server.raw("PATCH", path, patch, content_type="application/merge-patch+json")
    assert code == 200, body
    return dict(body)


def test_send_initial_events_then_bookmark(server: Server) -> None:
    ns = _ns(server)
    for name in ("a", "b", "c"):
        _cm(server, ns, name, v=name)
    query = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    with watch(server, f"/api/v1/namespaces/{ns}/configmaps?{query}") as stream:
        assert stream.status == 200
        assert stream.resp.getheader("Content-Type", "").startswith("application/json")
        # the namespace's kube-root-ca.crt comes among the initial events too (as in Kubernetes)
        initial = [e for e in stream.take(5) if e["object"]["metadata"].get("name") != "kube-root-ca.crt"]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial[:3]] == [
            ("ADDED", "a"),
            ("ADDED", "b"),
            ("ADDED", "c"),
        ]
        assert [e["object"]["data"] for e in initial[:3]] == [{"v": "a"}, {"v": "b"}, {"v": "c"}]
        bookmark = initial[3]
        assert bookmark["type"] == "BOOKMARK"
        meta = bookmark["object"]["metadata"]
        assert meta["annotations"]["k8s.io/initial-events-end"] == "true"
        assert bookmark["object"]["kind"] == "ConfigMap" and bookmark["object"]["apiVersion"] == "v1"
        bookmark_rv = int(meta["resourceVersion"])
        assert bookmark_rv >= max(int(e["object"]["metadata"]["resourceVersion"]) for e in initial[:3])

        # then live events, after the bookmark's resourceVersion
        created = _cm(server, ns, "d", v="d")
        ev = stream.next()
        assert ev is not None and ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "d"
        assert ev["object"]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        assert int(created["metadata"]["resourceVersion"]) > bookmark_rv


def test_send_initial_events_needs_not_older_than(server: Server) -> None:
    code, body, _ = server.raw("GET", "/api/v1/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true")
    assert code == 422 and body["reason"] == "Invalid"
    assert "resourceVersionMatch" in body["message"]


def test_timeout_seconds_ends_the_stream(server: Server) -> None:
    ns = _ns(server)
    rv = server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps")[1]["metadata"]["resourceVersion"]
    start = time.monotonic()
    with watch(server, f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=2") as s:
        assert s.status == 200
        assert s.next() is None  # nothing happened; the server closes the stream (a socket timeout would raise)
    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed, elapsed  # not before its time (how much later depends on the machine's load)


def test_label_selector_watch_sees_objects_leave_and_enter(server: Server) -> None:
    ns = _ns(server)
    _cm(server, ns, "in", {"team": "a"}, v="1")
    _cm(server, ns, "out", {"team": "b"}, v="1")
    listed = server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps?labelSelector=team%3Da")[1]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["in"]
    rv = listed["metadata"]["resourceVersion"]
    path = f"/api/v1/namespaces/{ns}/configmaps?watch=true&labelSelector=team%3Da&resourceVersion={rv}"
    base = f"/api/v1/namespaces/{ns}/configmaps"
    with watch(server, path) as stream:
        assert stream.status == 200
        _patch(server, f"{base}/out", {"data": {"v": "ignored"}})  # never in the selection: no event
        _patch(server, f"{base}/in", {"data": {"v": "2"}})
        left = _patch(server, f"{base}/in", {"metadata": {"labels": {"team": "b"}}})
        _patch(server, f"{base}/out", {"metadata": {"labels": {"team": "a"}}})
        server.raw("DELETE", f"{base}/out")
        events = stream.take(4)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "in"),
        ("DELETED", "in"),
        ("ADDED", "out"),
        ("DELETED", "out"),
    ]
    assert events[0]["object"]["data"] == {"v": "2"}
    # the object that left the selection is sent as it is now, at the resourceVersion of the change
    assert events[1]["object"]["metadata"]["labels"] == {"team": "b"}
    assert events[1]["object"]["metadata"]["resourceVersion"] == left["metadata"]["resourceVersion"]
    assert events[2]["object"]["data"] == {"v": "ignored"}


def test_selector_watch_tracks_listed_and_new_objects_in_and_out(server: Server) -> None:
    """Initial events with a selector, then objects listed before and created after the watch leave and re-enter."""
    ns = _ns(server)
    _cm(server, ns, "listed", {"team": "a"}, v="1")
    base = f"/api/v1/namespaces/{ns}/configmaps"
    query = (
        "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
        "&labelSelector=team%3Da"
    )
    with watch(server, f"{base}?{query}") as stream:
        first = stream.take(2)
        assert [(e["type"], e["object"]["metadata"].get("name")) for e in first] == [
            ("ADDED", "listed"),
            ("BOOKMARK", None),
        ]
        _cm(server, ns, "new", {"team": "a"}, v="1")
        _patch(server, f"{base}/new", {"metadata": {"labels": {"team": "b"}}})
        _patch(server, f"{base}/new", {"data": {"v": "unseen"}})  # out of the selection: no event
        _patch(server, f"{base}/new", {"metadata": {"labels": {"team": "a"}}})
        _patch(server, f"{base}/listed", {"data": {"v": "2"}})
        _patch(server, f"{base}/listed", {"metadata": {"labels": {"team": "b"}}})
        _cm(server, ns, "late", {"team": "b"}, v="1")
        _patch(server, f"{base}/late", {"metadata": {"labels": {"team": "a"}}})
        events = stream.take(6)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "new"),
        ("DELETED", "new"),
        ("ADDED", "new"),
        ("MODIFIED", "listed"),
        ("DELETED", "listed"),
        ("ADDED", "late"),
    ]
    assert events[2]["object"]["data"] == {"v": "unseen"}


def test_watch_single_object_by_field_selector(server: Server) -> None:
    ns = _ns(server)
    _cm(server, ns, "one", v="1")
    _cm(server, ns, "two", v="1")
    rv = server.raw("GET", f"/api/v1/namespaces/{ns}/configmaps")[1]["metadata"]["resourceVersion"]
    base = f"/api/v1/namespaces/{ns}/configmaps"
    with watch(server, f"{base}?watch=1&fieldSelector=metadata.name%3Dtwo&resourceVersion={rv}") as stream:
        _patch(server, f"{base}/one", {"data": {"v": "2"}})
        _patch(server, f"{base}/two", {"data": {"v": "2"}})
        ev = stream.next()
    assert ev is not None and ev["type"] == "MODIFIED" and ev["object"]["metadata"]["name"] == "two"


def test_watch_from_compacted_resource_version_is_gone(tmp_path: Path) -> None:
    """A server of its own that compacts its history every second."""
    srv = Server(tmp_path / "data", extra_args=["--compact-interval", "1"]).start()
    try:
        ns = _ns(srv)
        first = _cm(srv, ns, "c0", v="0")
        old_rv = first["metadata"]["resourceVersion"]
        for i in range(1, 6):
            _patch(srv, f"/api/v1/namespaces/{ns}/configmaps/c0", {"data": {"v": str(i)}})
        time.sleep(3.2)  # two compaction rounds: history up to at least the last write is gone

        code, body, _ = srv.raw("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={old_rv}")
        assert code == 410, body
        assert body["kind"] == "Status" and body["reason"] == "Expired" and body["code"] == 410
        assert "too old resource version" in body["message"]

        api = srv.client()
        try:
            core = client.CoreV1Api(api)
            with pytest.raises(ApiException) as info:
                core.list_namespaced_config_map(ns, resource_version=old_rv, resource_version_match="Exact")
            assert info.value.status == 410
            assert json.loads(info.value.body)["reason"] == "Expired"
            # a current list and a watch from it still work
            current = core.list_namespaced_config_map(ns)
            # (every namespace also has the kube-root-ca.crt ConfigMap, as in Kubernetes)
            assert [i.data for i in current.items if i.metadata.name == "c0"] == [{"v": "5"}]
            rv = current.metadata.resource_version
            with watch(srv, f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}") as stream:
                assert stream.status == 200
                _patch(srv, f"/api/v1/namespaces/{ns}/configmaps/c0", {"data": {"v": "6"}})
                ev = stream.next()
                assert ev is not None and ev["type"] == "MODIFIED" and ev["object"]["data"] == {"v": "6"}
        finally:
            api.close()
    finally:
        srv.stop()


async def _open_watch(session: Any, server: Server, path: str) -> Any:
    resp = await session.get(server.url + path, headers={"Accept": "application/json"})
    assert resp.status == 200
    return resp


async def _read_events(resp: Any, n: int, within: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(events) < n:
            line = await resp.content.readline()
            assert line, f"stream ended after {len(events)} events"
            events.append(json.loads(line))
    return events


def test_many_watchers_see_every_event_in_order(server: Server) -> None:
    """Concurrent writes (several events per storage batch) reach every watcher, in revision order."""
    ns = _ns(server)
    base = f"/api/v1/namespaces/{ns}/configmaps"
    rv = server.raw("GET", base)[1]["metadata"]["resourceVersion"]

    async def run() -> list[list[dict[str, Any]]]:
        connector = aiohttp.TCPConnector(limit=0, ssl=server.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            paths = [f"{base}?watch=true&resourceVersion={rv}"] * 20 + [
                f"{base}?watch=true&resourceVersion={rv}&labelSelector=even%3Dyes",
                f"/api/v1/watch/namespaces/{ns}/configmaps/c3?resourceVersion={rv}",
            ]
            streams = [await _open_watch(session, server, p) for p in paths]
            headers = {"Content-Type": "application/json"}

            async def create(i: int) -> None:
                body = {"metadata": {"name": f"c{i}", "labels": {"even": "yes" if i % 2 == 0 else "no"}}}
                async with session.post(server.url + base, json=body, headers=headers) as resp:
                    assert resp.status == 201, await resp.text()

            await asyncio.gather(*(create(i) for i in range(40)))
            async with session.delete(f"{server.url}{base}/c3") as resp:
                assert resp.status == 200
            got = [await _read_events(s, 41, 30) for s in streams[:20]]
            got.append(await _read_events(streams[20], 20, 30))
            got.append(await _read_events(streams[21], 2, 30))
            for s in streams:
                s.close()
            return got

    got = asyncio.run(run())
    everything = got[0]
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in everything]
    assert revisions == sorted(revisions) and len(set(revisions)) == 41
    assert sorted(e["object"]["metadata"]["name"] for e in everything if e["type"] == "ADDED") == sorted(
        f"c{i}" for i in range(40)
    )
    assert (everything[-1]["type"], everything[-1]["object"]["metadata"]["name"]) == ("DELETED", "c3")
    for other in got[1:20]:
        assert other == everything
    evens = [e for e in everything if e["type"] == "ADDED" and int(e["object"]["metadata"]["name"][1:]) % 2 == 0]
    assert got[20] == evens
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got[21]] == [("ADDED", "c3"), ("DELETED", "c3")]


class _SmallWindowConnection(http.client.HTTPSConnection):
    """A client connection with a tiny receive buffer: a client that stops reading is felt by the server at once."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def test_slow_watcher_does_not_hold_back_others(server: Server) -> None:
    """A watcher that stops reading gets its events later, in order; the others get theirs at once."""
    ns = _ns(server)
    base = f"/api/v1/namespaces/{ns}/configmaps"
    rv = server.raw("GET", base)[1]["metadata"]["resourceVersion"]
    big = "x" * 200_000
    count = 40  # 8 MB of events: more than the kernel's socket buffers (4 MB at most) and TLS's hold
    path = f"{base}?watch=true&resourceVersion={rv}"
    slow_conn = _SmallWindowConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=60)
    slow_conn.request("GET", path, headers={"Accept": "application/json"})
    slow = Stream(slow_conn, slow_conn.getresponse())
    assert slow.status == 200

    async def run() -> list[dict[str, Any]]:
        connector = aiohttp.TCPConnector(limit=0, ssl=server.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            fast = await _open_watch(session, server, path)
            headers = {"Content-Type": "application/json"}
            for i in range(count):
                body = {"metadata": {"name": f"b{i}"}, "data": {"v": big}}
                async with session.post(server.url + base, json=body, headers=headers) as resp:
                    assert resp.status == 201, await resp.text()
            fast_events = await _read_events(fast, count, 30)
            fast.close()
            return fast_events

    try:
        fast_events = asyncio.run(run())  # the slow watcher has not read a byte meanwhile
        slow_events = slow.take(count)
    finally:
        slow_conn.close()
    names = [f"b{i}" for i in range(count)]
    assert [e["object"]["metadata"]["name"] for e in fast_events] == names
    assert [e["object"]["metadata"]["name"] for e in slow_events] == names
    assert all(e["object"]["data"]["v"] == big for e in slow_events)

"""What the server acknowledged survives a crash; a clean restart keeps everything.

A write answered 201 must be durable: SIGKILL the server in the middle of a
stream of creates, start a new one on the same data dir, and every
acknowledged object is there with its data.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from typing import Any

from tests.e2e.cluster import Server

NS = "durable"


class Writer(threading.Thread):
    """Creates configmaps as fast as one connection allows; records every one answered 201."""

    def __init__(self, server: Server, prefix: str) -> None:
        super().__init__(daemon=True)
        self.server, self.prefix = server, prefix
        self.acked: dict[str, dict[str, str]] = {}
        self.attempted = 0

    def run(self) -> None:
        ctx = self.server.ssl_context()
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=ctx, timeout=60)
        i = 0
        try:
            while True:
                name = f"{self.prefix}-{i:05d}"
                data = {"index": str(i), "payload": f"value-{i}-" + "x" * 64}
                body = json.dumps({"metadata": {"name": name}, "data": data})
                self.attempted += 1
                conn.request("POST", f"/api/v1/namespaces/{NS}/configmaps", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 201:
                    self.acked[name] = data
                i += 1
        except (OSError, http.client.HTTPException):
            pass  # the server died: the request in flight may or may not have been stored
        finally:
            conn.close()


def _list(server: Server, path: str) -> dict[str, Any]:
    code, body, _ = server.raw("GET", path)
    assert code == 200, body
    return dict(body)


def test_acknowledged_writes_survive_sigkill(fresh_server: Server) -> None:
    srv = fresh_server
    assert srv.raw("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})[0] == 201
    writers = [Writer(srv, f"w{n}") for n in range(4)]  # concurrent creates share commits
    for w in writers:
        w.start()
    deadline = time.monotonic() + 60  # a loaded machine may take a while for the first acknowledgements
    while not all(len(w.acked) >= 10 for w in writers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(w.is_alive() and len(w.acked) >= 10 for w in writers), "a writer made no progress"
    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
    for w in writers:
        w.join(60)
        assert not w.is_alive()
    acked = {name: data for w in writers for name, data in w.acked.items()}
    attempted = sum(w.attempted for w in writers)
    assert len(acked) >= 20, f"only {len(acked)} writes in a second"

    again = Server(srv.data_dir).start()
    try:
        listed = _list(again, f"/api/v1/namespaces/{NS}/configmaps")
        # the writers' own (the namespace also holds the kube-root-ca.crt the controller manager put there)
        stored = {i["metadata"]["name"]: i.get("data") for i in listed["items"] if i["metadata"]["name"][0] == "w"}
        missing = sorted(set(acked) - set(stored))
        assert not missing, f"{len(missing)} acknowledged configmaps lost, e.g. {missing[:5]}"
        for name, data in acked.items():
            assert stored[name] == data, name
        # at most the requests in flight when the server died were stored without an answer
        assert len(stored) - len(acked) <= len(writers)
        assert len(stored) <= attempted
        # the store is writable and resourceVersions go on increasing
        highest = max(int(i["metadata"]["resourceVersion"]) for i in listed["items"])
        code, body, _ = again.raw("POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "after-crash"}})
        assert code == 201, body
        assert int(body["metadata"]["resourceVersion"]) > highest
    finally:
        again.stop()


def test_restart_after_sigterm_keeps_everything(fresh_server: Server) -> None:
    srv = fresh_server
    srv.create_namespace(NS)  # with its kube-root-ca.crt, which the test leaves out of what it counts
    created: dict[str, dict[str, Any]] = {}
    for i in range(10):
        code, body, _ = srv.raw(
            "POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": f"c{i}"}, "data": {"i": str(i)}}
        )
        assert code == 201, body
        created[body["metadata"]["name"]] = body
    code, dep, _ = srv.raw(
        "POST",
        f"/apis/apps/v1/namespaces/{NS}/deployments",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
                },
            },
        },
    )
    assert code == 201, dep
    # an update and a delete are durable too
    code, patched, _ = srv.raw(
        "PATCH",
        f"/api/v1/namespaces/{NS}/configmaps/c0",
        {"data": {"i": "zero"}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, patched
    created["c0"] = patched
    assert srv.raw("DELETE", f"/api/v1/namespaces/{NS}/configmaps/c9")[0] == 200
    del created["c9"]
    before = _list(srv, f"/api/v1/namespaces/{NS}/configmaps")
    before_rv = int(before["metadata"]["resourceVersion"])

    assert srv.stop(signal.SIGTERM) == 0
    again = Server(srv.data_dir).start()
    try:
        after = _list(again, f"/api/v1/namespaces/{NS}/configmaps")
        got = {i["metadata"]["name"]: i for i in after["items"] if i["metadata"]["name"] != "kube-root-ca.crt"}
        assert set(got) == set(created)
        for name, obj in created.items():
            assert got[name]["data"] == obj["data"]
            assert got[name]["metadata"]["uid"] == obj["metadata"]["uid"]
            assert got[name]["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
            assert got[name]["metadata"]["creationTimestamp"] == obj["metadata"]["creationTimestamp"]
        assert int(after["metadata"]["resourceVersion"]) >= before_rv

        code, d, _ = again.raw("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/web")
        assert code == 200 and d["spec"]["replicas"] == 3 and d["metadata"]["uid"] == dep["metadata"]["uid"]
        ns = again.raw("GET", f"/api/v1/namespaces/{NS}")[1]
        assert ns["status"]["phase"] == "Active"

        # new writes get higher resourceVersions than anything before the restart
        code, body, _ = again.raw("POST", f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "later"}})
        assert code == 201, body
        assert int(body["metadata"]["resourceVersion"]) > before_rv
        code, body, _ = again.raw(
            "PATCH",
            f"/api/v1/namespaces/{NS}/configmaps/c1",
            {"data": {"i": "one"}},
            content_type="application/merge-patch+json",
        )
        assert code == 200 and int(body["metadata"]["resourceVersion"]) > before_rv
        # a stale resourceVersion from before the restart still conflicts
        stale = dict(created["c1"])
        stale["data"] = {"i": "stale"}
        code, body, _ = again.raw("PUT", f"/api/v1/namespaces/{NS}/configmaps/c1", stale)
        assert code == 409 and body["reason"] == "Conflict"
        # a watch from the pre-restart resourceVersion replays what happened since
        code, body, _ = again.raw(
            "GET", f"/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={before_rv}&timeoutSeconds=1"
        )
        assert code == 200
        events = [json.loads(line) for line in body.splitlines()] if isinstance(body, str) else [body]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "later"),
            ("MODIFIED", "c1"),
        ]
    finally:
        again.stop()

"""Paginated lists (`limit` + `continue`) as kubectl and the Python client see them: every page of a list
at the first page's resourceVersion while writes go on, selectors counted before the limit, Kubernetes'
remainingItemCount, and a continue token whose resourceVersion was compacted answered 410 Expired with a
token for the rest."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.cluster import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def core(server: Server) -> Iterator[client.CoreV1Api]:
    api = server.client()
    yield client.CoreV1Api(api)
    api.close()


def _namespace(server: Server, count: int, prefix: str = "cm") -> str:
    """A namespace with `count` ConfigMaps (every third labeled third=yes), besides its kube-root-ca.crt."""
    ns = f"pages-{uuid.uuid4().hex[:6]}"
    server.create_namespace(ns)
    for i in range(count):
        labels = {"third": "yes"} if i % 3 == 0 else {}
        body = {"metadata": {"name": f"{prefix}-{i:03d}", "labels": labels}, "data": {"v": "0"}}
        code, answer, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
        assert code == 201, answer
    return ns


def _pages(core: client.CoreV1Api, ns: str, limit: int, between: Any = None, **kw: Any) -> list[Any]:
    """Every page of one list; `between(n)` runs before page n (n >= 1)."""
    pages = [core.list_namespaced_config_map(ns, limit=limit, **kw)]
    while pages[-1].metadata._continue:
        if between is not None:
            between(len(pages))
        pages.append(core.list_namespaced_config_map(ns, limit=limit, _continue=pages[-1].metadata._continue, **kw))
    return pages


def test_kubectl_get_in_chunks_lists_everything_once(server: Server) -> None:
    ns = _namespace(server, 23)
    whole = server.kubectl("get", "configmaps", "-n", ns, "-o", "name").stdout.split()
    assert len(whole) == 24  # and kube-root-ca.crt
    chunked = server.kubectl("get", "configmaps", "-n", ns, "-o", "name", "--chunk-size=5", "-v=6")
    assert chunked.stdout.split() == whole
    requests = [line for line in chunked.stderr.splitlines() if "/configmaps?" in line and "limit=5" in line]
    assert len(requests) == 5 and sum("continue=" in line for line in requests) == 4, chunked.stderr
    table = server.kubectl("get", "configmaps", "-n", ns, "--chunk-size=5").stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "DATA"] and len(table) == 25  # one header for every chunk


def test_pages_stay_at_the_first_pages_resource_version_while_writes_go_on(
    server: Server, core: client.CoreV1Api
) -> None:
    ns = _namespace(server, 20)
    before = {
        cm.metadata.name: (cm.metadata.resource_version, cm.data) for cm in core.list_namespaced_config_map(ns).items
    }

    def write(n: int) -> None:  # between pages: a create, an update and a delete, before and after the page boundary
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{n:03d}-new")))
        core.patch_namespaced_config_map(f"cm-{19 - n:03d}", ns, {"data": {"v": f"changed-{n}"}})
        core.delete_namespaced_config_map(f"cm-{n * 4:03d}", ns)

    pages = _pages(core, ns, 6, between=write)
    rv = pages[0].metadata.resource_version
    assert [p.metadata.resource_version for p in pages] == [rv] * len(pages)
    assert [len(p.items) for p in pages] == [6, 6, 6, 3]
    # remainingItemCount: the keys after each page, as of the list's resourceVersion
    assert [p.metadata.remaining_item_count for p in pages] == [15, 9, 3, None]
    got = {cm.metadata.name: (cm.metadata.resource_version, cm.data) for p in pages for cm in p.items}
    assert got == before and sum(len(p.items) for p in pages) == len(before)
    # the same list asked for at its resourceVersion in one piece, and the changes shown now
    exact = core.list_namespaced_config_map(ns, resource_version=rv, resource_version_match="Exact")
    assert [cm.metadata.name for cm in exact.items] == [cm.metadata.name for p in pages for cm in p.items]
    now = {cm.metadata.name for cm in core.list_namespaced_config_map(ns).items}
    assert "cm-001-new" in now and "cm-004" not in now


def test_selectors_filter_before_the_limit_counts(server: Server, core: client.CoreV1Api) -> None:
    ns = _namespace(server, 20)
    pages = _pages(core, ns, 3, label_selector="third=yes")
    names = [cm.metadata.name for p in pages for cm in p.items]
    assert names == [f"cm-{i:03d}" for i in range(0, 20, 3)]
    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert all(p.metadata.remaining_item_count is None for p in pages)  # not known with a selector


def test_a_compacted_continue_is_410_expired_with_a_token_for_the_rest(tmp_path: Path) -> None:
    """A server of its own that compacts its history every second."""
    srv = Server(tmp_path / "data", extra_args=["--compact-interval", "1"]).start()
    try:
        ns = _namespace(srv, 6)
        api = srv.client()
        try:
            core = client.CoreV1Api(api)
            first = core.list_namespaced_config_map(ns, limit=3)
            assert [cm.metadata.name for cm in first.items] == ["cm-000", "cm-001", "cm-002"]
            core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm-late")))
            time.sleep(3.2)  # two compaction rounds: the list's resourceVersion is gone
            with pytest.raises(ApiException) as info:
                core.list_namespaced_config_map(ns, limit=3, _continue=first.metadata._continue)
            status = json.loads(info.value.body)
            assert info.value.status == 410 and status["reason"] == "Expired" and status["code"] == 410
            assert status["message"].startswith(
                "The provided continue parameter is too old to display a consistent list result. You can start "
                "a new list without the continue parameter, or use the continue token in this response to "
                "retrieve the remainder of the results."
            )
            rest = core.list_namespaced_config_map(ns, limit=10, _continue=status["metadata"]["continue"])
            names = [cm.metadata.name for cm in rest.items]
            assert names == ["cm-003", "cm-004", "cm-005", "cm-late", "kube-root-ca.crt"]
            assert int(rest.metadata.resource_version) > int(first.metadata.resource_version)
        finally:
            api.close()
        # kubectl's own chunked list still works against the compacting server
        out = srv.kubectl("get", "configmaps", "-n", ns, "-o", "name", "--chunk-size=2").stdout.split()
        assert len(out) == 8
    finally:
        srv.stop()

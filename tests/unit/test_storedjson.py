"""JSON lists spliced from the stored bytes: for every built-in kind and a CRD's versions, the list body parses to
what the decode path answers (GET's decode, then orjson), and the kinds or values it cannot prove fall back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from skiff.apiserver import objects, storedjson
from skiff.apiserver.builtin import builtin_types
from skiff.apiserver.crd_types import resource_types
from skiff.apiserver.options import ListOptions, WriteOptions
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.storage.interface import KeyValue
from skiff.storage.sqlite import SQLiteBackend
from tests.unit.test_crd_types import crd

TYPES = [*builtin_types(), *resource_types(crd())]
TRICKY = {"a": '{"metadata":{"x":1}}', "b": "}],[{", "c": 'say "resourceVersion"'}  # JSON-looking strings


def _shapes(rt: ResourceType) -> list[dict[str, Any]]:
    """Objects as clients send them: Kubernetes' order, the Python client's (data/spec first), no apiVersion."""
    meta = {"name": "a", "namespace": "ns", "labels": {"app": "x"}, "annotations": TRICKY, "uid": "u"}
    nested = {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"k": "v"}}, "replicas": 2}
    return [
        {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta, "spec": nested},
        {"data": {"k": "v"}, "spec": nested, "kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
        {"metadata": {"name": "b"}, "spec": {"involvedObject": {"resourceVersion": "3"}}},
        {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {}},
    ]


# values not written by `objects.encode`: older data, other writers
RAW = [
    b'{"spec":{"template":{"metadata":{"labels":{}}}},"metadata":{"name":"a"}}',
    b'{"kind":"a{b","metadata":{"name":"a"}}',
    b'{"apiVersion":"x","metadata":{"name":"a","resourceVersion":"1"}}',
    b'{"metadata":{"name":"a"},"items":[1]}',
]


def _body(rt: ResourceType, kvs: list[KeyValue], fast: bool) -> Any:
    items = [(storedjson.answered(rt, kv) if fast else None) or objects.decode(rt, kv) for kv in kvs]
    return orjson.loads(orjson.dumps(objects.list_object(rt, items, 9, "tok", 3)))


@pytest.mark.parametrize("rt", TYPES, ids=lambda rt: f"{rt.api_version}/{rt.kind}")
def test_the_spliced_list_parses_to_the_decoded_list_for_every_kind(rt: ResourceType) -> None:
    stored = [objects.encode(rt, obj) for obj in _shapes(rt)] + RAW
    kvs = [KeyValue(f"/k/{i}", value, 2, 5 + i) for i, value in enumerate(stored)]
    for kv in kvs:  # one at a time, so a difference names the value
        assert _body(rt, [kv], fast=True) == _body(rt, [kv], fast=False), kv.value
    assert _body(rt, kvs, fast=True) == _body(rt, kvs, fast=False)
    # the fast path is taken where the stored version is the one asked for (else decode converts)
    spliced = storedjson.answered(rt, kvs[0])
    assert (spliced is not None) == (rt.from_storage is None or rt.storage_version == rt.api_version), rt
    assert storedjson.answered(rt, kvs[1]) is not None or rt.from_storage is not None
    assert storedjson.answered(rt, kvs[2]) is None  # a resourceVersion in the value: decode overwrites it


def test_only_values_that_provably_need_no_decode_are_spliced() -> None:
    rt = next(t for t in TYPES if t.kind == "ConfigMap")
    for value in [*RAW[:3], b'{"metadata":null,"spec":{"metadata":{"name":"a"}}}', b'["metadata":{}]']:
        assert storedjson.answered(rt, KeyValue("/k", value, 1, 2)) is None, value
    empty = storedjson.answered(rt, KeyValue("/k", b'{"metadata":{}}', 1, 2))
    assert empty is not None and orjson.loads(orjson.dumps(empty)) == {"metadata": {"resourceVersion": "2"}}
    obj = {"data": {}, "metadata": {"name": "a"}, "kind": "ConfigMap"}
    assert list(storedjson.head_first(obj)) == ["kind", "metadata", "data"]
    ordered = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {}}
    assert storedjson.head_first(ordered) is ordered


def test_hpa_stored_as_v2_is_spliced_for_v2_and_converted_for_v1() -> None:
    v1, v2 = (next(t for t in TYPES if t.api_version == f"autoscaling/{v}" and t.kind == "HorizontalPodAutoscaler")
              for v in ("v1", "v2"))  # fmt: skip
    body = {"metadata": {"name": "h", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 3,
                     "targetCPUUtilizationPercentage": 50}}  # fmt: skip
    kv = KeyValue("/k", objects.encode(v1, {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", **body}),
                  1, 4)  # fmt: skip
    assert storedjson.answered(v1, kv) is None
    assert storedjson.answered(v2, kv) is not None
    assert _body(v1, [kv], fast=True)["items"][0]["spec"]["targetCPUUtilizationPercentage"] == 50
    assert _body(v2, [kv], fast=True) == _body(v2, [kv], fast=False)


# ------------------------------------------------------------------ through the store, from the cache and storage
@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store, Registry]]:
    backend = SQLiteBackend(str(tmp_path / "state.db"))
    await backend.start()
    cache = WatchCache(backend)
    await cache.start()
    registry = Registry()
    for rt in builtin_types():
        registry.add(rt)
    yield Store(backend, registry, cache), Store(backend, registry, None), registry
    await cache.close()
    await backend.close()


async def test_store_lists_encoded_and_decoded_parse_the_same(stores: tuple[Store, Store, Registry]) -> None:
    cached, stored, registry = stores
    ns_rt, cm_rt = registry.get("", "v1", "namespaces"), registry.get("", "v1", "configmaps")
    assert ns_rt is not None and cm_rt is not None
    await cached.create(ns_rt, None, {"metadata": {"name": "ns"}}, WriteOptions())
    for i in range(7):
        body = {"data": {"k": str(i)}, "metadata": {"name": f"c{i}", "labels": {"odd": str(i % 2)}}}
        await cached.create(cm_rt, "ns", body, WriteOptions())
    await cached.patch(cm_rt, "ns", "c3", "application/merge-patch+json", {"data": {"k": "x"}}, WriteOptions())
    for store in (cached, stored):
        selected = ListOptions(label_selector="odd=1"), ListOptions(field_selector="metadata.name=c3", limit=1)
        for opts in (ListOptions(), ListOptions(limit=3), *selected):
            plain = await store.list(cm_rt, "ns", opts)
            fast = await store.list(cm_rt, "ns", opts, encoded=True)
            assert orjson.loads(orjson.dumps(fast)) == orjson.loads(orjson.dumps(plain)), opts
            # selectors decode to check, and still answer the stored bytes
            assert fast["items"] and all(isinstance(item, orjson.Fragment) for item in fast["items"]), opts

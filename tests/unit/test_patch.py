"""JSON Patch, JSON Merge Patch, strategic merge patch, simplified server-side apply, definitions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from skiff.api import definitions
from skiff.api.errors import BadRequest, Invalid, RequestEntityTooLarge
from skiff.api.patch import (
    REJECTED,
    apply_patch,
    json_merge_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
POD = "io.k8s.api.core.v1.Pod"

# -- JSON Patch (RFC 6902) -------------------------------------------------------------------------

DOC = {"a": {"b": [1, 2, 3], "c~d": "tilde", "e/f": "slash"}, "n": None, "t": True}


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        pytest.param([{"op": "add", "path": "/x", "value": 1}], {**DOC, "x": 1}, id="add-member"),
        pytest.param(
            [{"op": "add", "path": "/a/b/1", "value": 9}],
            {**DOC, "a": {**DOC["a"], "b": [1, 9, 2, 3]}},
            id="add-insert-index",
        ),
        pytest.param(
            [{"op": "add", "path": "/a/b/-", "value": 4}],
            {**DOC, "a": {**DOC["a"], "b": [1, 2, 3, 4]}},
            id="add-dash-appends",
        ),
        pytest.param(
            [{"op": "add", "path": "/a/b/3", "value": 4}],
            {**DOC, "a": {**DOC["a"], "b": [1, 2, 3, 4]}},
            id="add-at-length",
        ),
        pytest.param(
            [{"op": "add", "path": "/t", "value": False}], {**DOC, "t": False}, id="add-replaces-member"
        ),
        pytest.param([{"op": "add", "path": "", "value": [1]}], [1], id="add-root"),
        pytest.param([{"op": "remove", "path": "/t"}], {"a": DOC["a"], "n": None}, id="remove-member"),
        pytest.param(
            [{"op": "remove", "path": "/a/b/0"}], {**DOC, "a": {**DOC["a"], "b": [2, 3]}}, id="remove-index"
        ),
        pytest.param([{"op": "replace", "path": "/n", "value": 5}], {**DOC, "n": 5}, id="replace"),
        pytest.param(
            [{"op": "replace", "path": "/a/c~0d", "value": "x"}],
            {**DOC, "a": {**DOC["a"], "c~d": "x"}},
            id="pointer-tilde-escape",
        ),
        pytest.param(
            [{"op": "replace", "path": "/a/e~1f", "value": "x"}],
            {**DOC, "a": {**DOC["a"], "e/f": "x"}},
            id="pointer-slash-escape",
        ),
        pytest.param(
            [{"op": "move", "from": "/a/b", "path": "/b"}],
            {"a": {"c~d": "tilde", "e/f": "slash"}, "b": [1, 2, 3], "n": None, "t": True},
            id="move",
        ),
        pytest.param(
            [{"op": "move", "from": "/a/b/0", "path": "/a/b/2"}],
            {**DOC, "a": {**DOC["a"], "b": [2, 3, 1]}},
            id="move-within-array",
        ),
        pytest.param([{"op": "move", "from": "/t", "path": "/t"}], DOC, id="move-onto-itself"),
        pytest.param([{"op": "copy", "from": "/a/b", "path": "/c"}], {**DOC, "c": [1, 2, 3]}, id="copy"),
        pytest.param(
            [{"op": "test", "path": "/a/b", "value": [1, 2.0, 3]}, {"op": "remove", "path": "/n"}],
            {"a": DOC["a"], "t": True},
            id="test-passes-then-apply",
        ),
        pytest.param([{"op": "test", "path": "/n", "value": None}], DOC, id="test-null"),
        pytest.param([], DOC, id="empty-patch"),
    ],
)
def test_json_patch(ops: list[dict[str, Any]], expected: Any) -> None:
    before = copy.deepcopy(DOC)
    assert json_patch(DOC, ops) == expected
    assert before == DOC  # input untouched


def test_json_patch_result_shares_nothing() -> None:
    value = {"deep": [1]}
    out = json_patch({"a": {"b": 1}}, [{"op": "add", "path": "/v", "value": value}])
    out["v"]["deep"].append(2)
    out["a"]["b"] = 2
    assert value == {"deep": [1]}


@pytest.mark.parametrize(
    ("ops", "cause"),
    [
        pytest.param(
            [{"op": "test", "path": "/t", "value": 1}],
            "testing value /t failed: test failed",
            id="test-bool-vs-int",
        ),
        pytest.param([{"op": "test", "path": "/a/b", "value": [1, 2]}], "test failed", id="test-fails"),
        pytest.param([{"op": "remove", "path": "/missing"}], "nonexistent key", id="remove-missing"),
        pytest.param(
            [{"op": "replace", "path": "/missing", "value": 1}], "missing key", id="replace-missing"
        ),
        pytest.param([{"op": "add", "path": "/x/y", "value": 1}], "missing path", id="add-missing-parent"),
        pytest.param([{"op": "add", "path": "/a/b/5", "value": 1}], "out of bounds", id="add-past-end"),
        pytest.param(
            [{"op": "add", "path": "/a/b/01", "value": 1}], "invalid array index", id="leading-zero"
        ),
        pytest.param([{"op": "remove", "path": "/a/b/-"}], "invalid array index", id="remove-dash"),
        pytest.param(
            [{"op": "add", "path": "x", "value": 1}], "must be empty or start with '/'", id="bad-pointer"
        ),
        pytest.param([{"op": "add", "path": "/x"}], "'value'", id="missing-value"),
        pytest.param([{"op": "remove"}], "'path'", id="missing-path"),
        pytest.param([{"op": "frobnicate", "path": "/x"}], "Unexpected kind: frobnicate", id="unknown-op"),
        pytest.param([{"op": "move", "from": "/a", "path": "/a/x"}], "own child", id="move-into-child"),
        pytest.param([{"op": "copy", "from": "/nope", "path": "/x"}], "missing path", id="copy-missing-from"),
    ],
)
def test_json_patch_not_applicable_is_422(ops: list[dict[str, Any]], cause: str) -> None:
    with pytest.raises(Invalid) as info:
        json_patch(DOC, ops)
    assert info.value.code == 422
    assert info.value.message == REJECTED
    assert cause in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"op": "add"}, "json: cannot unmarshal object into Go value of type jsonpatch.Patch", id="object"
        ),
        pytest.param("x", "json: cannot unmarshal string into Go value of type jsonpatch.Patch", id="string"),
        pytest.param(
            [1], "json: cannot unmarshal number into Go value of type jsonpatch.Operation", id="not-ops"
        ),
    ],
)
def test_json_patch_malformed_is_400(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        json_patch(DOC, body)
    assert info.value.message == message


def test_json_patch_too_many_operations() -> None:
    ops = [{"op": "add", "path": "/x", "value": 1}] * 10001
    with pytest.raises(RequestEntityTooLarge) as info:
        json_patch({}, ops)
    assert info.value.message == "The allowed maximum operations in a JSON patch is 10000, got 10001"


# -- JSON Merge Patch (RFC 7386, appendix A) --------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="replace-member"),
        pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="add-member"),
        pytest.param({"a": "b"}, {"a": None}, {}, id="null-deletes"),
        pytest.param({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}, id="null-deletes-one"),
        pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="array-by-scalar"),
        pytest.param({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}, id="scalar-by-array"),
        pytest.param({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}, id="nested"),
        pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="arrays-replaced"),
        pytest.param(["a", "b"], ["c", "d"], ["c", "d"], id="array-target"),
        pytest.param({"a": "b"}, ["c"], ["c"], id="array-patch"),
        pytest.param({"a": "foo"}, None, None, id="null-patch"),
        pytest.param({"a": "foo"}, "bar", "bar", id="string-patch"),
        pytest.param({"e": None}, {"a": 1}, {"e": None, "a": 1}, id="target-null-kept"),
        pytest.param([1, 2], {"a": "b", "c": None}, {"a": "b"}, id="object-over-array"),
        pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="nulls-pruned-in-new"),
    ],
)
def test_json_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    assert json_merge_patch(target, patch) == expected


def test_merge_patch_object() -> None:
    live = {"spec": {"replicas": 1, "paused": True}}
    assert merge_patch(live, {"spec": {"replicas": 3, "paused": None}}) == {"spec": {"replicas": 3}}
    assert live == {"spec": {"replicas": 1, "paused": True}}


@pytest.mark.parametrize("body", [None, [1], "x", 3], ids=["null", "array", "string", "number"])
def test_merge_patch_requires_object(body: Any) -> None:
    with pytest.raises(BadRequest) as info:
        merge_patch({}, body)
    assert info.value.message == "Invalid JSON Patch"


# -- strategic merge patch ---------------------------------------------------------------------------


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "finalizers": ["example.com/a", "example.com/b"],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1.25",
                            "args": ["--a", "--b"],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "0"}],
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                        },
                        {"name": "log-shipper", "image": "fluent-bit:2"},
                        {"name": "metrics", "image": "exporter:1"},
                    ],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "cfg", "configMap": {"name": "old"}},
                    ],
                    "dnsPolicy": "ClusterFirst",
                },
            },
        },
        "status": {"replicas": 2},
    }


def test_kubectl_apply_patch_on_deployment() -> None:
    """A patch shaped like what `kubectl apply` computes from last-applied / new config / live."""
    live = _deployment()
    before = copy.deepcopy(live)
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"new": true}'},
            "$deleteFromPrimitiveList/finalizers": ["example.com/a"],
            "$setElementOrder/finalizers": ["example.com/c", "example.com/b"],
            "finalizers": ["example.com/c"],
        },
        "spec": {
            "replicas": 3,
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "init-proxy"},
                        {"name": "app"},
                        {"name": "metrics"},
                    ],
                    "containers": [
                        {"name": "init-proxy", "image": "envoy:1"},
                        {
                            "name": "app",
                            "image": "nginx:1.27",
                            "args": ["--c"],
                            "$setElementOrder/env": [{"name": "MODE"}, {"name": "LOG_LEVEL"}],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"$patch": "delete", "name": "DEBUG"},
                            ],
                            "resources": {"limits": {"memory": None}},
                        },
                        {"$patch": "delete", "name": "log-shipper"},
                    ],
                    "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}],
                    "volumes": [
                        {"$retainKeys": ["name", "secret"], "name": "cfg", "secret": {"secretName": "s"}}
                    ],
                }
            },
        },
    }
    out = strategic_merge_patch(live, patch, DEPLOYMENT)
    assert live == before

    meta = out["metadata"]
    assert meta["finalizers"] == ["example.com/c", "example.com/b"]
    assert meta["annotations"] == {"kubectl.kubernetes.io/last-applied-configuration": '{"new": true}'}
    assert meta["labels"] == {"app": "web"}

    spec = out["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["init-proxy", "app", "metrics"]
    app = pod["containers"][1]
    assert app["image"] == "nginx:1.27"
    assert app["args"] == ["--c"]  # no patch strategy: replaced wholesale
    assert app["env"] == [{"name": "MODE", "value": "prod"}, {"name": "LOG_LEVEL", "value": "info"}]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert app["resources"] == {"limits": {"cpu": "1"}}
    assert pod["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {"name": "cfg", "secret": {"secretName": "s"}},
    ]
    assert pod["dnsPolicy"] == "ClusterFirst"
    assert out["status"] == {"replicas": 2}


def _pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [
        pytest.param(
            _pod(containers=[{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]),
            {"spec": {"containers": [{"name": "b", "image": "2"}]}},
            _pod(containers=[{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]),
            id="merge-by-name-keeps-others",
        ),
        pytest.param(
            _pod(containers=[{"name": "a"}]),
            {"spec": {"containers": [{"name": "z"}]}},
            _pod(containers=[{"name": "z"}, {"name": "a"}]),
            id="new-item-patch-order-first",
        ),
        pytest.param(
            _pod(containers=[{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]),
            {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}]}]}},
            _pod(containers=[{"name": "a", "ports": [{"containerPort": 80, "name": "web"}]}]),
            id="ports-by-container-port",
        ),
        pytest.param(
            _pod(containers=[{"name": "a"}, {"name": "b"}]),
            {"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}},
            _pod(containers=[{"name": "c"}]),
            id="list-patch-replace",
        ),
        pytest.param(
            _pod(containers=[{"name": "a", "args": ["x"]}]),
            {"spec": {"containers": [{"name": "a", "args": ["y", "z"]}]}},
            _pod(containers=[{"name": "a", "args": ["y", "z"]}]),
            id="atomic-list-replaced",
        ),
        pytest.param(
            _pod(nodeSelector={"a": "1", "b": "2"}),
            {"spec": {"nodeSelector": {"$patch": "replace", "c": "3"}}},
            _pod(nodeSelector={"c": "3"}),
            id="map-patch-replace",
        ),
        pytest.param(
            _pod(nodeSelector={"a": "1"}, dnsPolicy="x"),
            {"spec": {"nodeSelector": {"$patch": "delete"}}},
            _pod(dnsPolicy="x"),
            id="map-patch-delete",
        ),
        pytest.param(
            _pod(nodeSelector={"a": "1"}),
            {"spec": {"nodeSelector": {"$patch": "merge", "b": "2"}}},
            _pod(nodeSelector={"a": "1", "b": "2"}),
            id="map-patch-merge",
        ),
        pytest.param(
            _pod(dnsPolicy="x", hostname="h"),
            {"spec": {"hostname": None, "absent": None}},
            _pod(dnsPolicy="x"),
            id="null-deletes",
        ),
        pytest.param(
            _pod(),
            {
                "spec": {
                    "affinity": {"nodeAffinity": {"x": None, "$patch": "merge"}},
                    "containers": [{"name": "a", "$patch": "delete"}, {"name": "b"}],
                }
            },
            _pod(affinity={"nodeAffinity": {}}, containers=[{"name": "b"}]),
            id="new-keys-lose-directives-and-nulls",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "b"]}},
            {"metadata": {"finalizers": ["c", "a"]}},
            {"metadata": {"finalizers": ["c", "a", "b"]}},
            id="primitive-list-union",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "b", "c"]}},
            {"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"]}},
            {"metadata": {"finalizers": ["c", "a", "b"]}},
            id="set-element-order-only",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "b"]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"]}},
            {"metadata": {"finalizers": ["a"]}},
            id="delete-from-primitive-list",
        ),
        pytest.param(
            _pod(containers=[{"name": "a"}, {"name": "server-only"}, {"name": "b"}]),
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "b", "image": "i"}],
                }
            },
            # Kubernetes' mergeSortedSlice: server-only items go before patch items that followed them live.
            _pod(containers=[{"name": "server-only"}, {"name": "b", "image": "i"}, {"name": "a"}]),
            id="set-element-order-server-only-kept",
        ),
        pytest.param(
            {"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}},
            {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}},
            {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]}},
            id="owner-references-by-uid",
        ),
        pytest.param(
            _pod(tolerations=[{"key": "a"}]),
            {"spec": {"tolerations": [{"key": "b"}]}},
            _pod(tolerations=[{"key": "b"}]),
            id="list-without-strategy-replaced",
        ),
        pytest.param(
            _pod(containers=[{"name": "a", "resources": {"limits": {"cpu": "1"}}}]),
            {"spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "1Gi"}}}]}},
            _pod(containers=[{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
            id="nested-map-merge",
        ),
        pytest.param(
            _pod(dnsPolicy={"odd": 1}),
            {"spec": {"dnsPolicy": "ClusterFirst"}},
            _pod(dnsPolicy="ClusterFirst"),
            id="type-change-replaces",
        ),
    ],
)
def test_strategic_merge_patch_pod(
    original: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert strategic_merge_patch(original, patch, POD) == expected


def test_strategic_replace_strategy_map() -> None:
    """PodDisruptionBudgetSpec.selector carries x-kubernetes-patch-strategy: replace."""
    live = {"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}}
    patch = {"spec": {"selector": {"matchExpressions": [{"key": "b", "operator": "Exists"}]}}}
    out = strategic_merge_patch(live, patch, "io.k8s.api.policy.v1.PodDisruptionBudget")
    assert out == {
        "spec": {"selector": {"matchExpressions": [{"key": "b", "operator": "Exists"}]}, "minAvailable": 1}
    }


@pytest.mark.parametrize("schema", [None, "", "io.example.v1.Unknown"], ids=["none", "empty", "unknown"])
def test_strategic_without_schema_is_merge_patch(schema: str | None) -> None:
    live = {"spec": {"items": [{"name": "a"}], "m": {"x": 1, "y": 2}}}
    patch = {"spec": {"items": [{"name": "b"}], "m": {"x": None, "z": 3}}}
    assert strategic_merge_patch(live, patch, schema) == {
        "spec": {"items": [{"name": "b"}], "m": {"y": 2, "z": 3}}
    }


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param(
            {"spec": {"containers": [{"image": "x"}]}},
            "map: map[image:x] does not contain declared merge key: name",
            id="missing-merge-key",
        ),
        pytest.param(
            {"spec": {"containers": [{"name": "a", "$patch": "explode"}]}},
            "unknown patch type: explode in map: map[$patch:explode name:a]",
            id="unknown-list-directive",
        ),
        pytest.param(
            {"spec": {"nodeSelector": {"$patch": "explode"}}},
            "unknown patch type: explode in map: map[$patch:explode]",
            id="unknown-map-directive",
        ),
        pytest.param(
            {"spec": {"$retainKeys": ["dnsPolicy"], "hostname": "h"}},
            "invalid patch format of retainKeys",
            id="retain-keys-mismatch",
        ),
        pytest.param(
            {"spec": {"$retainKeys": "x"}}, "invalid patch format of retainKeys", id="retain-keys-not-list"
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
            "invalid patch format of primitive list",
            id="delete-list-not-list",
        ),
        pytest.param(
            {"spec": {"$setElementOrder/containers": {"name": "a"}}},
            "invalid patch format of setElementOrder list",
            id="order-not-list",
        ),
        pytest.param(
            {"spec": {"$setElementOrder/containers": [{"image": "a"}]}},
            "map: map[image:a] does not contain declared merge key: name",
            id="order-without-merge-key",
        ),
        pytest.param(
            [], "json: cannot unmarshal array into Go value of type map[string]interface {}", id="not-object"
        ),
    ],
)
def test_strategic_malformed(patch: Any, message: str) -> None:
    live = _pod(containers=[{"name": "a"}])
    with pytest.raises(BadRequest) as info:
        strategic_merge_patch(live, patch, POD)
    assert info.value.message == message


def test_strategic_lists_of_lists_rejected() -> None:
    with pytest.raises(Invalid):
        strategic_merge_patch(
            {"metadata": {"finalizers": [["a"]]}}, {"metadata": {"finalizers": [["b"]]}}, POD
        )


# -- server-side apply (simplified) ------------------------------------------------------------------


def test_apply_creates_without_nulls() -> None:
    applied = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": None},
        "data": {"a": "1"},
    }
    assert apply_patch(None, applied, "io.k8s.api.core.v1.ConfigMap") == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"a": "1"},
    }


def test_apply_merges_into_live_deployment() -> None:
    live = _deployment()
    before = copy.deepcopy(live)
    applied = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"tier": "front"},
            "finalizers": ["example.com/z", "example.com/a"],
        },
        "spec": {
            "replicas": 5,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:2",
                            "args": ["--only"],
                            "ports": [{"containerPort": 80}, {"containerPort": 443}],
                            "env": [{"name": "DEBUG", "value": "1"}],
                        },
                        {"name": "new", "image": "busybox", "command": None},
                    ]
                }
            },
        },
    }
    out = apply_patch(live, applied, DEPLOYMENT)
    assert live == before
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert out["metadata"]["finalizers"] == ["example.com/a", "example.com/b", "example.com/z"]
    assert out["spec"]["replicas"] == 5
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "log-shipper", "metrics", "new"]
    app = containers[0]
    assert app["image"] == "nginx:2"
    assert app["args"] == ["--only"]  # atomic list
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]
    assert app["env"] == [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}]
    assert containers[3] == {"name": "new", "image": "busybox"}
    assert out["spec"]["strategy"] == live["spec"]["strategy"]


def test_apply_atomic_map_replaced() -> None:
    live = {"spec": {"selector": {"matchLabels": {"a": "1"}, "matchExpressions": []}}}
    applied = {"spec": {"selector": {"matchLabels": {"b": "2"}}}}
    out = apply_patch(live, applied, DEPLOYMENT)
    assert out["spec"]["selector"] == {
        "matchLabels": {"b": "2"}
    }  # LabelSelector is x-kubernetes-map-type: atomic


def test_apply_without_schema_merges_maps_replaces_lists() -> None:
    live = {"spec": {"m": {"a": 1}, "l": [1, 2]}}
    out = apply_patch(live, {"spec": {"m": {"b": 2}, "l": [3]}}, None)
    assert out == {"spec": {"m": {"a": 1, "b": 2}, "l": [3]}}


@pytest.mark.parametrize(
    "live",
    [None, {"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}],
    ids=["create", "update"],
)
def test_apply_missing_list_key(live: dict[str, Any] | None) -> None:
    applied = {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
    with pytest.raises(BadRequest) as info:
        apply_patch(live, applied, DEPLOYMENT)
    assert info.value.message == (
        ".spec.template.spec.containers: element 0: associative list with keys has an element that omits key "
        'field "name" (and doesn\'t have default value)'
    )


def test_apply_requires_object() -> None:
    with pytest.raises(BadRequest):
        apply_patch(None, ["x"], None)


# -- definitions -------------------------------------------------------------------------------------


def test_definitions_loader() -> None:
    defs = definitions.load_definitions()
    assert defs is definitions.load_definitions()  # cached
    assert DEPLOYMENT in defs
    assert definitions.kubernetes_version().startswith("v1.")
    assert definitions.definition(DEPLOYMENT) is defs[DEPLOYMENT]
    assert definitions.resolve_ref("#/$defs/io.k8s.api.core.v1.Pod") is defs[POD]
    with pytest.raises(KeyError):
        definitions.resolve_ref("other.json#/x")
    with pytest.raises(KeyError):
        definitions.definition("io.example.Nope")


def test_resolve_keeps_field_extensions() -> None:
    strategy = definitions.definition("io.k8s.api.apps.v1.DeploymentSpec")["properties"]["strategy"]
    schema = definitions.resolve(strategy)
    assert schema["x-kubernetes-patch-strategy"] == "retainKeys"
    assert "rollingUpdate" in schema["properties"]
    plain = definitions.definition(DEPLOYMENT)["properties"]["spec"]
    assert definitions.resolve(plain) is definitions.definition("io.k8s.api.apps.v1.DeploymentSpec")


@pytest.mark.parametrize(
    ("gvk", "name"),
    [
        pytest.param(("apps", "v1", "Deployment"), DEPLOYMENT, id="apps"),
        pytest.param(("", "v1", "Pod"), POD, id="core"),
        pytest.param(("example.com", "v1", "Widget"), None, id="unknown"),
    ],
)
def test_find_gvk(gvk: tuple[str, str, str], name: str | None) -> None:
    assert definitions.find_gvk(*gvk) == name

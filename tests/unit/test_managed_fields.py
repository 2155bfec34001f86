"""Field sets in the structured-merge-diff format and managedFields ownership: updates, apply, conflicts."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from skiff.api import fieldsets as F
from skiff.api import managed_fields as M
from skiff.api.errors import Conflict
from skiff.api.server_side_apply import apply_patch
from skiff.api.strategic import root_schema

DEPLOY = root_schema("io.k8s.api.apps.v1.Deployment")
CM = root_schema("io.k8s.api.core.v1.ConfigMap")
NOW = "2026-01-01T00:00:00Z"


def deployment(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "main", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}},
    }  # fmt: skip
    base["spec"].update(spec)
    return base


def req(manager: str, api_version: str = "apps/v1", **kw: Any) -> M.Request:
    return M.Request(manager=manager, api_version=api_version, now=NOW, **kw)


def test_set_of_an_object_uses_keys_values_and_atomic_leaves() -> None:
    obj = deployment()
    obj["metadata"]["finalizers"] = ["a/b"]
    tree = F.of(obj, DEPLOY, frozenset({"apiVersion", "kind"}))
    container = tree["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert container["."] == {} and container["f:image"] == {}
    assert container["f:ports"]['k:{"containerPort":80,"protocol":"TCP"}'] == {
        ".": {}, "f:containerPort": {}, "f:protocol": {}}  # fmt: skip
    assert tree["f:spec"]["f:selector"] == {}  # atomic (x-kubernetes-map-type: atomic)
    assert tree["f:metadata"]["f:finalizers"] == {'v:"a/b"': {}}  # a set list
    assert tree["f:metadata"]["f:labels"] == {"f:app": {}}


def test_paths_render_as_kubernetes_prints_them() -> None:
    assert F.render(("f:spec", "f:containers", 'k:{"name":"c"}', "f:image")) == '.spec.containers[name="c"].image'
    assert F.render(("f:ports", 'k:{"containerPort":80,"protocol":"TCP"}')) == '.ports[containerPort=80,protocol="TCP"]'
    assert F.render(("f:finalizers", 'v:"x"')) == '.finalizers[="x"]'
    assert F.render(("f:args", "i:0")) == ".args[0]"


def test_insert_discard_contains_keep_the_tree_canonical() -> None:
    tree: F.Tree = {}
    F.insert(tree, ("f:a", "f:b"))
    F.insert(tree, ("f:a",))
    assert tree == {"f:a": {".": {}, "f:b": {}}}
    assert F.contains(tree, ("f:a",)) and F.contains(tree, ("f:a", "f:b")) and not F.contains(tree, ("f:c",))
    assert F.discard(tree, ("f:a", "f:b"))
    assert tree == {"f:a": {}}
    assert F.discard(tree, ("f:a",)) and tree == {}
    F.insert(tree, ("f:x", "f:y", "f:z"))
    assert not F.contains(tree, ("f:x",)) and F.has_under(tree, ("f:x",))
    F.discard(tree, ("f:x", "f:y", "f:z"))
    assert tree == {}


def test_compare_walks_only_what_changed() -> None:
    old, new = deployment(), deployment(replicas=3)
    new["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "x"})
    del new["metadata"]["labels"]
    ch = F.compare(old, new, DEPLOY)
    assert ch.modified == [("f:spec", "f:replicas")]
    side = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"side"}')
    assert set(ch.added) == {side, (*side, "f:name"), (*side, "f:image")}
    assert set(ch.removed) == {("f:metadata", "f:labels"), ("f:metadata", "f:labels", "f:app")}
    assert not F.compare(old, copy.deepcopy(old), DEPLOY)


def test_updates_move_ownership_to_the_writer() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                          "data": {"a": "1", "b": "2"}}  # fmt: skip
    M.track_update(None, cm, req("creator", "v1"), CM)
    [entry] = cm["metadata"]["managedFields"]
    assert entry == {"manager": "creator", "operation": "Update", "apiVersion": "v1", "time": NOW,
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:a": {}, "f:b": {}}}}  # fmt: skip
    new = copy.deepcopy(cm)
    new["data"]["a"] = "9"
    M.track_update(cm, new, req("editor", "v1"), CM)
    owners = {e["manager"]: e["fieldsV1"] for e in new["metadata"]["managedFields"]}
    assert owners == {"creator": {"f:data": {".": {}, "f:b": {}}}, "editor": {"f:data": {"f:a": {}}}}
    same = copy.deepcopy(new)
    M.track_update(new, same, req("idle", "v1"), CM)  # nothing changed: nothing recorded
    assert [e["manager"] for e in same["metadata"]["managedFields"]] == ["creator", "editor"]


def test_default_manager_comes_from_the_user_agent() -> None:
    assert M.default_manager("", "kubectl/v1.37.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert M.default_manager("mine", "kubectl/v1.37.0") == "mine"
    assert M.default_manager("", "OpenAPI-Generator/31.0.0/python") == "OpenAPI-Generator"


def ssa(live: dict[str, Any] | None, config: dict[str, Any], manager: str, *, force: bool = False) -> dict[str, Any]:
    merged = apply_patch(live, config, "io.k8s.api.apps.v1.Deployment")
    return M.apply(live, merged, config, req(manager), DEPLOY, force=force)


def test_apply_conflicts_force_and_removal() -> None:
    live = ssa(None, deployment(), "alice")
    [entry] = live["metadata"]["managedFields"]
    assert entry["operation"] == "Apply" and entry["manager"] == "alice"

    with pytest.raises(Conflict) as e:
        ssa(live, deployment(replicas=5), "bob")
    assert str(e.value) == 'Apply failed with 1 conflict: conflict with "alice": .spec.replicas'
    assert e.value.causes == [{"type": "FieldManagerConflict", "message": 'conflict with "alice"',
                               "field": ".spec.replicas"}]  # fmt: skip
    both = ssa(live, deployment(), "bob")  # the same values: shared, no conflict
    assert {e["manager"] for e in both["metadata"]["managedFields"]} == {"alice", "bob"}

    forced = ssa(both, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                        "spec": {"replicas": 5}}, "bob", force=True)  # fmt: skip
    owners = {e["manager"]: e["fieldsV1"] for e in forced["metadata"]["managedFields"]}
    assert owners["bob"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owners["alice"]["f:spec"]
    assert forced["spec"]["replicas"] == 5

    # alice applies again without replicas (now bob's) and without her label: hers alone, so it goes
    config = deployment()
    del config["metadata"]["labels"], config["spec"]["replicas"]
    dropped = ssa(forced, config, "alice")
    assert not dropped["metadata"].get("labels") and dropped["spec"]["replicas"] == 5
    assert dropped["spec"]["template"]["spec"]["containers"][0]["name"] == "main"


def test_several_conflicts_are_listed_by_manager() -> None:
    live = ssa(None, deployment(), "alice")
    changed = deployment(replicas=2)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    with pytest.raises(Conflict) as e:
        ssa(live, changed, "bob")
    assert str(e.value) == (
        'Apply failed with 2 conflicts: conflicts with "alice":\n- .spec.replicas\n'
        '- .spec.template.spec.containers[name="main"].image'
    )


def test_apply_keys_items_by_their_defaulted_keys() -> None:
    live = deployment()
    config = deployment()
    del config["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"]  # the server's default
    out = ssa(live, config, "alice")
    ports = out["metadata"]["managedFields"][-1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][
        'k:{"name":"main"}']["f:ports"]  # fmt: skip
    assert list(ports) == ['k:{"containerPort":80,"protocol":"TCP"}']


def test_first_apply_to_an_unmanaged_object_keeps_its_fields_owned() -> None:
    out = ssa(deployment(), {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                             "spec": {"paused": True}}, "alice")  # fmt: skip
    managers = {e["manager"]: e["operation"] for e in out["metadata"]["managedFields"]}
    assert managers == {"alice": "Apply", "before-first-apply": "Update"}


def test_malformed_entries_sent_by_a_client_are_dropped_not_a_crash() -> None:
    old: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    M.track_update(None, old, req("creator", "v1"), CM)
    new = copy.deepcopy(old)
    new["metadata"]["managedFields"] = ["junk", {"manager": "x", "fieldsV1": "not an object"}]
    new["data"]["a"] = "2"
    M.track_update(old, new, req("editor", "v1"), CM)
    assert [e["manager"] for e in new["metadata"]["managedFields"]] == ["creator", "editor"]


def test_more_than_ten_update_managers_merge_the_oldest_into_ancient_changes() -> None:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    for i in range(12):
        new = copy.deepcopy(obj)
        new["data"][f"k{i}"] = "v"
        M.track_update(obj, new, M.Request(manager=f"m{i:02d}", api_version="v1", now=f"2026-01-01T00:00:{i:02d}Z"),
                       CM)  # fmt: skip
        obj = new
    entries = obj["metadata"]["managedFields"]
    assert len(entries) == 10
    ancient = next(e for e in entries if e["manager"] == "ancient-changes")
    assert set(ancient["fieldsV1"]["f:data"]) >= {"f:k0", "f:k1", "f:k2"}  # the three oldest, merged
    assert {e["manager"] for e in entries} == {"ancient-changes", *(f"m{i:02d}" for i in range(3, 12))}


EVENT = root_schema("io.k8s.api.core.v1.Event")
POD = root_schema("io.k8s.api.core.v1.Pod")


def _event(message: Any, count: Any = 1) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "namespace": "d", "name": "p", "uid": "u-1", "apiVersion": "v1"},
            "reason": "Scheduled", "message": message, "source": {"component": "default-scheduler"},
            "firstTimestamp": None, "lastTimestamp": None, "count": count, "type": "Normal",
            "reportingComponent": "default-scheduler", "reportingInstance": ""}  # fmt: skip


def _pod(image: str, extra: dict[str, Any], container: str = "c") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a", **extra}},
            "spec": {"containers": [{"name": container, "image": image, "ports": [{"containerPort": 80}]}],
                     "tolerations": [{"key": "k", "operator": "Exists"}], "nodeSelector": extra,
                     "hostNetwork": bool(extra), "priority": None}}  # fmt: skip


def _owned(obj: dict[str, Any], schema: Any, *, memo: bool) -> bytes:
    """managedFields of creating `obj`, with the create memo as it stands or emptied first (the walk itself)."""
    if not memo:
        M._created.clear()
    out = copy.deepcopy(obj)
    M.track_update(None, out, req("m", obj["apiVersion"]), schema)
    return json.dumps(out["metadata"].get("managedFields")).encode()


@pytest.mark.parametrize(
    ("schema", "variants"),
    [
        (
            EVENT,
            [
                _event("0/3 nodes"),
                _event("Successfully assigned d/p to n1", 7),
                _event(None, None),
                _event({}),
                _event({"a": 1}),
                _event(""),
                _event(True, 1.5),
                _event([1, 2]),
            ],
        ),
        (
            POD,
            [
                _pod("busybox", {}),
                _pod("nginx", {"zone": "a"}),
                _pod("nginx", {"zone": "b"}),
                _pod("x", {"zone": None}),
                _pod("x", {"zone": {}}),
                _pod("x", {"other": "a"}),
                _pod("x", {}, container="d"),
                _pod("y", {}, container="e"),
            ],
        ),
        (
            CM,
            [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": d}
                for d in ({"k": "v"}, {"k": "w"}, {"j": "v"}, {"k": "v", "j": "w"}, {}, {"k": None})
            ],
        ),
    ],
)
def test_create_field_sets_remembered_by_shape_equal_the_walk(schema: Any, variants: list[dict[str, Any]]) -> None:
    # objects of one shape with other values (every event's message differs) share the remembered set; objects
    # whose keys, list items or value kinds (scalar, null, {}, map, list) differ never do: byte for byte, the
    # managedFields of every create equal those of a walk with nothing remembered, whatever was created before
    walked = [_owned(v, schema, memo=False) for v in variants]
    M._created.clear()
    for order in (variants, list(reversed(variants)), variants + variants):
        for v in order:
            assert _owned(v, schema, memo=True) == walked[variants.index(v)]
    assert len({w for w in walked}) > 1  # the variants are not all one field set


LEASE = root_schema("io.k8s.api.coordination.v1.Lease")


def _updates() -> list[tuple[str, str, dict[str, Any]]]:
    """(manager, subresource, object) writes in order: renewals, status heartbeats, takeovers, removals."""
    lease: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n", "labels": {"a": "1"}},
        "spec": {"holderIdentity": "n", "leaseDurationSeconds": 40, "renewTime": "t0"}}  # fmt: skip
    out = [("kubelet", "", copy.deepcopy(lease))]
    for i in range(1, 4):  # the owner renews: only values it owns change
        lease["spec"]["renewTime"] = f"t{i}"
        out.append(("kubelet", "", copy.deepcopy(lease)))
    lease["spec"]["leaseDurationSeconds"] = 15  # another manager takes a field over
    out.append(("admin", "", copy.deepcopy(lease)))
    lease["spec"]["renewTime"] = "t9"
    lease["spec"]["leaseDurationSeconds"] = 40  # the owner changes it back: ownership moves again
    out.append(("kubelet", "", copy.deepcopy(lease)))
    lease["metadata"]["labels"]["a"] = "2"
    out.append(("kubelet", "", copy.deepcopy(lease)))  # a label the owner set
    del lease["metadata"]["labels"]
    out.append(("kubelet", "", copy.deepcopy(lease)))  # a removal
    lease["spec"]["renewTime"] = "t10"
    out.append(("other", "", copy.deepcopy(lease)))  # a manager with no entry yet
    return out


def _history(monkeypatch: pytest.MonkeyPatch, *, fast: bool) -> list[bytes]:
    real, taken = M._rewrites_own, []

    def spy(*args: Any) -> Any:
        kept = real(*args) if fast else None
        taken.append(kept is not None)
        return kept

    monkeypatch.setattr(M, "_rewrites_own", spy)
    old: dict[str, Any] | None = None
    seen = []
    for n, (manager, sub, obj) in enumerate(_updates()):
        new = copy.deepcopy(obj)
        M.track_update(old, new, M.Request(manager=manager, api_version="coordination.k8s.io/v1", subresource=sub,
                                           now=f"2026-01-01T00:00:{n:02d}Z"), LEASE)  # fmt: skip
        seen.append(json.dumps(new["metadata"].get("managedFields")).encode())
        old = new
    monkeypatch.undo()
    assert any(taken) == fast
    return seen


def test_an_owner_rewriting_its_own_fields_is_recorded_as_the_general_path_records_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the shortcut for renewals and heartbeats (only the writer's entry's time moves) gives byte for byte the
    # managedFields of the general path, for them and for the writes that move ownership around them
    fast, general = _history(monkeypatch, fast=True), _history(monkeypatch, fast=False)
    assert fast == general
    renewed = json.loads(fast[3])
    assert [(e["manager"], e["time"]) for e in renewed] == [("kubelet", "2026-01-01T00:00:03Z")]
    assert {e["manager"] for e in json.loads(fast[-1])} == {"kubelet", "other"}  # admin's field was taken back

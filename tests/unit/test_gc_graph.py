"""The garbage collector's dependency graph and its decision, without a server.

Each test feeds the graph what informers would see (metadata dicts) and checks
the `Effects` it answers with: which uids to look at, which owners to orphan,
which references cross namespaces.
"""

from __future__ import annotations

from typing import Any

import pytest

from skiff.controllers.gc_graph import (
    FOREGROUND,
    ORPHAN,
    AbsentOwners,
    DependencyGraph,
    Node,
    ObjectRef,
    OwnerRef,
    plan,
)

pytestmark = pytest.mark.timeout(10)

CM = ("v1", "ConfigMap")
RS = ("apps/v1", "ReplicaSet")
DEPLOY = ("apps/v1", "Deployment")
STAMP = "2026-01-01T00:00:00Z"


def meta(name: str, uid: str, *owners: dict[str, Any], ns: str = "ns", **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "uid": uid, "namespace": ns, **extra}
    if owners:
        m["ownerReferences"] = list(owners)
    return m


def ref(name: str, uid: str, kind: tuple[str, str] = CM, *, block: bool = False) -> dict[str, Any]:
    return {"apiVersion": kind[0], "kind": kind[1], "name": name, "uid": uid, "blockOwnerDeletion": block}


def test_owner_seen_after_its_dependent_starts_virtual() -> None:
    g = DependencyGraph()
    fx = g.observe(*RS, meta("web-1", "rs1", ref("web", "d1", DEPLOY)))
    assert fx.attempt_to_delete == ["d1"]  # verify that the owner exists
    owner = g.get("d1")
    assert owner is not None and not owner.observed and owner.dependents == {"rs1"}
    assert owner.identity == ObjectRef("Deployment", "apps/v1", "ns", "web", "d1")

    fx = g.observe(*DEPLOY, meta("web", "d1"))
    assert not fx
    assert owner.observed and [d.uid for d in g.dependents(owner)] == ["rs1"]


def test_observed_deletion_of_owner_enqueues_dependents_and_remembers_it_absent() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("owner", "o"))
    g.observe(*CM, meta("a", "a", ref("owner", "o")))
    g.observe(*CM, meta("b", "b", ref("owner", "o")))
    fx = g.observe_deleted(*CM, meta("owner", "o"))
    assert fx.attempt_to_delete == ["a", "b"]
    assert ObjectRef("ConfigMap", "v1", "ns", "owner", "o") in g.absent
    assert g.get("o") is None
    # a dependent gone: it leaves no trace among owners
    g.observe_deleted(*CM, meta("a", "a", ref("owner", "o")))
    assert g.get("a") is None


def test_orphan_finalizer_starts_orphaning_once() -> None:
    g = DependencyGraph()
    before = meta("owner", "o")
    g.observe(*CM, before)
    after = meta("owner", "o", deletionTimestamp=STAMP, finalizers=[ORPHAN])
    assert g.observe(*CM, after, before).attempt_to_orphan == ["o"]
    assert g.observe(*CM, after, after).attempt_to_orphan == []  # no new transition
    # first seen already waiting (a restart): orphan too
    assert DependencyGraph().observe(*CM, after).attempt_to_orphan == ["o"]


def test_foreground_deletion_marks_owner_and_enqueues_dependents() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("owner", "o"))
    g.observe(*CM, meta("blocker", "b", ref("owner", "o", block=True)))
    g.observe(*CM, meta("loose", "l", ref("owner", "o")))
    fx = g.observe(*CM, meta("owner", "o", deletionTimestamp=STAMP, finalizers=[FOREGROUND]), meta("owner", "o"))
    owner = g.get("o")
    assert owner is not None and owner.deleting_dependents and owner.being_deleted
    assert fx.attempt_to_delete == ["b", "l", "o"]
    assert [d.uid for d in g.blocking_dependents(owner)] == ["b"]
    # the blocking dependent goes: the owner is looked at again
    fx = g.observe_deleted(*CM, meta("blocker", "b", ref("owner", "o", block=True)))
    assert fx.attempt_to_delete == ["o"]
    assert g.blocking_dependents(owner) == []


def test_reference_changes_unblock_waiting_owner() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("owner", "o"))
    g.observe(*CM, meta("other", "x"))
    g.observe(*CM, meta("dep", "d", ref("owner", "o", block=True), ref("other", "x", block=True)))
    fx = g.observe(*CM, meta("dep", "d", ref("owner", "o"), ref("new", "n")))
    assert fx.attempt_to_delete == ["x", "o", "n"]  # removed blocking ref, unblocked ref, virtual new owner
    owner, other = g.get("o"), g.get("x")
    assert owner is not None and other is not None
    assert owner.dependents == {"d"} and other.dependents == set()
    assert g.blocking_dependents(owner) == []


def test_unchanged_update_has_no_effects() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("owner", "o"))
    m = meta("dep", "d", ref("owner", "o"))
    g.observe(*CM, m)
    assert not g.observe(*CM, m, m)


def test_cross_namespace_owner_seen_first_is_reported() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("owner", "o", ns="a"))
    fx = g.observe(*CM, meta("dep", "d", ref("owner", "o"), ns="b"))
    assert fx.attempt_to_delete == ["d"]
    dep, owner_ref = fx.invalid_namespace[0]
    assert (dep.namespace, dep.name, owner_ref.uid) == ("b", "dep", "o")
    assert str(owner_ref.identity(dep.namespace)) == "[v1/ConfigMap, namespace: b, name: owner, uid: o]"


def test_cross_namespace_dependent_seen_first_is_reported_when_owner_appears() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("dep", "d", ref("owner", "o"), ns="b"))
    g.observe(*CM, meta("ok", "k", ref("owner", "o"), ns="a"))
    fx = g.observe(*CM, meta("owner", "o", ns="a"))
    assert [(d.name, r.uid) for d, r in fx.invalid_namespace] == [("dep", "o")]
    assert fx.attempt_to_delete == ["d"]
    node = g.get("o")
    assert node is not None and node.identity.namespace == "a"


def test_cluster_scoped_owner_may_own_namespaced_dependents() -> None:
    g = DependencyGraph()
    g.observe("v1", "Node", meta("n1", "node1", ns=""))
    fx = g.observe(*CM, meta("dep", "d", ref("n1", "node1", ("v1", "Node"))))
    assert not fx


def test_virtual_delete_of_verified_absent_owner() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("a", "a", ref("gone", "g")))
    g.observe(*CM, meta("b", "b", ref("gone", "g")))
    node = g.get("g")
    assert node is not None
    fx = g.virtual_delete(node.identity)
    assert fx.attempt_to_delete == ["a", "b"]
    assert g.get("g") is None and node.identity in g.absent


def test_virtual_delete_with_dependents_disagreeing_on_coordinates() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("a", "a", ref("gone", "g")))
    g.observe(*CM, meta("b", "b", ref("gone", "g", RS)))  # same uid, another kind
    node = g.get("g")
    assert node is not None and node.identity.kind == "ConfigMap"
    fx = g.virtual_delete(node.identity)
    assert fx.attempt_to_delete == ["a"]  # the dependents that named what is verified absent
    assert fx.attempt_to_delete_later == ["g"]  # the other coordinates get verified next
    assert node.identity == ObjectRef("ReplicaSet", "apps/v1", "ns", "gone", "g")
    fx = g.virtual_delete(node.identity)
    assert fx.attempt_to_delete == ["b"]  # the ConfigMap dependent already matches an absent identity


def test_virtual_delete_of_other_coordinates_keeps_observed_node() -> None:
    g = DependencyGraph()
    g.observe(*CM, meta("owner", "o"))
    g.observe(*CM, meta("good", "gd", ref("owner", "o")))
    g.observe(*CM, meta("bad", "bd", ref("owner", "o", RS)))
    fx = g.virtual_delete(ObjectRef("ReplicaSet", "apps/v1", "ns", "owner", "o"))
    assert fx.attempt_to_delete == ["bd"]
    assert g.get("o") is not None


def test_absent_owners_is_bounded() -> None:
    absent = AbsentOwners(size=2)
    refs = [ObjectRef("ConfigMap", "v1", "ns", f"n{i}", f"u{i}") for i in range(3)]
    for r in refs:
        absent.add(r)
    assert refs[0] not in absent and refs[1] in absent and refs[2] in absent and len(absent) == 2


def _owner(uid: str) -> OwnerRef:
    return OwnerRef("v1", "ConfigMap", uid, uid)


ITEM = Node(ObjectRef("ConfigMap", "v1", "ns", "item", "i"), observed=True)


@pytest.mark.parametrize(
    ("solid", "dangling", "waiting", "fins", "deps", "expected"),
    [
        (["a"], [], [], [], [], ("keep", (), None, False)),
        (["a"], ["b"], ["c"], [], [], ("remove_refs", ("b", "c"), None, False)),
        ([], ["b"], [], [], [], ("delete", (), "Background", False)),
        ([], ["b"], [], [ORPHAN], [], ("delete", (), "Orphan", False)),
        ([], ["b"], [], [FOREGROUND], [], ("delete", (), "Foreground", False)),
        ([], [], ["c"], [], [], ("delete", (), "Background", False)),
        ([], [], ["c"], [], ["plain"], ("delete", (), "Foreground", False)),
        ([], ["b"], ["c"], [], ["deleting"], ("delete", (), "Foreground", True)),
    ],
    ids=["solid", "solid-and-dangling", "all-dangling", "orphan-finalizer", "foreground-finalizer",
         "waiting-leaf", "waiting-with-dependents", "waiting-cycle-guard"],
)  # fmt: skip
def test_plan(
    solid: list[str],
    dangling: list[str],
    waiting: list[str],
    fins: list[str],
    deps: list[str],
    expected: tuple[str, tuple[str, ...], str | None, bool],
) -> None:
    dependents = [
        Node(ObjectRef("ConfigMap", "v1", "ns", d, d), observed=True, deleting_dependents=d == "deleting") for d in deps
    ]
    p = plan(
        ITEM, fins, solid=map(_owner, solid), dangling=map(_owner, dangling), waiting=map(_owner, waiting),
        dependents=dependents,
    )  # fmt: skip
    assert (p.action, p.remove_uids, p.policy, p.unblock_first) == expected

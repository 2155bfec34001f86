"""The pure logic of the Deployment and ReplicaSet controllers: hashes, fenceposts, revisions, scaling, status.

Cases follow Kubernetes' own tables (pkg/controller/deployment/util and
sync_test.go) where they exist, so that the arithmetic is Kubernetes'.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skiff.api import errors
from skiff.controllers import deployment_status as ds
from skiff.controllers import deployment_util as du
from skiff.controllers.podcontrol import pods_prefix, slow_start_batch
from skiff.controllers.podranking import pods_to_delete
from skiff.controllers.replicaset import calculate_status as rs_status

pytestmark = pytest.mark.timeout(10)

Obj = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def template(image: str = "web:1", labels: dict[str, str] | None = None) -> Obj:
    return {"metadata": {"labels": labels or {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": image}]}}


def deploy(replicas: int = 10, *, surge: Any = "25%", unavailable: Any = "25%", strategy: str = "RollingUpdate",
           generation: int = 1, status: Obj | None = None, **spec: Any) -> Obj:  # fmt: skip
    strat: Obj = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template(),
                 "strategy": strat, "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10, **spec},
        "status": status or {},
    }  # fmt: skip


def rs(name: str, replicas: int, *, revision: int | None = None, created: int = 0, available: int = 0,
       max_replicas: int | None = None, desired: int | None = None, image: str = "web:1") -> Obj:  # fmt: skip
    annotations: dict[str, str] = {}
    if revision is not None:
        annotations[du.REVISION_ANNOTATION] = str(revision)
    if max_replicas is not None:
        annotations[du.MAX_REPLICAS_ANNOTATION] = str(max_replicas)
    if desired is not None:
        annotations[du.DESIRED_REPLICAS_ANNOTATION] = str(desired)
    return {
        "metadata": {"name": name, "uid": f"{name}-uid", "annotations": annotations,
                     "creationTimestamp": stamp(T0 + timedelta(seconds=created))},
        "spec": {"replicas": replicas, "template": template(image)},
        "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available},
    }  # fmt: skip


# --- hashing -------------------------------------------------------------------------------------


def test_fnv32a_reference_values() -> None:
    assert du.fnv32a(b"") == 0x811C9DC5
    assert du.fnv32a(b"a") == 0xE40C292C
    assert du.fnv32a(b"foobar") == 0xBF9CF968


def test_safe_encode_string_has_no_vowels() -> None:
    assert du.safe_encode_string("0123456789") == "456789bcdf"
    assert du.safe_encode_string("") == ""


def test_hash_is_stable_and_sensitive() -> None:
    t = template()
    h = du.compute_hash(t, None)
    assert h == du.compute_hash(copy.deepcopy(t), None)
    assert set(h) <= set("456789bcdf") and 1 <= len(h) <= 10
    reordered = {"spec": t["spec"], "metadata": t["metadata"]}
    assert du.compute_hash(reordered, None) == h
    with_empty = copy.deepcopy(t)
    with_empty["metadata"]["annotations"] = {}
    assert du.compute_hash(with_empty, None) == h  # nil and empty are the same to Kubernetes
    assert du.compute_hash(template("web:2"), None) != h
    assert du.compute_hash(t, 0) != h and du.compute_hash(t, 1) != du.compute_hash(t, 0)


def test_equal_ignore_hash() -> None:
    a = template()
    b = du.new_rs_template({"spec": {"template": a}}, "abc")
    assert b["metadata"]["labels"] == {"app": "web", du.POD_TEMPLATE_HASH_LABEL: "abc"}
    assert a["metadata"]["labels"] == {"app": "web"}  # not changed
    assert du.equal_ignore_hash(a, b)
    assert not du.equal_ignore_hash(a, template("web:2"))


# --- surge and unavailability --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("25%", "25%", 10, (3, 2)),
        ("25%", "25%", 1, (1, 0)),
        ("25%", "25%", 4, (1, 1)),
        ("50%", "50%", 3, (2, 1)),
        (1, 0, 3, (1, 0)),
        (0, 0, 5, (0, 1)),
        ("0%", "0%", 5, (0, 1)),
        ("10%", "10%", 0, (0, 1)),
        (2, "30%", 10, (2, 3)),
    ],
    ids=["default-10", "default-1", "default-4", "half-3", "ints", "zero-zero", "zero-percent", "no-replicas", "mixed"],
)
def test_resolve_fenceposts(surge: Any, unavailable: Any, desired: int, expected: tuple[int, int]) -> None:
    assert du.resolve_fenceposts(surge, unavailable, desired) == expected


def test_scaled_value_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        du.scaled_value("lots", 10, round_up=True)
    with pytest.raises(ValueError):
        du.scaled_value("x%", 10, round_up=True)
    assert du.scaled_value("3", 10, round_up=True) == 3


def test_max_unavailable_and_surge() -> None:
    assert du.max_unavailable(deploy(3, unavailable=10)) == 3  # never more than the replicas
    assert du.max_unavailable(deploy(0)) == 0
    assert du.max_unavailable(deploy(10, strategy="Recreate")) == 0
    assert du.max_surge(deploy(10, strategy="Recreate")) == 0
    assert (du.max_surge(deploy(10)), du.max_unavailable(deploy(10))) == (3, 2)


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [(0, 10, 3), (3, 10, 3), (3, 7, 6), (8, 2, 10), (10, 0, 10)],
    ids=["start", "at-surge-limit", "after-scale-down", "capped-at-replicas", "done"],
)
def test_new_rs_new_replicas(new: int, old: int, expected: int) -> None:
    d = deploy(10)  # surge 3
    new_rs, old_rs = rs("new", new), rs("old", old)
    assert du.new_rs_new_replicas(d, [old_rs, new_rs], new_rs) == expected
    assert du.new_rs_new_replicas(deploy(10, strategy="Recreate"), [old_rs, new_rs], new_rs) == 10


# --- revisions and annotations -------------------------------------------------------------------


def test_revision_ordering() -> None:
    a, b, c = rs("a", 0, revision=3, created=1), rs("b", 0, revision=10, created=0), rs("c", 0, revision=3, created=0)
    none = rs("none", 0, created=5)
    assert [r["metadata"]["name"] for r in du.by_revision([a, b, c, none])] == ["none", "c", "a", "b"]
    assert du.max_revision([a, b, c, none, None]) == 10
    assert du.max_revision([]) == 0
    garbage = rs("bad", 0, created=9)
    garbage["metadata"]["annotations"][du.REVISION_ANNOTATION] = "x"
    assert du.revision(garbage) == -1
    assert du.by_revision([b, garbage])[0]["metadata"]["name"] == "b"  # unparsable: ordered by creation


def test_size_orderings() -> None:
    old, new, big = rs("old", 2, created=0), rs("new", 2, created=5), rs("big", 5, created=3)
    assert [r["metadata"]["name"] for r in du.by_size_newer([old, new, big])] == ["big", "new", "old"]
    assert [r["metadata"]["name"] for r in du.by_size_older([old, new, big])] == ["big", "old", "new"]


def test_find_new_and_old_rss() -> None:
    d = deploy(3)
    older_match, newer_match = rs("m1", 1, created=0), rs("m2", 1, created=9)
    other, idle = rs("o", 2, image="web:0"), rs("i", 0, image="web:-1")
    assert du.find_new_rs(d, [newer_match, other, older_match]) is older_match
    with_pods, everything = du.find_old_rss(d, [other, idle, older_match])
    assert with_pods == [other] and everything == [other, idle]
    assert du.find_new_rs(d, [other]) is None


def test_new_rs_annotations() -> None:
    d = deploy(10)
    d["metadata"]["annotations"] = {
        du.CHANGE_CAUSE_ANNOTATION: "kubectl set image",
        du.LAST_APPLIED_ANNOTATION: "{}",
        du.REVISION_ANNOTATION: "7",
    }
    fresh: Obj = {"metadata": {}}
    assert du.set_new_rs_annotations(d, fresh, 4, exists=False)
    assert fresh["metadata"]["annotations"] == {
        du.CHANGE_CAUSE_ANNOTATION: "kubectl set image",
        du.REVISION_ANNOTATION: "4",
        du.DESIRED_REPLICAS_ANNOTATION: "10",
        du.MAX_REPLICAS_ANNOTATION: "13",
    }
    assert not du.set_new_rs_annotations(d, fresh, 4, exists=True)  # nothing new
    # a rolled-back ReplicaSet gets the next revision and remembers its old ones
    reused = rs("r", 0, revision=1)
    assert du.set_new_rs_annotations(d, reused, 3, exists=True)
    annotations = reused["metadata"]["annotations"]
    assert annotations[du.REVISION_ANNOTATION] == "3" and annotations[du.REVISION_HISTORY_ANNOTATION] == "1"
    assert du.set_new_rs_annotations(d, reused, 5, exists=True)
    assert annotations[du.REVISION_HISTORY_ANNOTATION] == "1,3"
    assert du.DESIRED_REPLICAS_ANNOTATION not in annotations  # only set on creation (or when scaling)


# --- proportional scaling (sync_test.go TestScale) -------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "old_replicas", "new", "old", "expected_new", "expected_old"),
    [
        (10, 5, 3, 2, 6, 4),
        (3, 5, 3, 2, 2, 1),
        (8, 10, 8, 2, 6, 2),
        (0, 5, 3, 2, 0, 0),
    ],
    ids=["5-to-10", "5-to-3", "10-to-8", "to-zero"],
)
def test_proportional_sizes(
    replicas: int, old_replicas: int, new: int, old: int, expected_new: int, expected_old: int
) -> None:
    d = deploy(replicas, surge=0, unavailable=0, status={"replicas": new + old})
    new_rs = rs("v2", new, created=5, max_replicas=old_replicas)
    old_rs = rs("v1", old, created=0, max_replicas=old_replicas)
    sizes, operation = du.proportional_sizes(d, [old_rs, new_rs])
    assert sizes == {"v2": expected_new, "v1": expected_old}
    assert operation == ("up" if replicas > old_replicas else "down")


def test_proportional_leftover_goes_to_the_first() -> None:
    d = deploy(4, surge=0, unavailable=0, status={"replicas": 3})
    rss = [rs(n, 1, created=i, max_replicas=3) for i, n in enumerate("abc")]
    # each share rounds to 0; the replica left over goes to the first in order: the newest of equals
    assert du.proportional_sizes(d, rss) == ({"a": 1, "b": 1, "c": 2}, "up")


def test_active_or_latest_and_saturation() -> None:
    a, b, idle = rs("a", 3, created=0), rs("b", 1, created=2), rs("idle", 0, created=4)
    assert du.find_active_or_latest(None, [a, idle]) is a
    assert du.find_active_or_latest(b, [a]) is None  # two active: a rollout is in flight
    assert du.find_active_or_latest(None, [idle, rs("idle2", 0, created=1)]) is idle  # the newest
    d = deploy(3)
    assert du.is_saturated(d, rs("n", 3, available=3, desired=3))
    assert not du.is_saturated(d, rs("n", 3, available=2, desired=3))
    assert not du.is_saturated(d, rs("n", 3, available=3))


# --- status and conditions -----------------------------------------------------------------------


def test_calculate_status() -> None:
    d = deploy(4, generation=3)  # maxUnavailable 1
    new_rs, old_rs = rs("new", 2, available=1), rs("old", 2, available=2)
    status = ds.calculate_status([old_rs, new_rs], new_rs, d, now="2026-01-01T00:00:00Z")
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 3, "replicas": 4, "updatedReplicas": 2, "readyReplicas": 3,
        "availableReplicas": 3, "unavailableReplicas": 1}  # fmt: skip
    [available] = status["conditions"]
    assert (available["type"], available["status"], available["reason"]) == (
        "Available",
        "True",
        ds.MIN_AVAILABLE_REASON,
    )
    short = ds.calculate_status([rs("x", 4, available=2)], None, d)
    assert ds.get_condition(short, "Available")["reason"] == ds.MIN_UNAVAILABLE_REASON
    empty = ds.calculate_status([], None, deploy(0))
    assert "replicas" not in empty and "unavailableReplicas" not in empty  # zeros omitted (omitempty)


def test_set_condition_keeps_transition_time() -> None:
    status: Obj = {}
    ds.set_condition(status, ds.new_condition("Progressing", "True", ds.NEW_RS_REASON, "created", now="t1"))
    ds.set_condition(status, ds.new_condition("Progressing", "True", ds.NEW_RS_REASON, "again", now="t2"))
    assert status["conditions"][0]["message"] == "created"  # same status and reason: unchanged
    ds.set_condition(status, ds.new_condition("Progressing", "True", ds.RS_UPDATED_REASON, "progressing", now="t3"))
    [cond] = status["conditions"]
    assert (cond["reason"], cond["lastUpdateTime"], cond["lastTransitionTime"]) == (ds.RS_UPDATED_REASON, "t3", "t1")
    ds.set_condition(status, ds.new_condition("Progressing", "False", ds.TIMED_OUT_REASON, "stuck", now="t4"))
    assert status["conditions"][0]["lastTransitionTime"] == "t4"
    ds.remove_condition(status, "Progressing")
    assert "conditions" not in status


def test_complete_progressing_timed_out() -> None:
    d = deploy(3, generation=2, status={"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3})
    done = {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "observedGeneration": 2}
    assert ds.deployment_complete(d, done)
    assert not ds.deployment_complete(d, {**done, "observedGeneration": 1})
    assert ds.deployment_progressing(d, {"replicas": 4, "updatedReplicas": 2, "availableReplicas": 3})
    assert ds.deployment_progressing(d, {"replicas": 3, "updatedReplicas": 1, "availableReplicas": 3})  # old went
    assert not ds.deployment_progressing(d, {"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3})
    cond = ds.new_condition("Progressing", "True", ds.RS_UPDATED_REASON, "", now=stamp(T0))
    status = {"conditions": [cond]}
    assert not ds.deployment_timed_out(d, status, now=T0 + timedelta(seconds=599))
    assert ds.deployment_timed_out(d, status, now=T0 + timedelta(seconds=601))
    assert ds.deployment_timed_out(deploy(3), {"conditions": [{**cond, "reason": ds.TIMED_OUT_REASON}]})
    d["status"]["conditions"] = [cond]
    assert ds.seconds_to_deadline(d, status, now=T0 + timedelta(seconds=100)) == pytest.approx(500)
    no_deadline = deploy(3, progressDeadlineSeconds=2**31 - 1)
    assert not ds.has_progress_deadline(no_deadline) and not ds.deployment_timed_out(no_deadline, status)


# --- ReplicaSet: status, which pods go first, slow start ------------------------------------------


def pod(name: str, *, node: str = "n1", phase: str = "Running", ready_at: datetime | None = T0, created: int = 0,
        cost: int | None = None, restarts: int = 0, labels: dict[str, str] | None = None) -> Obj:  # fmt: skip
    conditions = []
    if ready_at is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": stamp(ready_at)})
    meta: Obj = {"name": name, "uid": name, "labels": labels or {"app": "web"},
                 "creationTimestamp": stamp(T0 + timedelta(seconds=created))}  # fmt: skip
    if cost is not None:
        meta["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions, "containerStatuses": [{"restartCount": restarts}]},
    }


def names(pods: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_pods_to_delete_ranking() -> None:
    now = T0 + timedelta(days=10)
    unscheduled = pod("unscheduled", node="", phase="Pending", ready_at=None)
    pending = pod("pending", phase="Pending", ready_at=None)
    not_ready = pod("not-ready", ready_at=None)
    cheap = pod("cheap", cost=-10)
    old = pod("old", ready_at=T0, created=0)
    young = pod("young", ready_at=now - timedelta(seconds=5), created=86_000)
    given = [old, young, cheap, not_ready, pending, unscheduled]
    assert names(pods_to_delete(given, given, 6, now=now)) == names(given)  # all of them: no sorting needed
    expected = ["unscheduled", "pending", "not-ready", "cheap", "young"]  # the newest of the ready ones
    assert names(pods_to_delete(given, given, 5, now=now)) == expected
    assert names(pods_to_delete(given, given, 3, now=now)) == expected[:3]
    # with nothing else to tell them apart: the one doubled up with siblings on its node goes first
    alone, crowded = pod("alone", node="a"), pod("crowded", node="b")
    related = [alone, crowded, pod("sibling", node="b")]
    assert names(pods_to_delete([alone, crowded], related, 1, now=now)) == ["crowded"]
    # then the most restarted
    calm, flappy = pod("calm"), pod("flappy", restarts=4)
    assert names(pods_to_delete([calm, flappy], [], 1, now=now)) == ["flappy"]


def test_replicaset_status() -> None:
    rs_obj: Obj = {
        "metadata": {"name": "web-1", "generation": 2},
        "spec": {"replicas": 3, "minReadySeconds": 30,
                 "template": {"metadata": {"labels": {"app": "web", "tier": "a"}}}},
        "status": {"observedGeneration": 1},
    }  # fmt: skip
    now = T0 + timedelta(minutes=5)
    pods = [
        pod("a", labels={"app": "web", "tier": "a"}),
        pod("b", labels={"app": "web"}, ready_at=now - timedelta(seconds=5)),
        pod("c", labels={"app": "web", "tier": "a"}, ready_at=None),
    ]
    status = rs_status(rs_obj, pods, None, now)
    assert status == {"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 1,
                      "observedGeneration": 1}  # fmt: skip
    failed = rs_status(rs_obj, pods[:1], errors.Forbidden("quota exceeded"), now)
    [cond] = failed["conditions"]
    assert (cond["type"], cond["reason"], cond["message"]) == ("ReplicaFailure", "FailedCreate", "quota exceeded")
    recovered = rs_status({**rs_obj, "status": failed}, pods, None, now)
    assert "conditions" not in recovered
    assert rs_status({**rs_obj, "status": {}}, [], None, now) == {"replicas": 0}  # replicas is never omitted


async def test_slow_start_batch_stops_after_a_failing_batch() -> None:
    calls = 0

    async def create() -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise errors.Forbidden("quota exceeded")
        await asyncio.sleep(0)

    successes, error = await slow_start_batch(20, create)
    assert calls == 7 and successes == 6  # batches of 1, 2, 4; the third had the failure
    assert isinstance(error, errors.Forbidden)
    calls = 0
    assert await slow_start_batch(3, create) == (3, None)
    assert await slow_start_batch(0, create) == (0, None)


def test_pods_prefix_leaves_room_for_the_suffix() -> None:
    assert pods_prefix("web-5d4f8b9c7") == "web-5d4f8b9c7-"
    long = pods_prefix("x" * 70)
    assert len(long) == 58 and long.endswith("-")

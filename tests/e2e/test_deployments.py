"""Deployments and ReplicaSets converge, end to end: real kubectl, the Python client, simulated nodes.

The `server` fixture runs the ReplicaSet and Deployment controllers and the
scheduler in-process; `skiff sim nodes` reports the pods bound to its nodes
Running and Ready. The pods of these tests are held to this module's nodes by
a required node affinity, so a node another test left behind cannot take them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.cluster import Server, SimNodes
from tests.e2e.history import Recording

pytestmark = pytest.mark.timeout(120)

NS_PREFIX = "dep-"
SIM_PREFIX = f"dep-sim-{uuid.uuid4().hex[:4]}"
SIM_NODES = [f"{SIM_PREFIX}-{i}" for i in range(3)]
ON_OUR_NODES = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": SIM_NODES}]}
            ]
        }
    }
}
REVISION = "deployment.kubernetes.io/revision"


# --- helpers -------------------------------------------------------------------------------------


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get(server: Server, path: str) -> Any:
    code, body, _ = server.raw("GET", path)
    return body if code == 200 else None


def items(server: Server, path: str) -> list[dict[str, Any]]:
    code, body, _ = server.raw("GET", path)
    assert code == 200, body
    return list(body["items"])


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods not being deleted."""
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def owner(obj: dict[str, Any]) -> dict[str, Any]:
    refs = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")]
    return refs[0] if refs else {}


def deployment(name: str, *, image: str = "registry.local/web:1", replicas: int = 3, **spec: Any) -> str:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": image}],
                    "terminationGracePeriodSeconds": 5,
                    "affinity": ON_OUR_NODES,
                },
            },
            **spec,
        },
    }
    return json.dumps(body)


@pytest.fixture(scope="module")
def nodes(server: Server) -> Iterator[SimNodes]:
    """Three simulated nodes for the whole module."""
    sim = server.sim_nodes(3, prefix=SIM_PREFIX)
    yield sim
    sim.stop()
    sim.delete_nodes()


@pytest.fixture
def ns(server: Server, nodes: SimNodes) -> Iterator[str]:
    name = f"{NS_PREFIX}{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    yield name
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


def replica_sets(server: Server, ns: str, app: str) -> list[dict[str, Any]]:
    return items(server, f"/apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=app%3D{app}")


def pods_of(server: Server, ns: str, selector: str) -> list[dict[str, Any]]:
    return items(server, f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")


def by_revision(rss: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rs["metadata"]["annotations"][REVISION]: rs for rs in rss}


def events(server: Server, ns: str, name: str) -> list[str]:
    evs = items(server, f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}")
    return [f"{e['reason']}: {e['message']}" for e in evs]


def wait_event(server: Server, ns: str, name: str, match: str | Callable[[str], bool]) -> None:
    """Wait for an Event on `name` (events are written in the background, just after the act)."""
    test = (lambda e: e == match) if isinstance(match, str) else match
    wait_for(f"event {match!r} on {name}", lambda: any(test(e) for e in events(server, ns, name)))


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


# --- tests ---------------------------------------------------------------------------------------


def test_rollout_history_undo_and_scale(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("web"))
    out = server.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    [rs1] = replica_sets(server, ns, "web")
    hash1 = rs1["metadata"]["labels"]["pod-template-hash"]
    assert rs1["metadata"]["name"] == f"web-{hash1}"
    assert rs1["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": hash1}
    assert rs1["metadata"]["annotations"][REVISION] == "1"
    assert rs1["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "3"
    assert rs1["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "4"  # 3 + 25% surge, rounded up
    d = get(server, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert owner(rs1)["uid"] == d["metadata"]["uid"] and owner(rs1)["blockOwnerDeletion"] is True
    assert d["metadata"]["annotations"][REVISION] == "1"
    status = d["status"]
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"]) == (
        3, 3, 3, 3)  # fmt: skip
    assert status["observedGeneration"] == d["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    pods = pods_of(server, ns, "app%3Dweb")
    assert len(pods) == 3 and all(p["metadata"]["name"].startswith(f"web-{hash1}-") for p in pods)
    assert all(len(p["metadata"]["name"]) == len(f"web-{hash1}-") + 5 for p in pods)
    assert all(owner(p)["name"] == rs1["metadata"]["name"] and owner(p)["kind"] == "ReplicaSet" for p in pods)
    wait_event(server, ns, "web", f"ScalingReplicaSet: Scaled up replica set web-{hash1} from 0 to 3")
    wait_event(server, ns, f"web-{hash1}", lambda e: e.startswith("SuccessfulCreate: Created pod: web-"))

    # a new image rolls out through a second ReplicaSet
    server.kubectl("set", "image", "-n", ns, "deployment/web", "app=registry.local/web:2")
    server.kubectl("annotate", "-n", ns, "deployment/web", "kubernetes.io/change-cause=image 2")
    server.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    rss = by_revision(replica_sets(server, ns, "web"))
    assert set(rss) == {"1", "2"}
    assert rss["1"]["metadata"]["name"] == rs1["metadata"]["name"] and rss["1"]["spec"]["replicas"] == 0
    assert rss["2"]["spec"]["replicas"] == 3 and image_of(rss["2"]) == "registry.local/web:2"
    assert rss["2"]["metadata"]["annotations"]["kubernetes.io/change-cause"] == "image 2"
    wait_for("only new pods", lambda: {owner(p)["name"] for p in pods_of(server, ns, "app%3Dweb")}
             == {rss["2"]["metadata"]["name"]})  # fmt: skip
    history = server.kubectl("rollout", "history", "-n", ns, "deployment/web").stdout
    lines = [line.split(None, 1) for line in history.splitlines()[2:] if line.strip()]
    assert lines == [["1", "<none>"], ["2", "image 2"]], history
    hash2 = rss["2"]["metadata"]["labels"]["pod-template-hash"]
    wait_event(server, ns, "web", f"ScalingReplicaSet: Scaled up replica set web-{hash2} from 0 to 1")
    wait_event(server, ns, "web", f"ScalingReplicaSet: Scaled down replica set web-{hash1} from 3 to 2")

    # undo: the first ReplicaSet is the new one again, as revision 3
    server.kubectl("rollout", "undo", "-n", ns, "deployment/web")
    server.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    d = get(server, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert image_of(d) == "registry.local/web:1"
    assert "pod-template-hash" not in d["spec"]["template"]["metadata"]["labels"]
    rss = by_revision(replica_sets(server, ns, "web"))
    assert set(rss) == {"2", "3"}
    assert rss["3"]["metadata"]["name"] == rs1["metadata"]["name"] and rss["3"]["spec"]["replicas"] == 3
    assert rss["3"]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert rss["2"]["spec"]["replicas"] == 0
    assert wait_for("revision 3 on the deployment",
                    lambda: get(server, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["metadata"]["annotations"]
                    .get(REVISION) == "3")  # fmt: skip
    history = server.kubectl("rollout", "history", "-n", ns, "deployment/web").stdout
    assert [line.split(None, 1)[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"], history

    # scale up and down: the pods follow
    server.kubectl("scale", "-n", ns, "deployment/web", "--replicas=5")
    wait_for("5 ready pods", lambda: len([p for p in live(pods_of(server, ns, "app%3Dweb")) if ready(p)]) == 5)
    server.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s")
    server.kubectl("scale", "-n", ns, "deployment/web", "--replicas=2")
    wait_for("2 pods", lambda: len(live(pods_of(server, ns, "app%3Dweb"))) == 2)
    rs = get(server, f"/apis/apps/v1/namespaces/{ns}/replicasets/{rs1['metadata']['name']}")
    assert rs["spec"]["replicas"] == 2
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "2"
    wait_for("deployment status 2/2", lambda: (get(server, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["status"]
                                               .get("replicas") == 2))  # fmt: skip
    row = server.kubectl("get", "deployment", "web", "-n", ns, "--no-headers").stdout.split()
    assert row[:4] == ["web", "2/2", "2", "2"]


def test_recreate_never_overlaps(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("rec", replicas=2, strategy={"type": "Recreate"}))
    server.kubectl("rollout", "status", "-n", ns, "deployment/rec", "--timeout=60s")
    [old] = replica_sets(server, ns, "rec")
    old_name = old["metadata"]["name"]
    # every state the pods go through, replayed from their watch history (a poll can miss a brief one)
    recording = Recording(server, f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Drec")
    server.kubectl("set", "image", "-n", ns, "deployment/rec", "app=registry.local/web:2")
    server.kubectl("rollout", "status", "-n", ns, "deployment/rec", "--timeout=60s")
    samples = [{owner(p).get("name", "") for p in state.values()} for state in recording.states()]
    rss = by_revision(replica_sets(server, ns, "rec"))
    new_name = rss["2"]["metadata"]["name"]
    assert rss["1"]["metadata"]["name"] == old_name and rss["1"]["spec"]["replicas"] == 0
    # old pods (even terminating ones) are all gone before the first new pod exists
    assert not any(old_name in s and new_name in s for s in samples), samples
    assert any(s == {new_name} for s in samples)
    assert [owner(p)["name"] for p in pods_of(server, ns, "app%3Drec")] == [new_name, new_name]


def test_pause_and_resume(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("paused", replicas=2))
    server.kubectl("rollout", "status", "-n", ns, "deployment/paused", "--timeout=60s")
    server.kubectl("rollout", "pause", "-n", ns, "deployment/paused")
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/paused"

    def progressing(reason: str) -> bool:
        conds = get(server, path)["status"].get("conditions", [])
        return any(c["type"] == "Progressing" and c["reason"] == reason for c in conds)

    wait_for("DeploymentPaused", lambda: progressing("DeploymentPaused"))
    server.kubectl("set", "image", "-n", ns, "deployment/paused", "app=registry.local/web:2")
    server.kubectl("scale", "-n", ns, "deployment/paused", "--replicas=3")
    # paused: the scale is applied to the current ReplicaSet, but nothing rolls out
    wait_for("3 pods", lambda: len(live(pods_of(server, ns, "app%3Dpaused"))) == 3)
    # once the controller has observed the last generation (its status write trails the scale), it has
    # decided on the paused spec: no second ReplicaSet comes
    d = wait_for("the paused spec observed", lambda: (
        (d := get(server, path))["status"].get("observedGeneration") == d["metadata"]["generation"] and d))
    [rs] = replica_sets(server, ns, "paused")
    assert image_of(rs) == "registry.local/web:1" and rs["spec"]["replicas"] == 3
    assert d["status"].get("updatedReplicas", 0) == 0
    server.kubectl("rollout", "resume", "-n", ns, "deployment/paused")
    server.kubectl("rollout", "status", "-n", ns, "deployment/paused", "--timeout=60s")
    rss = by_revision(replica_sets(server, ns, "paused"))
    assert image_of(rss["2"]) == "registry.local/web:2" and rss["2"]["spec"]["replicas"] == 3
    assert rss["1"]["spec"]["replicas"] == 0


def test_progress_deadline_exceeded(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("stuck", replicas=2, progressDeadlineSeconds=2))
    server.kubectl("rollout", "status", "-n", ns, "deployment/stuck", "--timeout=60s")
    # the new pods never become Ready
    patch = {"spec": {"template": {"metadata": {"annotations": {"sim.skiff.dev/not-ready": "true"}}}}}
    server.kubectl("patch", "-n", ns, "deployment/stuck", "-p", json.dumps(patch))
    proc = server.kubectl("rollout", "status", "-n", ns, "deployment/stuck", "--timeout=60s", check=False)
    assert proc.returncode != 0
    assert 'deployment "stuck" exceeded its progress deadline' in proc.stderr
    d = get(server, f"/apis/apps/v1/namespaces/{ns}/deployments/stuck")
    cond = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert cond["message"].endswith("has timed out progressing.")
    # the old pods stay: with 2 replicas, 25% rounds to maxSurge 1 and maxUnavailable 0
    assert d["status"]["availableReplicas"] == 2
    rss = by_revision(replica_sets(server, ns, "stuck"))
    assert (rss["1"]["spec"]["replicas"], rss["2"]["spec"]["replicas"]) == (2, 1)

    # scaled mid-rollout, the ReplicaSets grow in proportion: 4 + 1 surge = 5 shared 2:1 of 3, rounded
    server.kubectl("scale", "-n", ns, "deployment/stuck", "--replicas=4")

    def sizes() -> list[int]:
        rss = by_revision(replica_sets(server, ns, "stuck"))
        return [rss[rev]["spec"]["replicas"] for rev in ("1", "2")]

    wait_for("proportional sizes", lambda: sizes() == [3, 2])
    wait_event(server, ns, "stuck", lambda e: e.startswith("ScalingReplicaSet: Scaled up replica set stuck-")
               and e.endswith("from 2 to 3"))  # fmt: skip


def test_revision_history_limit(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("hist", replicas=1, revisionHistoryLimit=1))
    for tag in (2, 3, 4):
        server.kubectl("set", "image", "-n", ns, "deployment/hist", f"app=registry.local/web:{tag}")
        server.kubectl("rollout", "status", "-n", ns, "deployment/hist", "--timeout=60s")
    # the current ReplicaSet and one old one (the newest) are kept
    wait_for("2 replica sets", lambda: sorted(by_revision(replica_sets(server, ns, "hist"))) == ["3", "4"])
    history = server.kubectl("rollout", "history", "-n", ns, "deployment/hist").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["3", "4"], history


def test_self_healing(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("heal", replicas=3))
    server.kubectl("rollout", "status", "-n", ns, "deployment/heal", "--timeout=60s")
    victim = pods_of(server, ns, "app%3Dheal")[0]["metadata"]["name"]
    server.kubectl("delete", "pod", "-n", ns, victim, "--wait=false")
    names = wait_for("a replacement", lambda: (ps := [p for p in live(pods_of(server, ns, "app%3Dheal")) if ready(p)])
                     and len(ps) == 3 and victim not in {p["metadata"]["name"] for p in ps} and ps)  # fmt: skip
    assert len({owner(p)["name"] for p in names}) == 1
    server.kubectl("rollout", "status", "-n", ns, "deployment/heal", "--timeout=60s")


def test_replicaset_directly(server: Server, ns: str) -> None:
    from kubernetes import client

    api = client.AppsV1Api(server.client())
    core = client.CoreV1Api(api.api_client)
    rs_body = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "plain"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "plain"}},
            "template": {"metadata": {"labels": {"app": "plain", "extra": "x"}},
                         "spec": {"containers": [{"name": "app", "image": "registry.local/web:1"}],
                                  "affinity": ON_OUR_NODES}},
        },
    }  # fmt: skip
    rs = api.create_namespaced_replica_set(ns, rs_body)
    uid = rs.metadata.uid

    def status() -> Any:
        return api.read_namespaced_replica_set(name="plain", namespace=ns).status

    wait_for("2 available", lambda: status().available_replicas == 2)
    st = status()
    assert (st.replicas, st.fully_labeled_replicas, st.ready_replicas, st.observed_generation) == (2, 2, 2, 1)
    pods = pods_of(server, ns, "app%3Dplain")
    assert all(p["metadata"]["name"].startswith("plain-") and owner(p)["uid"] == uid for p in pods)

    # an orphan that matches is adopted, and the surplus goes: the unscheduled orphan first
    orphan = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stray", "labels": {"app": "plain"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/web:1"}], "schedulerName": "none"},
    }
    core.create_namespaced_pod(ns, orphan)
    wait_for("stray gone", lambda: get(server, f"/api/v1/namespaces/{ns}/pods/stray") is None)
    assert {p["metadata"]["name"] for p in live(pods_of(server, ns, "app%3Dplain"))} == {
        p["metadata"]["name"] for p in pods
    }
    wait_event(server, ns, "plain", "SuccessfulDelete: Deleted pod: stray")

    # a pod whose labels stop matching is released, and replaced
    released = pods[0]["metadata"]["name"]
    core.patch_namespaced_pod(released, ns, {"metadata": {"labels": {"app": "other"}}})
    wait_for("released", lambda: not get(server, f"/api/v1/namespaces/{ns}/pods/{released}")["metadata"]
             .get("ownerReferences"))  # fmt: skip
    wait_for("a replacement", lambda: len([p for p in live(pods_of(server, ns, "app%3Dplain")) if ready(p)]) == 2)
    wait_for("status 2", lambda: (st := status()) and (st.replicas, st.fully_labeled_replicas) == (2, 2))

    # scale through the scale subresource, as kubectl and autoscalers do
    api.patch_namespaced_replica_set_scale("plain", ns, {"spec": {"replicas": 0}})
    wait_for("no pods", lambda: not live(pods_of(server, ns, "app%3Dplain")))
    wait_for("status 0", lambda: status().replicas == 0 and status().observed_generation == 2)


def test_max_unavailable_zero_keeps_capacity(server: Server, ns: str) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("steady", replicas=3, strategy=strategy))
    server.kubectl("rollout", "status", "-n", ns, "deployment/steady", "--timeout=60s")
    # every state the pods go through, replayed from their watch history (a poll can miss a brief one)
    recording = Recording(server, f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dsteady")
    server.kubectl("set", "image", "-n", ns, "deployment/steady", "app=registry.local/web:2")
    server.kubectl("rollout", "status", "-n", ns, "deployment/steady", "--timeout=60s")
    samples: list[tuple[int, int]] = []  # (ready and not terminating, all not terminating)
    for state in recording.states():
        pods = live(list(state.values()))
        samples.append((len([p for p in pods if ready(p)]), len(pods)))
    assert len(samples) > 5
    assert min(r for r, _ in samples) >= 3, samples
    assert max(n for _, n in samples) <= 4, samples  # never more than replicas + maxSurge
    rss = by_revision(replica_sets(server, ns, "steady"))
    assert rss["2"]["spec"]["replicas"] == 3 and rss["1"]["spec"]["replicas"] == 0


def test_patches_retry_over_concurrent_writes(server: Server, ns: str) -> None:
    """A patch (also of /scale) without a resourceVersion is re-applied when a controller writes in between;
    with one, it is a 409."""
    server.kubectl("apply", "-n", ns, "-f", "-", input=deployment("busy", replicas=0))
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/busy"
    done = threading.Event()

    def write_status() -> None:
        n = 0
        while not done.is_set():
            n += 1
            server.raw("PATCH", f"{path}/status", {"status": {"observedGeneration": n}},
                       content_type="application/merge-patch+json")  # fmt: skip

    writer = threading.Thread(target=write_status, daemon=True)
    writer.start()
    try:
        for i in range(10):
            patch = {"spec": {"template": {"metadata": {"labels": {"app": "busy", "round": str(i)}}}}}
            code, body, _ = server.raw("PATCH", path, patch, content_type="application/strategic-merge-patch+json")
            assert code == 200, body
            scale = {"spec": {"replicas": i % 2}}
            code, body, _ = server.raw("PATCH", f"{path}/scale", scale, content_type="application/merge-patch+json")
            assert code == 200, body
    finally:
        done.set()
        writer.join()
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"minReadySeconds": 1}}
    code, body, _ = server.raw("PATCH", path, stale, content_type="application/merge-patch+json")
    assert code == 409 and body["reason"] == "Conflict", body

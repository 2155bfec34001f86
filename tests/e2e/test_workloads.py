"""Jobs, CronJobs, DaemonSets and StatefulSets converge on simulated nodes, driven by the real kubectl.

The `server` fixture runs the controllers and the scheduler in-process;
simulated nodes (`skiff sim nodes`) run the pods bound to them, and complete
or fail them on cue through the `sim.skiff.dev/*` annotations.

The CronJob every minute is created before the other tests (module fixture)
and checked last, so its wait for the next minute overlaps theirs.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.cluster import Server, SimNodes

pytestmark = pytest.mark.e2e


# --- helpers -------------------------------------------------------------------------------------
def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def get(server: Server, path: str) -> Any:
    code, body, _ = server.raw("GET", path)
    assert code == 200, body
    return body


def pods(server: Server, ns: str, selector: str = "") -> list[dict[str, Any]]:
    query = f"?labelSelector={selector}" if selector else ""
    items: list[dict[str, Any]] = get(server, f"/api/v1/namespaces/{ns}/pods{query}")["items"]
    return sorted(items, key=lambda p: p["metadata"]["name"])


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def events(server: Server, ns: str, name: str) -> list[dict[str, Any]]:
    items = get(server, f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3D{name}")["items"]
    return sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))


def apply(server: Server, ns: str, obj: dict[str, Any]) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def wait_condition(server: Server, ns: str, obj: str, condition: str, timeout: int = 30) -> None:
    """`kubectl wait --for=condition=...`; on a timeout the assertion shows the namespace's pods and events."""
    proc = server.kubectl("wait", "-n", ns, f"--for=condition={condition}", obj, f"--timeout={timeout}s", check=False)
    if proc.returncode != 0:
        state = server.kubectl("get", "-n", ns, "pods,jobs", "-o", "wide", check=False).stdout
        happened = server.kubectl("get", "-n", ns, "events", "--sort-by=.lastTimestamp", check=False).stdout
        nodes = server.kubectl("get", "nodes", check=False).stdout
        raise AssertionError(f"{obj} not {condition}: {proc.stderr}\n{state}\n{happened}\n{nodes}")


@pytest.fixture
def ns(server: Server) -> Iterator[str]:
    name = f"wl-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    yield name
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def minutely(server: Server) -> Iterator[tuple[str, datetime]]:
    """A CronJob running every minute, created before the other tests of this module run."""
    name = f"wl-cron-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    created = datetime.now(UTC)
    apply(server, name, cronjob("every-minute", "*/1 * * * *"))
    yield name, created
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


def job(name: str, *, completions: int | None = None, parallelism: int = 1, backoff_limit: int = 6,
        annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:  # fmt: skip
    job_spec: dict[str, Any] = {
        "parallelism": parallelism,
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"annotations": annotations or {"sim.skiff.dev/complete-after": "1s"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]},
        },
        **spec,
    }
    if completions is not None:
        job_spec["completions"] = completions
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": job_spec}


def cronjob(name: str, schedule: str, **spec: Any) -> dict[str, Any]:
    template = job("unused")["spec"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": template}, **spec},
    }


@pytest.fixture(scope="module")
def nodes(server: Server, minutely: tuple[str, datetime]) -> Iterator[SimNodes]:
    """Four simulated nodes shared by the tests of this module (starting nodes per test costs seconds)."""
    sim = server.sim_nodes(4, prefix=f"wl-{uuid.uuid4().hex[:6]}")
    for node in sim.names:  # daemons of this module run only here, whatever other nodes the server has
        server.kubectl("label", "node", node, "wl-test=yes")
    yield sim
    sim.stop()
    sim.delete_nodes()


# --- Job -----------------------------------------------------------------------------------------
def test_job_with_completions_and_parallelism_completes(server: Server, ns: str, nodes: SimNodes) -> None:
    since = get(server, f"/api/v1/namespaces/{ns}/pods")["metadata"]["resourceVersion"]
    apply(server, ns, job("pi", completions=3, parallelism=2))
    wait_condition(server, ns, "job/pi", "complete")
    # replay the pods' history from before the Job: how many were unfinished at once, event by event
    # (a replay rather than polling: on a loaded machine a poll can miss the moment two pods overlap)
    code, body, _ = server.raw("GET", f"/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={since}"
                                      "&labelSelector=job-name%3Dpi&timeoutSeconds=1")  # fmt: skip
    assert code == 200
    unfinished: set[str] = set()
    most = 0
    for event in [json.loads(line) for line in body.splitlines()] if isinstance(body, str) else [body]:
        name, phase = event["object"]["metadata"]["name"], (event["object"].get("status") or {}).get("phase")
        if event["type"] == "DELETED" or phase in ("Succeeded", "Failed"):
            unfinished.discard(name)
        else:
            unfinished.add(name)
        most = max(most, len(unfinished))
    assert most == 2  # parallelism: two pods run at once, never three
    status = get(server, f"/apis/batch/v1/namespaces/{ns}/jobs/pi")["status"]
    assert status["succeeded"] == 3
    assert status.get("failed", 0) == 0 and status.get("active", 0) == 0
    assert status["startTime"] and status["completionTime"]
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} == {"SuccessCriteriaMet", "Complete"}
    assert status.get("uncountedTerminatedPods") in (None, {})
    job_pods = pods(server, ns, "job-name%3Dpi")
    assert len(job_pods) == 3 and all(p["status"]["phase"] == "Succeeded" for p in job_pods)
    for pod in job_pods:  # counted: the tracking finalizer is gone; owned by the Job; labelled by the apiserver
        assert "batch.kubernetes.io/job-tracking" not in (pod["metadata"].get("finalizers") or [])
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "pi"
    # the controller records its events after the status write, so the last one may trail it
    reasons = wait_for("the Completed event", lambda: (
        r if "Completed" in (r := [e["reason"] for e in events(server, ns, "pi")]) else None))
    assert reasons.count("SuccessfulCreate") == 3
    out = server.kubectl("get", "-n", ns, "job", "pi").stdout
    assert "Complete" in out and "3/3" in out


def test_failing_job_hits_backoff_limit(server: Server, ns: str, nodes: SimNodes) -> None:
    apply(server, ns, job("bad", completions=2, parallelism=2, backoff_limit=1,
                          annotations={"sim.skiff.dev/fail-after": "1s"}))  # fmt: skip
    wait_condition(server, ns, "job/bad", "failed")
    status = get(server, f"/apis/batch/v1/namespaces/{ns}/jobs/bad")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"
    assert status["failed"] == 2 and status.get("succeeded", 0) == 0 and status.get("active", 0) == 0
    assert "completionTime" not in status
    # the controller records its events after the status write, so the warning may trail it
    warning = wait_for("the BackoffLimitExceeded event",
                       lambda: [e for e in events(server, ns, "bad") if e["reason"] == "BackoffLimitExceeded"])
    assert warning[0]["type"] == "Warning"


def test_pod_failure_policy_fails_the_job_at_once(server: Server, ns: str, nodes: SimNodes) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "work", "operator": "In",
                                                             "values": [1]}}]}  # fmt: skip
    apply(server, ns, job("strict", backoff_limit=6, annotations={"sim.skiff.dev/fail-after": "1s"},
                          podFailurePolicy=policy))  # fmt: skip
    wait_condition(server, ns, "job/strict", "failed")
    status = get(server, f"/apis/batch/v1/namespaces/{ns}/jobs/strict")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert (
        failed["message"].startswith("Container work for pod ")
        and "exit code 1 matching FailJob rule at index 0" in failed["message"]
    )
    assert status["failed"] == 1  # no retry despite backoffLimit 6


def test_suspended_job_starts_nothing_until_resumed(server: Server, ns: str, nodes: SimNodes) -> None:
    apply(server, ns, job("later", suspend=True))
    wait_for(
        "Suspended condition",
        lambda: any(
            c["type"] == "Suspended" and c["status"] == "True"
            for c in (get(server, f"/apis/batch/v1/namespaces/{ns}/jobs/later").get("status") or {}).get(
                "conditions", []
            )
        ),
    )
    assert pods(server, ns, "job-name%3Dlater") == []
    server.kubectl("patch", "-n", ns, "job", "later", "-p", '{"spec":{"suspend":false}}')
    wait_condition(server, ns, "job/later", "complete")


def test_finished_job_goes_after_its_ttl(server: Server, ns: str, nodes: SimNodes) -> None:
    apply(server, ns, job("brief", ttlSecondsAfterFinished=1))
    wait_condition(server, ns, "job/brief", "complete")
    gone = wait_for(
        "the job deleted", lambda: server.raw("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/brief")[0] == 404
    )
    assert gone
    wait_for("its pod collected", lambda: pods(server, ns, "job-name%3Dbrief") == [])


# --- CronJob -------------------------------------------------------------------------------------
def test_create_job_from_cronjob(server: Server, ns: str, nodes: SimNodes) -> None:
    apply(server, ns, cronjob("report", "0 0 1 1 *"))  # far away: only the manual run happens
    server.kubectl("create", "job", "report-now", "-n", ns, "--from=cronjob/report")
    wait_condition(server, ns, "job/report-now", "complete")
    created = get(server, f"/apis/batch/v1/namespaces/{ns}/jobs/report-now")
    assert created["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert created["metadata"]["ownerReferences"][0]["name"] == "report"
    status = wait_for(
        "lastSuccessfulTime",
        lambda: (
            (s := get(server, f"/apis/batch/v1/namespaces/{ns}/cronjobs/report").get("status") or {}).get(
                "lastSuccessfulTime"
            )
            and s
        ),
    )
    assert "lastScheduleTime" not in status  # the manual run is not a scheduled one


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": "61 * * * *"}, 'spec.schedule: Invalid value: "61 * * * *": minute: end of range (61) above'),
        ({"schedule": "@fortnightly"}, "unrecognized descriptor: @fortnightly"),
        ({"schedule": "TZ=UTC 0 * * * *"}, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        ({"schedule": "0 * * * *", "timeZone": "Mars/Olympus"},
         "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"),
    ],
    ids=["range", "descriptor", "tz-in-schedule", "time-zone"],
)  # fmt: skip
def test_invalid_cronjob_is_refused(server: Server, ns: str, spec: dict[str, Any], message: str) -> None:
    obj = cronjob("bad", spec.pop("schedule"), **spec)
    proc = server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0
    assert "is invalid" in proc.stderr and message in proc.stderr, proc.stderr


def test_cronjob_starts_the_run_it_missed(server: Server, ns: str, nodes: SimNodes) -> None:
    # As after a controller outage: the last scheduled run was long ago, so the most recent missed
    # time (every 5 minutes, in Europe/Paris) is started at once, named after that time in minutes.
    apply(server, ns, cronjob("tick", "*/5 * * * *", timeZone="Europe/Paris", successfulJobsHistoryLimit=1))
    long_ago = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    server.kubectl("patch", "-n", ns, "cronjob", "tick", "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {"lastScheduleTime": long_ago}}))  # fmt: skip

    def tick_jobs() -> list[dict[str, Any]]:
        return get(server, f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]

    name = wait_for("the missed run's job", tick_jobs)[0]["metadata"]["name"]
    wait_condition(server, ns, f"job/{name}", "complete")
    created = get(server, f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
    stamp = created["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    due = datetime.fromisoformat(stamp)
    # one run for all the missed times, not one per missed time (a run of a 5-minute mark passed
    # since, while the test ran, is the schedule's next one and does not count)
    runs = [datetime.fromisoformat(j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"])
            for j in tick_jobs()]  # fmt: skip
    assert [t for t in runs if t <= due] == [due]
    assert stamp.endswith(("+01:00", "+02:00"))  # in the CronJob's zone
    assert due.minute % 5 == 0 and due.second == 0  # a time of the schedule ...
    assert timedelta(0) <= datetime.now(UTC) - due < timedelta(minutes=5, seconds=30)  # ... the latest one
    assert name == f"tick-{int(due.timestamp()) // 60}"
    status = wait_for(
        "the run seen complete",
        lambda: (
            (s := get(server, f"/apis/batch/v1/namespaces/{ns}/cronjobs/tick")["status"]).get("lastSuccessfulTime")
            and s
        ),
    )
    assert status["lastScheduleTime"] == due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not status.get("active")
    # the controller records its events after the status write, so they may trail it
    wait_for("the SuccessfulCreate and SawCompletedJob events",
             lambda: {"SuccessfulCreate", "SawCompletedJob"} <= {e["reason"] for e in events(server, ns, "tick")})


# --- DaemonSet -----------------------------------------------------------------------------------
@contextlib.contextmanager
def untaint_after(server: Server, node: str) -> Iterator[None]:
    """The module's nodes are shared: a failing test must not leave one tainted."""
    try:
        yield
    finally:
        server.kubectl("taint", "node", node, "dedicated-", check=False)


def test_daemonset_one_pod_per_node_and_tainted_node_excluded(server: Server, ns: str, nodes: SimNodes) -> None:
    tainted = nodes.names[3]
    server.kubectl("taint", "node", tainted, "dedicated=infra:NoSchedule")
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"wl-test": "yes"}, "containers": [{"name": "a", "image": "busybox"}]},
            },
        },
    }
    with untaint_after(server, tainted):
        apply(server, ns, ds)
        server.kubectl("rollout", "status", "-n", ns, "ds/agent", "--timeout=60s")
        placed = pods(server, ns, "app%3Dagent")
        assert sorted(p["spec"]["nodeName"] for p in placed) == sorted(nodes.names[:3])
        for pod in placed:  # pinned the way Kubernetes pins them, with the daemon tolerations
            terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms["nodeSelectorTerms"] == [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [pod["spec"]["nodeName"]]}]}
            ]
            keys = {t["key"] for t in pod["spec"]["tolerations"]}
            assert {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"} <= keys
        status = get(server, f"/apis/apps/v1/namespaces/{ns}/daemonsets/agent")["status"]
        assert (status["desiredNumberScheduled"], status["currentNumberScheduled"], status["numberReady"]) == (3, 3, 3)
        assert status["numberMisscheduled"] == 0 and status["observedGeneration"] == 1

        # the taint goes: the fourth node gets its pod
        server.kubectl("taint", "node", tainted, "dedicated-")
        wait_for("a pod on the untainted node", lambda: len(pods(server, ns, "app%3Dagent")) == 4)
        server.kubectl("rollout", "status", "-n", ns, "ds/agent", "--timeout=60s")

        # a rolling update replaces every pod and leaves history for `kubectl rollout`
        server.kubectl("set", "image", "-n", ns, "ds/agent", "a=busybox:1.37")
        server.kubectl("rollout", "status", "-n", ns, "ds/agent", "--timeout=60s")
    # an old pod deleted by the rollout may still be terminating (and Ready) when the rollout is complete
    images = wait_for("only the new image ready", lambda: (
        i := {p["spec"]["containers"][0]["image"] for p in pods(server, ns, "app%3Dagent") if ready(p)}) == {
        "busybox:1.37"} and i)  # fmt: skip
    assert images == {"busybox:1.37"}
    history = server.kubectl("rollout", "history", "-n", ns, "ds/agent").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    status = get(server, f"/apis/apps/v1/namespaces/{ns}/daemonsets/agent")["status"]
    assert status["updatedNumberScheduled"] == 4 and status["numberAvailable"] == 4


# --- StatefulSet ---------------------------------------------------------------------------------
def test_statefulset_ordered_creation_and_scale_down(server: Server, ns: str, nodes: SimNodes) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "serviceName": "web",
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                # schedulable only once a node carries this label: web-0 waits, unready, at first
                "spec": {"nodeSelector": {"wl-sts": ns}, "containers": [{"name": "nginx", "image": "nginx"}]},
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": "www"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
            ],
        },
    }  # fmt: skip
    apply(server, ns, sts)
    wait_for("web-0", lambda: pods(server, ns, "app%3Dweb"))
    time.sleep(1.0)
    assert [p["metadata"]["name"] for p in pods(server, ns, "app%3Dweb")] == ["web-0"]  # web-1 waits for web-0
    server.kubectl("label", "node", nodes.names[0], f"wl-sts={ns}")
    server.kubectl("rollout", "status", "-n", ns, "sts/web", "--timeout=60s")
    web = pods(server, ns, "app%3Dweb")
    assert [p["metadata"]["name"] for p in web] == ["web-0", "web-1", "web-2"]
    for i, pod in enumerate(web):
        assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == f"web-{i}"
        assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == str(i)
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (f"web-{i}", "web")
        claim = next(v for v in pod["spec"]["volumes"] if v["name"] == "www")
        assert claim["persistentVolumeClaim"]["claimName"] == f"www-web-{i}"
    # the controller records its events after its writes, so the last one may trail the rollout
    creates = wait_for("three pod creations recorded", lambda: len(
        c := [m.split()[2] for e in events(server, ns, "web") if e["reason"] == "SuccessfulCreate"
              and (m := e["message"]).startswith("create Pod")]) >= 3 and c)  # fmt: skip
    assert creates == ["web-0", "web-1", "web-2"]
    claims = get(server, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["www-web-0", "www-web-1", "www-web-2"]
    status = get(server, f"/apis/apps/v1/namespaces/{ns}/statefulsets/web")["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (3, 3, 3)
    assert status["currentRevision"] == status["updateRevision"]

    # scale down: web-2 goes first; web-1 is not touched while web-2 is still terminating
    server.kubectl("patch", "-n", ns, "pod", "web-2", "-p", '{"metadata":{"finalizers":["e2e.skiff.dev/hold"]}}')
    server.kubectl("scale", "-n", ns, "sts/web", "--replicas=1")
    wait_for("web-2 terminating", lambda: get(server, f"/api/v1/namespaces/{ns}/pods/web-2")["metadata"].get(
        "deletionTimestamp"))  # fmt: skip
    time.sleep(1.0)
    assert not get(server, f"/api/v1/namespaces/{ns}/pods/web-1")["metadata"].get("deletionTimestamp")
    server.kubectl("patch", "-n", ns, "pod", "web-2", "--type=json",
                   "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')  # fmt: skip
    wait_for("only web-0 left", lambda: [p["metadata"]["name"] for p in pods(server, ns, "app%3Dweb")] == ["web-0"])
    claims = get(server, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"]
    assert len(claims) == 3  # kept on scale down (whenScaled: Retain)
    status = wait_for(
        "status of one replica",
        lambda: (s := get(server, f"/apis/apps/v1/namespaces/{ns}/statefulsets/web")["status"])["replicas"] == 1 and s,
    )
    assert status["readyReplicas"] == 1


def test_statefulset_rolling_update_with_partition(server: Server, ns: str, nodes: SimNodes) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 3,
            "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
        },
    }  # fmt: skip
    apply(server, ns, sts)
    server.kubectl("rollout", "status", "-n", ns, "sts/db", "--timeout=60s")
    first = get(server, f"/apis/apps/v1/namespaces/{ns}/statefulsets/db")["status"]["currentRevision"]

    def images() -> list[str]:
        return [p["spec"]["containers"][0]["image"] for p in pods(server, ns, "app%3Ddb") if ready(p)]

    # only the ordinals at or above the partition move to the new revision
    server.kubectl("set", "image", "-n", ns, "sts/db", "db=postgres:17")
    wait_for("db-2 updated", lambda: images() == ["postgres:16", "postgres:16", "postgres:17"])
    status = wait_for(
        "status of the partitioned rollout",
        lambda: (
            (s := get(server, f"/apis/apps/v1/namespaces/{ns}/statefulsets/db")["status"]).get("updatedReplicas") == 1
            and s.get("readyReplicas") == 3
            and s
        ),
    )
    assert status["currentRevision"] == first != status["updateRevision"]
    assert status["currentReplicas"] == 2
    # the partition goes: the rest follow, highest first, and the update revision becomes the current one
    server.kubectl("patch", "-n", ns, "sts/db", "-p", '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}')
    server.kubectl("rollout", "status", "-n", ns, "sts/db", "--timeout=60s")
    wait_for("all updated", lambda: images() == ["postgres:17"] * 3)
    status = wait_for(
        "the rollout complete",
        lambda: (
            (s := get(server, f"/apis/apps/v1/namespaces/{ns}/statefulsets/db")["status"])["currentRevision"]
            == s["updateRevision"]
            and s
        ),
    )
    assert status["currentRevision"] != first and status["updatedReplicas"] == 3
    # the controller records its events after its writes, so the last one may trail the rollout
    deletes = wait_for("three pod deletions recorded", lambda: len(
        d := [e["message"].split()[2] for e in events(server, ns, "db") if e["reason"] == "SuccessfulDelete"]) >= 3
        and d)  # fmt: skip
    assert deletes[:3] == ["db-2", "db-1", "db-0"]
    history = server.kubectl("rollout", "history", "-n", ns, "sts/db").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]


# --- last: the every-minute CronJob has run on its own ------------------------------------------
def test_cronjob_every_minute_runs_on_schedule(server: Server, minutely: tuple[str, datetime]) -> None:
    ns, created = minutely
    first = (created + timedelta(minutes=1)).replace(second=0, microsecond=0)
    name = f"every-minute-{int(first.timestamp()) // 60}"
    remaining = (first - datetime.now(UTC)).total_seconds()
    found = wait_for(f"job {name}", lambda: server.raw("GET", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")[0] == 200,
                     timeout=max(remaining, 0) + 60)  # fmt: skip
    assert found
    status = get(server, f"/apis/batch/v1/namespaces/{ns}/cronjobs/every-minute")["status"]
    assert status["lastScheduleTime"] >= first.strftime("%Y-%m-%dT%H:%M:%SZ")

"""Simulated nodes and the node lifecycle, end to end on a real `skiff server`.

`skiff sim nodes` registers nodes that heartbeat and run (on paper) the pods
bound to them; the node lifecycle controller notices when they fall silent,
marks them Unknown, taints them unreachable and evicts their pods.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Server, SimNodes

pytestmark = pytest.mark.timeout(180)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
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


def pod_manifest(name: str, *, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}, "labels": {"app": "sim"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1"}], **spec},
    }


def create_pod(server: Server, ns: str, pod: dict[str, Any]) -> dict[str, Any]:
    code, body, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert code == 201, body
    return dict(body)


def bind(server: Server, ns: str, name: str, node: str) -> None:
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
               "target": {"kind": "Node", "name": node}}
    code, body, _ = server.raw("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding)
    assert code == 201, body


def scheduler_running(server: Server) -> bool:
    return "the scheduler is not available yet" not in server.logs()


def place(server: Server, ns: str, name: str, node: str) -> str:
    """The node the pod ends up on: bound by the scheduler if there is one, else bound here to `node`."""
    if not scheduler_running(server):
        bind(server, ns, name, node)
    return str(wait_for(f"pod {name} scheduled", lambda: (get(server, f"/api/v1/namespaces/{ns}/pods/{name}") or {})
                        .get("spec", {}).get("nodeName")))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


@pytest.fixture
def ns(server: Server) -> Iterator[str]:
    name = f"nodes-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    yield name
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_sim_nodes_register_ready_and_heartbeat(server: Server, sim_nodes: Callable[..., SimNodes]) -> None:
    sim = sim_nodes(3)
    out = server.kubectl("get", "nodes", "-l", "type=simulated", "-o", "wide").stdout
    for name in sim.names:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert " Ready " in line, out
        assert "simulated://0.1" in line, out
    node = get(server, f"/api/v1/nodes/{sim.names[0]}")
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == sim.names[0]
    assert labels["kubernetes.io/os"] == "linux" and labels["type"] == "simulated"
    status = node["status"]
    assert status["allocatable"]["cpu"] == "4" and status["allocatable"]["pods"] == "110"
    assert status["allocatable"]["memory"] == "16Gi"
    assert condition(node, "Ready")["reason"] == "KubeletReady"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False"}
    assert [a["type"] for a in status["addresses"]] == ["InternalIP", "Hostname"]
    assert status["nodeInfo"]["containerRuntimeVersion"] == "simulated://0.1"
    assert status["nodeInfo"]["kubeletVersion"].startswith("v1.")
    # every node heartbeats through its Lease, renewed every 10 s
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{sim.names[0]}"
    first = wait_for("a lease", lambda: get(server, lease_path))
    assert first["spec"]["holderIdentity"] == sim.names[0]
    assert first["spec"]["leaseDurationSeconds"] == 40
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Node"
    wait_for("a lease renewal", lambda: get(server, lease_path)["spec"]["renewTime"] != first["spec"]["renewTime"],
             timeout=60)


def test_pod_on_sim_node_runs_and_is_deleted(server: Server, sim_nodes: Callable[..., SimNodes], ns: str) -> None:
    sim = sim_nodes(2)
    pod = pod_manifest("web", initContainers=[{"name": "init", "image": "registry.local/init:1"}])
    if not scheduler_running(server):
        pod["spec"]["nodeName"] = sim.names[1]  # no scheduler yet: place it by hand
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": sim.names[1]}
    create_pod(server, ns, pod)
    path = f"/api/v1/namespaces/{ns}/pods/web"
    running = wait_for("pod Running and Ready",
                       lambda: (p := get(server, path)) and p["status"].get("phase") == "Running"
                       and condition(p, "Ready").get("status") == "True" and p)
    status = running["status"]
    node = get(server, f"/api/v1/nodes/{sim.names[1]}")
    assert running["spec"]["nodeName"] == sim.names[1]
    assert status["hostIP"] == node["status"]["addresses"][0]["address"]
    assert status["podIP"] and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["startTime"]
    for type_ in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert condition(running, type_)["status"] == "True", type_
    (cs,) = status["containerStatuses"]
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
    assert cs["state"]["running"]["startedAt"]
    assert cs["containerID"].startswith("simulated://") and cs["image"] == "registry.local/app:1" and cs["imageID"]
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed" and init["state"]["terminated"]["exitCode"] == 0
    out = server.kubectl("get", "pod", "web", "-n", ns).stdout
    assert "1/1" in out and "Running" in out
    # a delete waits for the node's kubelet, which removes the pod for good
    server.kubectl("delete", "pod", "web", "-n", ns, "--timeout=60s")
    assert get(server, path) is None


def test_scripted_pods_complete_fail_and_crash(server: Server, sim_nodes: Callable[..., SimNodes], ns: str) -> None:
    sim = sim_nodes(1)
    node = sim.names[0]
    pods = {
        "done": pod_manifest("done", annotations={"sim.skiff.dev/complete-after": "1s"}, restartPolicy="Never"),
        "broken": pod_manifest("broken", annotations={"sim.skiff.dev/fail-after": "1s"}, restartPolicy="Never"),
        "crashy": pod_manifest("crashy", annotations={"sim.skiff.dev/fail-after": "1s"}),
        "shy": pod_manifest("shy", annotations={"sim.skiff.dev/not-ready": "true"}),
    }
    for pod in pods.values():
        pod["spec"]["nodeName"] = node
        create_pod(server, ns, pod)

    def pod(name: str) -> dict[str, Any]:
        return dict(get(server, f"/api/v1/namespaces/{ns}/pods/{name}") or {})

    done = wait_for("done Succeeded", lambda: pod("done").get("status", {}).get("phase") == "Succeeded" and pod("done"))
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert condition(done, "Ready")["reason"] == "PodCompleted"
    broken = wait_for("broken Failed",
                      lambda: pod("broken").get("status", {}).get("phase") == "Failed" and pod("broken"))
    assert broken["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    crashy = wait_for("crashy restarted",
                      lambda: (p := pod("crashy")) and p["status"].get("containerStatuses", [{}])[0].get("restartCount")
                      and p)
    cs = crashy["status"]["containerStatuses"][0]
    assert crashy["status"]["phase"] == "Running"
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert condition(crashy, "Ready")["status"] == "False"
    assert "CrashLoopBackOff" in server.kubectl("get", "pod", "crashy", "-n", ns).stdout
    shy = wait_for("shy Running", lambda: pod("shy").get("status", {}).get("phase") == "Running" and pod("shy"))
    assert condition(shy, "Ready")["status"] == "False"
    assert condition(shy, "ContainersReady")["reason"] == "ContainersNotReady"
    assert "0/1" in server.kubectl("get", "pod", "shy", "-n", ns).stdout


# --- node lifecycle: a silent node goes Unknown, is tainted, and its pods are evicted ---------------------------

# the DefaultTolerationSeconds admission plugin gives every pod 5 s; the controller's own default is the fallback
FAST_LIFECYCLE = [
    "--node-monitor-grace-period", "5", "--default-eviction-seconds", "5",
    "--default-not-ready-toleration-seconds", "5", "--default-unreachable-toleration-seconds", "5",
]  # fmt: skip
FAST_LEASE = ["--node-lease-duration-seconds", "8"]  # renewed every 2 s: well inside the 5 s grace


@pytest.fixture
def fast_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own that declares nodes dead after 5 s and evicts their pods 5 s later."""
    srv = Server(tmp_path / "data", extra_args=FAST_LIFECYCLE).start()
    yield srv
    srv.stop()


def taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in node.get("spec", {}).get("taints") or []}


def events(server: Server, ns: str, reason: str) -> list[dict[str, Any]]:
    body = get(server, f"/api/v1/namespaces/{ns}/events") or {"items": []}
    return [e for e in body["items"] if e.get("reason") == reason]


UNREACHABLE = {("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}


def test_silent_node_is_marked_unknown_tainted_and_its_pods_evicted(
    fast_server: Server, sim_nodes: Callable[..., SimNodes]
) -> None:
    server = fast_server
    live = sim_nodes(2, server=server, prefix="live", extra_args=FAST_LEASE)
    doomed = sim_nodes(1, server=server, prefix="doomed", extra_args=FAST_LEASE)
    dead = doomed.names[0]
    ns = "lifecycle"
    server.kubectl("create", "namespace", ns)
    forever = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    pods = {
        "victim": pod_manifest("victim", nodeName=dead),  # default toleration: 5 s on this server
        "patient": pod_manifest("patient", nodeName=dead, tolerations=[forever]),
        "bystander": pod_manifest("bystander", nodeName=live.names[0]),
    }
    for pod in pods.values():
        create_pod(server, ns, pod)

    def pod(name: str) -> dict[str, Any]:
        return dict(get(server, f"/api/v1/namespaces/{ns}/pods/{name}") or {})

    for name in pods:
        wait_for(f"{name} Ready", lambda name=name: condition(pod(name), "Ready").get("status") == "True")

    doomed.kill()
    node = wait_for("the silent node Unknown and tainted",
                    lambda: (n := get(server, f"/api/v1/nodes/{dead}")) and condition(n, "Ready").get("status")
                    == "Unknown" and UNREACHABLE <= taints(n) and n, timeout=30)
    ready = condition(node, "Ready")
    assert ready["reason"] == "NodeStatusUnknown" and ready["message"] == "Kubelet stopped posting node status."
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]} == {
        "Ready": "Unknown", "MemoryPressure": "Unknown", "DiskPressure": "Unknown", "PIDPressure": "Unknown"}
    out = server.kubectl("get", "nodes").stdout
    assert any(line.startswith(dead + " ") and "NotReady" in line for line in out.splitlines()), out
    for name in live.names:  # the others keep heartbeating
        assert condition(get(server, f"/api/v1/nodes/{name}"), "Ready")["status"] == "True"
        assert not taints(get(server, f"/api/v1/nodes/{name}"))
    # the controller records its events after its writes: they may trail them
    wait_for("the NodeNotReady event",
             lambda: any(e["involvedObject"]["name"] == dead for e in events(server, "default", "NodeNotReady")))

    # its pods are not Ready any more; the one without a toleration of its own goes after 5 s
    wait_for("patient marked not ready", lambda: condition(pod("patient"), "Ready").get("status") == "False")
    # evicted: deleted, and Terminating until its node's kubelet can finish it (as in Kubernetes)
    victim = wait_for("victim evicted", lambda: (p := pod("victim")) and p["metadata"].get("deletionTimestamp") and p,
                      timeout=30)
    assert condition(victim, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
    assert "Terminating" in server.kubectl("get", "pod", "victim", "-n", ns).stdout
    wait_for("the TaintManagerEviction event", lambda: f"Marking for deletion Pod {ns}/victim" in [
        e["message"] for e in events(server, ns, "TaintManagerEviction")])
    time.sleep(2)
    assert not pod("patient")["metadata"].get("deletionTimestamp")  # tolerates unreachable forever
    assert not pod("bystander")["metadata"].get("deletionTimestamp")
    assert condition(pod("bystander"), "Ready")["status"] == "True"

    # the node comes back: Ready again, taints gone, and its kubelet finishes the evicted pod
    sim_nodes(1, server=server, prefix="doomed", extra_args=FAST_LEASE)
    wait_for("taints removed", lambda: not taints(get(server, f"/api/v1/nodes/{dead}")), timeout=60)
    wait_for("victim gone", lambda: pod("victim") == {}, timeout=60)
    wait_for("patient Ready again", lambda: condition(pod("patient"), "Ready").get("status") == "True")


def test_pods_of_a_dead_node_are_recreated_elsewhere(fast_server: Server, sim_nodes: Callable[..., SimNodes]) -> None:
    server = fast_server
    logs = server.logs()
    if "the scheduler is not available yet" in logs or "controller replicaset is not available yet" in logs:
        pytest.skip("needs the scheduler and the ReplicaSet controller")
    doomed = sim_nodes(1, server=server, prefix="doomed", extra_args=FAST_LEASE)
    ns = "heal"
    server.kubectl("create", "namespace", ns)
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "registry.local/web:1"}]}},
        },
    }
    server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(rs))

    def pods() -> list[dict[str, Any]]:
        return list((get(server, f"/api/v1/namespaces/{ns}/pods") or {"items": []})["items"])

    def running_on(names: list[str]) -> list[dict[str, Any]]:
        return [p for p in pods() if p["spec"].get("nodeName") in names and not p["metadata"].get("deletionTimestamp")
                and condition(p, "Ready").get("status") == "True"]

    wait_for("3 pods running on the doomed node", lambda: len(running_on(doomed.names)) == 3, timeout=60)
    live = sim_nodes(2, server=server, prefix="live", extra_args=FAST_LEASE)
    doomed.kill()
    wait_for("3 replacements running on live nodes", lambda: len(running_on(live.names)) == 3, timeout=60)
    out = server.kubectl("get", "rs", "web", "-n", ns).stdout
    assert " 3 " in out, out


def test_pods_of_a_deleted_node_are_garbage_collected(server: Server, sim_nodes: Callable[..., SimNodes],
                                                     ns: str) -> None:
    sim = sim_nodes(1)
    pod = pod_manifest("orphan", nodeName=sim.names[0])
    create_pod(server, ns, pod)
    path = f"/api/v1/namespaces/{ns}/pods/orphan"
    wait_for("orphan Running", lambda: (get(server, path) or {}).get("status", {}).get("phase") == "Running")
    sim.stop()
    server.kubectl("delete", "node", sim.names[0])
    # no kubelet will ever finish it: after a 40 s quarantine the pod GC force-deletes it
    wait_for("orphan deleted", lambda: get(server, path) is None, timeout=75, interval=1)


def test_sim_nodes_stay_after_sigterm_unless_delete_on_exit(server: Server, sim_nodes: Callable[..., SimNodes]) -> None:
    kept = sim_nodes(1)
    assert kept.stop() == 0
    assert get(server, f"/api/v1/nodes/{kept.names[0]}") is not None  # silent, as after a power cut
    gone = sim_nodes(2, extra_args=["--delete-on-exit"])
    assert gone.stop() == 0
    for name in gone.names:
        assert get(server, f"/api/v1/nodes/{name}") is None
        assert get(server, f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}") is None

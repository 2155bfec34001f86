"""The node agent end to end: a real `skiff server`, `skiff agent` on runc, images from a real registry.

Pods are bound by setting `spec.nodeName` (the server runs without its scheduler). Each test has
its own namespace. The module's fixtures remove every container, mount, network namespace, the
test bridge and cgroups at the end, even when a test fails; the last test checks that the agent
itself left nothing behind once its pods were deleted.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agent_node import (
    NODE,
    POD_CIDR,
    AgentNode,
    NodeSetup,
    Registry,
    missing_requirements,
    node_fixtures,
    wait_for,
)
from tests.e2e.cluster import Server

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))


registry, cluster, agent = node_fixtures(NodeSetup(name="agent", node=NODE, pod_cidr=POD_CIDR))


@pytest.fixture
def ns(cluster: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "agent-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    cluster.kubectl("create", "namespace", name)
    yield name
    alive = agent_alive(request)
    wait = ["--wait=true", "--timeout=60s"] if alive else ["--force", "--grace-period=0"]
    cluster.kubectl("delete", "pods", "--all", "-n", name, *wait, check=False, timeout=60)


def agent_alive(request: pytest.FixtureRequest) -> bool:
    node = request.getfixturevalue("agent") if "agent" in request.fixturenames else None
    return node is not None and node.proc is not None and node.proc.poll() is None


def apply(cluster: Server, ns: str, *docs: dict[str, Any]) -> None:
    for doc in docs:
        if doc.get("kind") == "Pod":
            doc.setdefault("spec", {})["nodeName"] = NODE
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


def get_pod(cluster: Server, ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)
    return out


def pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": image, "command": command, **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec}}  # fmt: skip


def condition(p: dict[str, Any], type_: str) -> str:
    return next((c["status"] for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == type_), "")


def container_state(p: dict[str, Any], index: int = 0, key: str = "containerStatuses") -> dict[str, Any]:
    statuses = (p.get("status") or {}).get(key) or []
    return statuses[index] if len(statuses) > index else {}


def log_file(agent: AgentNode, p: dict[str, Any], container: str = "c", attempt: int = 0) -> Path:
    uid: str = p["metadata"]["uid"]
    return agent.state_dir / "pods" / uid / "logs" / container / f"{attempt}.log"


def test_busybox_pod_runs_ready_with_ip_volumes_and_env(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site"},
          "data": {"index.html": "hello from a configMap\n", "greeting": "hi"}}  # fmt: skip
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": "t0ken"}}
    script = (
        "echo GREETING=$(GREETING) POD=$POD_NAME IP=$POD_IP SECRET=`cat /creds/token`;"
        " echo MOUNTS=`grep -E ' /(creds|cache) ' /proc/mounts | cut -d' ' -f2,3 | sort | tr '\\n' ,`;"
        " echo USER=`id -u`:`id -g` CWD=`pwd`; exec httpd -f -p 8080 -h /www"
    )
    web = pod(
        "web", registry.busybox, ["sh", "-c", script],
        container={
            "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "site", "key": "greeting"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
            "workingDir": "/tmp",
            "volumeMounts": [{"name": "site", "mountPath": "/www"}, {"name": "creds", "mountPath": "/creds"},
                             {"name": "cache", "mountPath": "/cache"}],
        },
        volumes=[{"name": "site", "configMap": {"name": "site"}}, {"name": "creds", "secret": {"secretName": "creds"}},
                 {"name": "cache", "emptyDir": {"medium": "Memory"}}],
    )  # fmt: skip
    apply(cluster, ns, cm, secret, web)
    p = wait_for(lambda: (q := get_pod(cluster, ns, "web")) and condition(q, "Ready") == "True" and q,
                 what="web Ready")  # fmt: skip
    status = p["status"]
    assert status["phase"] == "Running"
    ip = status["podIP"]
    assert ip.startswith(POD_CIDR.rsplit(".", 1)[0] + ".") and status["podIPs"] == [{"ip": ip}]
    assert {c["type"] for c in status["conditions"]} >= {"PodScheduled", "Initialized", "ContainersReady", "Ready",
                                                         "PodReadyToStartContainers"}  # fmt: skip
    cs = container_state(p)
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
    assert cs["containerID"].startswith("runc://") and "@sha256:" in cs["imageID"]
    wide = cluster.kubectl("get", "pod", "web", "-n", ns, "-o", "wide").stdout
    assert ip in wide and NODE in wide and "Running" in wide and "1/1" in wide
    with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=10) as resp:
        assert resp.read() == b"hello from a configMap\n"
    log = wait_for(lambda: log_file(agent, p).exists() and log_file(agent, p).read_text(), what="the log")
    assert f"GREETING=hi POD=web IP={ip} SECRET=t0ken" in log
    assert "MOUNTS=/cache tmpfs,/creds tmpfs," in log
    assert "USER=65534:65534 CWD=/tmp" in log  # the secret and the Memory emptyDir are on tmpfs


def test_node_reports_the_machine_and_its_images(cluster: Server, agent: AgentNode, registry: Registry) -> None:
    def node() -> dict[str, Any]:
        out: dict[str, Any] = json.loads(cluster.kubectl("get", "node", NODE, "-o", "json").stdout)
        return out

    n = node()
    assert n["spec"]["podCIDR"] == POD_CIDR and n["spec"]["podCIDRs"] == [POD_CIDR]
    capacity = n["status"]["capacity"]
    assert capacity["cpu"] == str(os.cpu_count()) and capacity["pods"] == "110" and capacity["memory"].endswith("Ki")
    assert n["status"]["allocatable"]["pods"] == "110"
    assert {a["type"] for a in n["status"]["addresses"]} == {"InternalIP", "Hostname"}
    conditions = {c["type"]: c["status"] for c in n["status"]["conditions"]}
    assert conditions == {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("runc://")
    lease = json.loads(cluster.kubectl("get", "lease", NODE, "-n", "kube-node-lease", "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == NODE
    busybox = registry.busybox.rsplit(":", 1)[0]  # the earlier test pulled it

    def listed() -> bool:
        return any(name.startswith(busybox) for i in node()["status"].get("images", []) for name in i["names"])

    wait_for(listed, timeout=60, what="the busybox image in status.images")


def test_image_pull_secrets(cluster: Server, agent: AgentNode, registry: Registry, ns: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt, as the registry's htpasswd wants

        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    private = Registry.start(tmp_path / "private", storage=registry.storage, htpasswd=f"puller:{hashed}\n")
    try:
        image = f"{private.host}/busybox:latest"
        auth = base64.b64encode(b"puller:s3cret").decode()
        config = json.dumps({"auths": {private.host: {"auth": auth}}})
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"},
                  "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": config}}  # fmt: skip
        apply(cluster, ns, secret, pod("anonymous", image, ["sleep", "3600"]),
              pod("authorized", image, ["sleep", "3600"], imagePullSecrets=[{"name": "pull"}]))  # fmt: skip

        def refused() -> str:
            waiting = container_state(get_pod(cluster, ns, "anonymous")).get("state", {}).get("waiting") or {}
            return (
                str(waiting.get("message", "")) if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") else ""
            )

        assert "authentication required" in wait_for(refused, what="the anonymous pull refused").lower()
        wait_for(lambda: condition(get_pod(cluster, ns, "authorized"), "Ready") == "True", what="authorized Ready")
    finally:
        private.stop()


def test_readiness_gates_hold_ready_until_their_condition_is_true(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    gate = "example.com/load-balancer"
    apply(cluster, ns, pod("gated", registry.busybox, ["sleep", "3600"], readinessGates=[{"conditionType": gate}]))
    p = wait_for(lambda: (q := get_pod(cluster, ns, "gated")) and condition(q, "ContainersReady") == "True" and q,
                 what="gated ContainersReady")  # fmt: skip
    ready = next(c for c in p["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    assert "READINESS GATES" in cluster.kubectl("get", "pod", "gated", "-n", ns, "-o", "wide").stdout
    patch = json.dumps({"status": {"conditions": [{"type": gate, "status": "True"}]}})
    cluster.kubectl("patch", "pod", "gated", "-n", ns, "--subresource=status", "--type=strategic", "-p", patch)
    q = wait_for(lambda: (r := get_pod(cluster, ns, "gated")) and condition(r, "Ready") == "True" and r,
                 what="gated Ready")  # fmt: skip
    assert condition(q, gate) == "True"  # the agent's own status patches leave the gate's condition alone
    assert "1/1" in cluster.kubectl("get", "pod", "gated", "-n", ns, "-o", "wide").stdout


def test_crashing_container_backs_off_and_restarts(cluster: Server, agent: AgentNode, registry: Registry,
                                                   ns: str) -> None:  # fmt: skip
    crash = pod(
        "crash",
        registry.busybox,
        ["sh", "-c", "echo crashing; exit 3"],
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    apply(cluster, ns, crash)  # fmt: skip

    def looping() -> dict[str, Any] | None:
        p = get_pod(cluster, ns, "crash")
        waiting = container_state(p).get("state", {}).get("waiting") or {}
        return p if waiting.get("reason") == "CrashLoopBackOff" and container_state(p)["restartCount"] >= 2 else None

    p = wait_for(looping, timeout=60, what="CrashLoopBackOff with 2 restarts")
    cs = container_state(p)
    uid = p["metadata"]["uid"]
    assert cs["state"]["waiting"]["message"].startswith("back-off ")
    assert cs["state"]["waiting"]["message"].endswith(f"restarting failed container=c pod=crash_{ns}({uid})")
    assert cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert cs["lastState"]["terminated"]["message"] == "crashing\n"  # FallbackToLogsOnError: the log's tail
    assert p["status"]["phase"] == "Running" and condition(p, "Ready") == "False"
    assert "CrashLoopBackOff" in cluster.kubectl("get", "pod", "crash", "-n", ns).stdout
    first = cs["restartCount"]
    wait_for(lambda: container_state(get_pod(cluster, ns, "crash"))["restartCount"] > first, timeout=60,
             what="one more restart after the back-off")  # fmt: skip


def test_completed_pods_with_restart_never(cluster: Server, agent: AgentNode, registry: Registry, ns: str) -> None:
    ok = pod(
        "ok",
        registry.busybox,
        ["sh", "-c", "echo done; echo all good > /dev/termination-log"],
        restartPolicy="Never",
        initContainers=[{"name": "init", "image": registry.busybox, "command": ["sh", "-c", "echo init"]}],
    )
    bad_init = pod(
        "bad-init",
        registry.busybox,
        ["true"],
        restartPolicy="Never",
        initContainers=[{"name": "init", "image": registry.busybox, "command": ["sh", "-c", "exit 7"]}],
    )
    apply(cluster, ns, ok, bad_init)  # fmt: skip
    p = wait_for(lambda: (q := get_pod(cluster, ns, "ok"))["status"].get("phase") == "Succeeded" and q,
                 what="ok Succeeded")  # fmt: skip
    assert container_state(p)["state"]["terminated"]["reason"] == "Completed"
    assert container_state(p)["state"]["terminated"]["message"] == "all good\n"  # its terminationMessagePath
    assert container_state(p, key="initContainerStatuses")["state"]["terminated"]["reason"] == "Completed"
    assert condition(p, "Initialized") == "True" and condition(p, "Ready") == "False"
    assert "Completed" in cluster.kubectl("get", "pod", "ok", "-n", ns).stdout
    q = wait_for(lambda: (r := get_pod(cluster, ns, "bad-init"))["status"].get("phase") == "Failed" and r,
                 what="bad-init Failed")  # fmt: skip
    assert container_state(q, key="initContainerStatuses")["state"]["terminated"]["exitCode"] == 7
    assert condition(q, "Initialized") == "False"
    assert container_state(q)["state"]["waiting"]["reason"] == "PodInitializing"


def test_active_deadline_fails_the_pod(cluster: Server, agent: AgentNode, registry: Registry, ns: str) -> None:
    marker = "skiff-e2e-deadline-marker"
    apply(cluster, ns, pod("late", registry.busybox, ["sh", "-c", f"while true; do sleep 1; done # {marker}"],
                           activeDeadlineSeconds=3, terminationGracePeriodSeconds=1))  # fmt: skip
    p = wait_for(lambda: (q := get_pod(cluster, ns, "late"))["status"].get("phase") == "Failed" and q,
                 what="late Failed")  # fmt: skip
    assert p["status"]["reason"] == "DeadlineExceeded"
    assert p["status"]["message"] == "Pod was active on the node longer than the specified deadline"
    assert "terminated" in container_state(p)["state"]
    wait_for(lambda: not agent.processes(marker), timeout=60, what="its process to end")


def test_bad_image_and_missing_configmap_show_kubernetes_reasons(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    apply(
        cluster,
        ns,
        pod("badimg", f"{registry.host}/no-such-image:v1", ["true"]),
        pod(
            "nocm",
            registry.busybox,
            ["true"],
            container={"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]},
        ),
    )

    def reason(name: str, *wanted: str) -> Any:
        p = get_pod(cluster, ns, name)
        waiting = container_state(p).get("state", {}).get("waiting") or {}
        return waiting if waiting.get("reason") in wanted else None

    pulled = wait_for(lambda: reason("badimg", "ErrImagePull", "ImagePullBackOff"), what="ErrImagePull")
    assert "manifest unknown" in pulled["message"]
    backoff = wait_for(lambda: reason("badimg", "ImagePullBackOff"), timeout=60, what="ImagePullBackOff")
    assert "manifest unknown" in backoff["message"] and "Back-off pulling image" in backoff["message"]
    nocm = wait_for(lambda: reason("nocm", "CreateContainerConfigError"), what="CreateContainerConfigError")
    assert nocm["message"] == 'configmap "absent" not found'
    assert get_pod(cluster, ns, "badimg")["status"]["phase"] == "Pending"
    # the agent records its events apart from the status it writes: they may trail it
    wait_for(lambda: "Failed" in (out := cluster.kubectl("get", "events", "-n", ns).stdout) and "no-such-image" in out,
             what="the Failed event naming the image")


def test_oom_and_missing_command(cluster: Server, agent: AgentNode, registry: Registry, ns: str) -> None:
    hog = pod(
        "hog",
        registry.busybox,
        ["sh", "-c", "head -c 300m /dev/zero | tail"],
        restartPolicy="Never",
        container={"resources": {"limits": {"memory": "20Mi"}}},
    )
    nocmd = pod("nocmd", registry.busybox, ["/no/such/binary"])
    apply(cluster, ns, hog, nocmd)  # fmt: skip
    p = wait_for(lambda: (q := get_pod(cluster, ns, "hog"))["status"].get("phase") == "Failed" and q, what="hog Failed")
    term = container_state(p)["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137

    def crash_looping() -> dict[str, Any] | None:
        cs = container_state(get_pod(cluster, ns, "nocmd"))
        return cs if (cs.get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff" else None

    cs = wait_for(crash_looping, what="nocmd in CrashLoopBackOff")
    last = cs["lastState"]["terminated"]
    assert last["reason"] == "StartError" and last["exitCode"] == 128 and "/no/such/binary" in last["message"]
    assert cs["restartCount"] >= 1


def test_deleting_a_pod_stops_its_processes_and_removes_it(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    marker = "skiff-e2e-delete-marker"
    apply(cluster, ns, pod("doomed", registry.busybox, ["sh", "-c", f"while true; do sleep 1; done # {marker}"],
                           terminationGracePeriodSeconds=2))  # fmt: skip
    p = wait_for(lambda: (q := get_pod(cluster, ns, "doomed")) and condition(q, "Ready") == "True" and q,
                 what="doomed Ready")  # fmt: skip
    uid = p["metadata"]["uid"]
    assert agent.processes(marker), "the container's process is visible from the host"
    assert any(uid in n for n in agent.netns())
    cluster.kubectl("delete", "pod", "doomed", "-n", ns, "--wait=true", "--timeout=60s")
    assert cluster.kubectl("get", "pod", "doomed", "-n", ns, check=False).returncode != 0
    wait_for(lambda: not agent.processes(marker), timeout=60, what="the process to end")
    assert not any(uid in n for n in agent.netns())
    assert not (agent.state_dir / "pods" / uid).exists()

    # deleted outright (grace 0, --force): the object goes at once and the agent still cleans up
    forced = "skiff-e2e-forced-marker"
    apply(cluster, ns, pod("forced", registry.busybox, ["sh", "-c", f"while true; do sleep 1; done # {forced}"]))
    q = wait_for(lambda: (r := get_pod(cluster, ns, "forced")) and condition(r, "Ready") == "True" and r,
                 what="forced Ready")  # fmt: skip
    cluster.kubectl("delete", "pod", "forced", "-n", ns, "--grace-period=0", "--force")
    wait_for(lambda: not agent.processes(forced), timeout=60, what="the forced pod's process to end")
    wait_for(lambda: not (agent.state_dir / "pods" / q["metadata"]["uid"]).exists(), timeout=60, what="its dir")
    assert not any(q["metadata"]["uid"] in n for n in agent.netns())


def test_agent_restart_keeps_running_pods_and_cleans_deleted_ones(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    marker, orphan = "skiff-e2e-steady-marker", "skiff-e2e-orphan-marker"
    apply(
        cluster,
        ns,
        pod("steady", registry.busybox, ["sh", "-c", f"while true; do sleep 1; done # {marker}"]),
        pod("orphan", registry.busybox, ["sh", "-c", f"while true; do sleep 1; done # {orphan}"]),
    )
    for name in ("steady", "orphan"):
        wait_for(lambda n=name: condition(get_pod(cluster, ns, n), "Ready") == "True", what=f"{name} Ready")
    before = container_state(get_pod(cluster, ns, "steady"))["containerID"]
    orphan_uid = get_pod(cluster, ns, "orphan")["metadata"]["uid"]
    pids = agent.processes(marker)
    assert pids and agent.processes(orphan)
    agent.stop()
    assert agent.processes(marker) == pids, "stopping the agent leaves its containers running"
    cluster.kubectl("delete", "pod", "orphan", "-n", ns, "--grace-period=0", "--force")  # while no agent runs
    agent.start()
    # a pod started by the new agent proves it syncs; steady's worker had its turn before (initial list)
    apply(cluster, ns, pod("after", registry.busybox, ["sleep", "3600"]))
    wait_for(lambda: condition(get_pod(cluster, ns, "after"), "Ready") == "True", what="after Ready")
    q = get_pod(cluster, ns, "steady")
    assert container_state(q)["containerID"] == before and container_state(q)["restartCount"] == 0
    assert condition(q, "Ready") == "True"
    assert agent.processes(marker) == pids
    wait_for(lambda: not agent.processes(orphan), timeout=60, what="the orphan's processes to end")
    wait_for(lambda: not any(orphan_uid in n for n in agent.netns()), timeout=60, what="the orphan's netns to go")
    wait_for(lambda: not (agent.state_dir / "pods" / orphan_uid).exists(), timeout=60, what="the orphan's dir to go")


def test_changing_the_image_restarts_the_container(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    apply(cluster, ns, pod("swap", registry.busybox, ["sh", "-c", "while true; do sleep 1; done"]))
    p = wait_for(lambda: (q := get_pod(cluster, ns, "swap")) and condition(q, "Ready") == "True" and q,
                 what="swap Ready")  # fmt: skip
    image_id = container_state(p)["imageID"]  # <repo>@sha256:...: the same image, named by digest
    cluster.kubectl("set", "image", "pod/swap", "-n", ns, f"c={image_id}")

    def restarted() -> dict[str, Any] | None:
        cs = container_state(get_pod(cluster, ns, "swap"))
        return cs if cs.get("restartCount") == 1 and "running" in cs.get("state", {}) else None

    cs = wait_for(restarted, timeout=60, what="a restart with the new image")
    assert cs["image"] == image_id and cs["containerID"] != container_state(p)["containerID"]
    assert "terminated" in cs["lastState"]


def test_nothing_left_behind(cluster: Server, agent: AgentNode) -> None:
    """Runs last: once every pod is gone the agent has removed all its containers, namespaces and mounts."""
    listing = json.loads(cluster.kubectl("get", "pods", "-A", "--field-selector",
                                         f"spec.nodeName={NODE}", "-o", "json").stdout)  # fmt: skip
    for item in listing["items"]:
        meta = item["metadata"]
        cluster.kubectl("delete", "pod", meta["name"], "-n", meta["namespace"], "--wait=true", "--timeout=60s")
    wait_for(lambda: not agent.leftovers(), timeout=60, what="no leftovers")
    assert not list((agent.state_dir / "pods").iterdir())

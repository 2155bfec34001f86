"""Probes and lifecycle hooks on the real node agent (runc, busybox), seen as a user sees them.

Liveness failures restart the container (restartCount, `Unhealthy` and `Killing` events);
readiness gates the pod's Ready condition and its EndpointSlice; a startup probe holds liveness
off; tcpSocket and httpGet probes reach the pod IP; postStart's effect is served by the container;
preStop runs before the container gets SIGTERM on delete; failing hooks give FailedPostStartHook
and FailedPreStopHook. The tests flip probe results by writing files in a hostPath directory the
container sees, so nothing depends on timing. Periods are 1 s. The agent, server and registry
fixtures are test_agent's (imported, hence the F811 exemption: pytest passes them by name).
"""
# ruff: noqa: F811

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.agent_node import AgentNode, Registry, wait_for
from tests.e2e.cluster import Server
from tests.e2e.test_agent import (  # noqa: F401 - the module's fixtures
    agent,
    apply,
    cluster,
    condition,
    container_state,
    get_pod,
    ns,
    pod,
    pytestmark,
    registry,
)

FAST = {"periodSeconds": 1, "timeoutSeconds": 3}  # a loaded test machine may be slow to answer
TERM_EXITS = "trap 'exit 0' TERM; "  # PID 1 ignores SIGTERM without a handler


def events(cluster: Server, ns: str, reason: str) -> list[dict[str, Any]]:
    out = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    return [e for e in out["items"] if e.get("reason") == reason]


def messages(cluster: Server, ns: str, reason: str) -> list[str]:
    return [e.get("message", "") for e in events(cluster, ns, reason)]


def host_dir(tmp_path: Path) -> dict[str, Any]:
    tmp_path.chmod(0o777)
    return {"name": "host", "hostPath": {"path": str(tmp_path), "type": "Directory"}}


MOUNT_HOST = {"volumeMounts": [{"name": "host", "mountPath": "/host"}]}


def test_liveness_failure_restarts_the_container(cluster: Server, agent: AgentNode, registry: Registry,
                                                 ns: str) -> None:  # fmt: skip
    # healthy for the first attempt only: the file lives in the container's own rootfs
    # (no TERM handler: the probe's own 1 s grace ends in SIGKILL)
    script = "touch /tmp/healthy; while [ ! -e /tmp/unhealthy ]; do sleep 0.2; done; rm /tmp/healthy; sleep 3600"
    liveness = {"exec": {"command": ["sh", "-c", "cat /tmp/healthy && touch /tmp/unhealthy"]},
                "failureThreshold": 1, "terminationGracePeriodSeconds": 1, **FAST}  # fmt: skip
    live = pod("live", registry.busybox, ["sh", "-c", script], container={"livenessProbe": liveness},
               terminationGracePeriodSeconds=2)  # fmt: skip
    apply(cluster, ns, live)
    p = wait_for(lambda: (q := get_pod(cluster, ns, "live")) and container_state(q).get("restartCount", 0) >= 1 and q,
                 timeout=60, what="a restart after the liveness failure")  # fmt: skip
    last = container_state(p)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (137, "Error")
    assert last["containerID"] != container_state(p).get("containerID")
    # the agent records its events apart from the status it writes: they may trail the restart
    wait_for(lambda: any(m.startswith("Liveness probe failed: cat: can't open '/tmp/healthy'") for m in
                         messages(cluster, ns, "Unhealthy")), what="the Unhealthy event")  # fmt: skip
    killing = wait_for(lambda: (k := events(cluster, ns, "Killing")) and "Container c failed liveness probe, will be "
                       "restarted" in [e["message"] for e in k] and k, what="the Killing event")  # fmt: skip
    assert {e["involvedObject"].get("fieldPath") for e in killing} == {"spec.containers{c}"}


def test_readiness_gates_ready_and_the_endpoint(cluster: Server, agent: AgentNode, registry: Registry, ns: str,
                                                tmp_path: Path) -> None:  # fmt: skip
    """An httpGet readiness probe (named port, path, header) on files the test adds and removes."""
    readiness = {"httpGet": {"port": "http", "path": "/host/ready", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                 "successThreshold": 1, "failureThreshold": 1, **FAST}  # fmt: skip
    web = pod("web", registry.busybox, ["sh", "-c", TERM_EXITS + "httpd -f -p 8080 -h / & wait"],
              container={"readinessProbe": readiness, "ports": [{"name": "http", "containerPort": 8080}],
                         **MOUNT_HOST},
              volumes=[host_dir(tmp_path)])  # fmt: skip
    web["metadata"]["labels"] = {"app": "web"}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
    apply(cluster, ns, svc, web)

    def endpoint_ready() -> bool | None:
        out = json.loads(cluster.kubectl("get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web",
                                         "-o", "json").stdout)  # fmt: skip
        eps = [ep for s in out["items"] for ep in s.get("endpoints") or []]
        return eps[0]["conditions"].get("ready") if eps else None

    p = wait_for(lambda: (q := get_pod(cluster, ns, "web")) and "running" in container_state(q).get("state", {}) and
                 any("Readiness probe failed: HTTP probe failed with statuscode: 404" == m
                     for m in messages(cluster, ns, "Unhealthy")) and q, what="a failed readiness probe")  # fmt: skip
    p = get_pod(cluster, ns, "web")
    assert condition(p, "Ready") == "False" and condition(p, "ContainersReady") == "False"
    assert container_state(p)["ready"] is False and container_state(p)["started"] is True
    assert "0/1" in cluster.kubectl("get", "pod", "web", "-n", ns).stdout
    wait_for(lambda: endpoint_ready() is False, what="a not-ready endpoint")

    (tmp_path / "ready").write_text("yes\n")
    wait_for(lambda: condition(get_pod(cluster, ns, "web"), "Ready") == "True", what="Ready")
    assert container_state(get_pod(cluster, ns, "web"))["ready"] is True
    wait_for(lambda: endpoint_ready() is True, what="a ready endpoint")

    (tmp_path / "ready").unlink()
    wait_for(lambda: condition(get_pod(cluster, ns, "web"), "Ready") == "False", what="not Ready again")
    wait_for(lambda: endpoint_ready() is False, what="the endpoint not ready again")
    assert container_state(get_pod(cluster, ns, "web"))["restartCount"] == 0


def test_startup_probe_holds_liveness_off(cluster: Server, agent: AgentNode, registry: Registry, ns: str,
                                          tmp_path: Path) -> None:  # fmt: skip
    """Until /host/started exists the startup probe fails; the liveness probe (the same check, one failure
    kills) must not run meanwhile. Then tcpSocket readiness: on httpd's port ready, on a closed port not."""
    check = {"exec": {"command": ["cat", "/host/started"]}}
    main = {"name": "c", "image": registry.busybox, "command": ["sh", "-c", TERM_EXITS + "httpd -f -p 8080 & wait"],
            "startupProbe": {**check, "failureThreshold": 60, **FAST},
            "livenessProbe": {**check, "failureThreshold": 1, **FAST},
            "readinessProbe": {"tcpSocket": {"port": 8080}, **FAST}, **MOUNT_HOST}  # fmt: skip
    idle = ["sh", "-c", TERM_EXITS + "while true; do sleep 1; done"]
    side = {"name": "side", "image": registry.busybox, "command": idle,
            "readinessProbe": {"tcpSocket": {"port": 9090}, **FAST}}  # fmt: skip
    slow = pod("slow", registry.busybox, [], volumes=[host_dir(tmp_path)])
    slow["spec"]["containers"] = [main, side]
    apply(cluster, ns, slow)

    def startup_failures() -> int:
        return sum(e.get("count", 1) for e in events(cluster, ns, "Unhealthy")
                   if e["message"].startswith("Startup probe failed: cat: can't open '/host/started'"))  # fmt: skip

    wait_for(lambda: startup_failures() >= 3, what="three failed startup probes")
    cs = container_state(get_pod(cluster, ns, "slow"))
    assert "running" in cs["state"] and cs["started"] is False and cs["ready"] is False and cs["restartCount"] == 0

    (tmp_path / "started").write_text("")
    p = wait_for(lambda: (q := get_pod(cluster, ns, "slow")) and container_state(q).get("ready") and q,
                 what="started and ready")  # fmt: skip
    assert container_state(p)["started"] is True and container_state(p)["restartCount"] == 0
    ip = p["status"]["podIP"]
    refused = f"Readiness probe failed: dial tcp {ip}:9090: connect: connection refused"
    wait_for(lambda: refused in messages(cluster, ns, "Unhealthy"), what="a failed tcpSocket readiness probe")
    p = get_pod(cluster, ns, "slow")
    assert container_state(p, 1)["ready"] is False and container_state(p, 1)["started"] is True
    assert condition(p, "Ready") == "False" and condition(p, "ContainersReady") == "False"
    assert not [m for m in messages(cluster, ns, "Unhealthy") if m.startswith("Liveness")]
    assert not [m for m in messages(cluster, ns, "Killing") if "probe" in m]


def test_post_start_and_pre_stop_hooks(cluster: Server, agent: AgentNode, registry: Registry, ns: str,
                                       tmp_path: Path) -> None:  # fmt: skip
    script = "trap 'echo term >> /host/log; exit 0' TERM; mkdir -p /tmp/www; httpd -p 8080 -h /tmp/www;" \
        " while true; do sleep 0.2; done"  # fmt: skip
    lifecycle = {"postStart": {"exec": {"command": ["sh", "-c", "mkdir -p /tmp/www; echo from postStart >"
                                                    " /tmp/www/index.html"]}},
                 "preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /host/log"]}}}  # fmt: skip
    hanging = {"postStart": {"exec": {"command": ["sleep", "3600"]}}}
    apply(cluster, ns, pod("hooks", registry.busybox, ["sh", "-c", script],
                           container={"lifecycle": lifecycle, **MOUNT_HOST}, volumes=[host_dir(tmp_path)]),
          pod("stuck", registry.busybox, ["sh", "-c", TERM_EXITS + "while true; do sleep 1; done"],
              container={"lifecycle": hanging}))  # fmt: skip

    def started(name: str) -> bool:
        return any(e["involvedObject"]["name"] == name for e in events(cluster, ns, "Started"))

    # deleting a pod whose postStart hangs abandons the hook (well before its 120 s limit)
    wait_for(lambda: started("stuck"), what="the stuck pod's container started, its postStart running")
    assert "running" not in container_state(get_pod(cluster, ns, "stuck")).get("state", {})
    cluster.kubectl("delete", "pod", "stuck", "-n", ns, "--wait=true", "--timeout=60s")
    p = wait_for(lambda: (q := get_pod(cluster, ns, "hooks")) and condition(q, "Ready") == "True" and q,
                 what="hooks Ready")  # fmt: skip
    with urllib.request.urlopen(f"http://{p['status']['podIP']}:8080/index.html", timeout=10) as resp:
        assert resp.read() == b"from postStart\n"

    cluster.kubectl("delete", "pod", "hooks", "-n", ns, "--wait=true", "--timeout=60s")
    assert (tmp_path / "log").read_text() == "prestop\nterm\n"


def test_failing_hooks_give_their_events(cluster: Server, agent: AgentNode, registry: Registry, ns: str) -> None:
    lifecycle = {"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}},
                 "preStop": {"httpGet": {"port": 9999, "path": "/stop"}}}  # fmt: skip
    apply(cluster, ns, pod("badhook", registry.busybox, ["sh", "-c", TERM_EXITS + "while true; do sleep 0.2; done"],
                           container={"lifecycle": lifecycle}))  # fmt: skip
    uid = get_pod(cluster, ns, "badhook")["metadata"]["uid"]
    post = wait_for(lambda: messages(cluster, ns, "FailedPostStartHook"), what="FailedPostStartHook")
    assert post[0] == (
        f'Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container "c" in Pod "badhook_{ns}({uid})" failed'
        f" - error: command 'sh -c echo nope; exit 3' exited with 3: , message: \"nope\\n\""
    )
    pre = wait_for(lambda: messages(cluster, ns, "FailedPreStopHook"), what="FailedPreStopHook")
    ip = get_pod(cluster, ns, "badhook")["status"]["podIP"]
    assert pre[0] == (f'HTTP lifecycle hook (/stop) for Container "c" in Pod "badhook_{ns}({uid})" failed - error: '
                      f'Get "http://{ip}:9999/stop": dial tcp {ip}:9999: connect: connection refused')  # fmt: skip
    assert "FailedPostStartHook" in messages(cluster, ns, "Killing")
    p = wait_for(lambda: (q := get_pod(cluster, ns, "badhook")) and container_state(q).get("lastState") and q,
                 what="the killed container in lastState")  # fmt: skip
    assert container_state(p)["lastState"]["terminated"]["exitCode"] == 0  # its TERM trap exits 0

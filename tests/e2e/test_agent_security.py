"""What a user checks on a real node beyond a pod starting: securityContext as the process sees it,
environment sources and their errors, termination grace, a Deployment rolling out, and `kubectl top`
and the HPA from the node's cgroups.

The module runs its own server, registry and agent (node e2e-sec, its own bridge, CIDR, netns
prefix and cgroup parent). Pods are bound with `spec.nodeName` (the server runs no scheduler);
the Deployments' templates name the node too.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agent_node import AgentNode, NodeSetup, Registry, node_fixtures, wait_for
from tests.e2e.cluster import Server
from tests.e2e.test_agent import condition, container_state, get_pod, pod, pytestmark  # noqa: F401

NODE = "e2e-sec"  # a node, pod network and cgroup parent of its own: test_agent.py's cleanup may run meanwhile
POD_MAX_PIDS = 40


registry, cluster, agent = node_fixtures(NodeSetup(name="sec", node=NODE, pod_cidr="10.199.52.0/24",
                                                   agent_args=(f"--pod-max-pids={POD_MAX_PIDS}",)))


@pytest.fixture
def ns(cluster: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    name = ("sec-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]).rstrip("-")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=60s", check=False, timeout=90)


def apply(cluster: Server, ns: str, *docs: dict[str, Any]) -> None:
    for doc in docs:
        if doc.get("kind") == "Pod":
            doc.setdefault("spec", {})["nodeName"] = NODE
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


# containerd's (and CRI-O's) default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP, as /proc/<pid>/status prints it
DEFAULT_CAPS = "00000000a80425fb"
STATUS = "grep -E '^(Uid|Gid|Groups|CapEff|CapBnd|NoNewPrivs):' /proc/self/status"


def own_caps() -> str:
    """This process's effective capabilities (root, as the agent): what a privileged container gets."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapEff:"))
    return line.split()[1]


def logs(cluster: Server, ns: str, name: str, container: str) -> str:
    return cluster.kubectl("logs", name, "-n", ns, "-c", container).stdout


def status_fields(text: str) -> dict[str, str]:
    """`Key:\tvalue` lines of /proc/self/status and `KEY=value` lines the scripts print."""
    return {k: " ".join(v.split()) for k, v in re.findall(r"^(\w+)[:=]\s*(.*)$", text, re.M)}


def test_security_context_and_env_reach_the_process(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"},
          "data": {"MODE": "fast", "LEVEL": "3"}}  # fmt: skip
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"user": "admin"}}
    restricted = {
        "name": "restricted", "image": registry.busybox,
        "command": ["sh", "-c", f"{STATUS}; touch /written 2>/dev/null && echo ROOTFS=rw || echo ROOTFS=ro;"
                                " echo hi > /data/f && echo DATA=`stat -c %g:%a /data`:`stat -c %g /data/f`;"
                                " echo MEM=`df -k /mem | tail -1 | awk '{print $2}'`:`stat -f -c %T /mem`;"
                                " dd if=/dev/zero of=/mem/f bs=1M count=5 2>/dev/null && echo FULL=no || echo FULL=yes;"
                                " exec sleep 3600"],
        "securityContext": {"runAsUser": 2000, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "mem", "mountPath": "/mem"}],
    }  # fmt: skip
    root = {
        "name": "root", "image": registry.busybox,
        "command": ["sh", "-c", f"{STATUS}; env | grep -E '^(CFG_|USER_NAME|MISSING|NS|MEM_MI|CPU_M)' | sort;"
                                " exec sleep 3600"],
        "securityContext": {"runAsUser": 0},
        "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
        "envFrom": [{"configMapRef": {"name": "conf"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "absent", "optional": True}}],
        "env": [{"name": "USER_NAME", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
                {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}],
    }  # fmt: skip
    privileged = {"name": "privileged", "image": registry.busybox,
                  "command": ["sh", "-c", f"{STATUS}; exec sleep 3600"],
                  "securityContext": {"runAsUser": 0, "privileged": True}}  # fmt: skip
    sec = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sec"},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [restricted, root, privileged],
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                                        "supplementalGroups": [4000]},
                    "volumes": [{"name": "data", "emptyDir": {}},
                                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}}]}}  # fmt: skip
    forks = "skiff-e2e-fork-marker"
    forker = pod("forker", registry.busybox, ["sh", "-c", f"for i in $(seq 80); do sleep 3600 & done; wait # {forks}"],
                 terminationGracePeriodSeconds=1)  # fmt: skip
    # refused before they start: a root image under runAsNonRoot, a key the ConfigMap lacks
    nonroot = pod("nonroot", registry.busybox, ["true"], securityContext={"runAsNonRoot": True})
    nokey = pod("nokey", registry.busybox, ["true"], container={
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "absent"}}}]})  # fmt: skip
    apply(cluster, ns, cm, secret, sec, nonroot, nokey, forker)

    def config_error(name: str) -> str:
        waiting = container_state(get_pod(cluster, ns, name)).get("state", {}).get("waiting") or {}
        return str(waiting.get("message", "")) if waiting.get("reason") == "CreateContainerConfigError" else ""

    uid = get_pod(cluster, ns, "nonroot")["metadata"]["uid"]
    assert wait_for(lambda: config_error("nonroot"), what="nonroot refused") == (
        f'container has runAsNonRoot and image will run as root (pod: "nonroot_{ns}({uid})", container: c)'
    )
    missing_key = wait_for(lambda: config_error("nokey"), what="nokey refused")
    assert missing_key == f"couldn't find key absent in ConfigMap {ns}/conf"
    assert "CreateContainerConfigError" in cluster.kubectl("get", "pod", "nokey", "-n", ns).stdout

    try:
        wait_for(lambda: condition(get_pod(cluster, ns, "sec"), "Ready") == "True", what="sec Ready")
    except AssertionError as e:
        raise AssertionError(f"{e}: {get_pod(cluster, ns, 'sec')['status'].get('containerStatuses')}") from None
    out = wait_for(lambda: "ROOTFS=" in (text := logs(cluster, ns, "sec", "restricted")) and "DATA=" in text and text,
                   what="restricted's output")  # fmt: skip
    fields = status_fields(out)
    # the container's runAsUser wins over the pod's; runAsGroup and the groups come from the pod
    assert fields["Uid"].split()[0] == "2000" and fields["Gid"].split()[0] == "3000"
    assert set(fields["Groups"].split()) == {"2000", "4000"}  # fsGroup and supplementalGroups
    assert fields["CapBnd"] == "0000000000000400" and fields["CapEff"] == "0000000000000000"  # non-root: none
    assert fields["NoNewPrivs"] == "1"
    assert fields["ROOTFS"] == "ro"
    assert fields["DATA"] == "2000:2777:2000"  # fsGroup owns the emptyDir, setgid: new files get its group
    assert fields["MEM"] == "4096:tmpfs" and fields["FULL"] == "yes"  # medium Memory: a tmpfs of sizeLimit
    out = wait_for(lambda: "CPU_M=" in (text := logs(cluster, ns, "sec", "root")) and text, what="root's output")
    fields = status_fields(out)
    assert fields["Uid"].split()[0] == "0" and fields["CapEff"] == DEFAULT_CAPS and fields["NoNewPrivs"] == "0"
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env == {"CFG_MODE": "fast", "CFG_LEVEL": "3", "USER_NAME": "admin", "NS": ns, "MEM_MI": "64",
                   "CPU_M": "250"}  # the optional missing key leaves MISSING unset  # fmt: skip
    out = wait_for(lambda: "NoNewPrivs" in (text := logs(cluster, ns, "sec", "privileged")) and text,
                   what="privileged's output")  # fmt: skip
    assert status_fields(out)["CapEff"] == own_caps()
    # --pod-max-pids: the pod's processes stop at the limit, the shell is told it cannot fork
    wait_for(lambda: "can't fork" in logs(cluster, ns, "forker", "c"), what="forker refused a fork")
    uid = get_pod(cluster, ns, "forker")["metadata"]["uid"]
    v1 = Path("/sys/fs/cgroup/pids")
    cgroup = (v1 if v1.is_dir() else Path("/sys/fs/cgroup")) / "skiffsectest" / f"pod{uid}"
    assert (cgroup / "pids.max").read_text().strip() == str(POD_MAX_PIDS)  # the shell exits on it and restarts


def test_termination_grace_sigterm_then_sigkill(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)
    marker = "skiff-e2e-grace-ignorer"
    trapper = {"name": "trapper", "image": registry.busybox,
               "command": ["sh", "-c", "trap 'echo TERM > /host/trapped; exit 0' TERM; while true; do sleep 0.2; done"],
               "volumeMounts": [{"name": "host", "mountPath": "/host"}]}  # fmt: skip
    ignorer = {"name": "ignorer", "image": registry.busybox,
               "command": ["sh", "-c", "trap 'echo TERM >> /host/ignored' TERM; while true; do [ -f /host/ignored ]"
                                       f" && echo alive >> /host/ignored; sleep 0.2; done # {marker}"],
               "volumeMounts": [{"name": "host", "mountPath": "/host"}]}  # fmt: skip
    host = {"name": "host", "hostPath": {"path": str(tmp_path), "type": "Directory"}}
    hold = "example.com/hold"  # keeps the object after the kubelet is done, to read its last status
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "graceful", "finalizers": [hold]},
            "spec": {"terminationGracePeriodSeconds": 3, "containers": [trapper, ignorer],
                     "volumes": [host]}}  # fmt: skip
    apply(cluster, ns, body)
    p = wait_for(lambda: (q := get_pod(cluster, ns, "graceful")) and condition(q, "Ready") == "True" and q,
                 what="graceful Ready")  # fmt: skip
    assert agent.processes(marker)

    def leased() -> set[str]:
        return {f.name for f in (agent.state_dir / "cni" / "networks").rglob("*") if f.is_file()}

    assert p["status"]["podIP"] in leased()  # host-local IPAM's lease on the pod's IP
    release = '[{"op": "remove", "path": "/metadata/finalizers"}]'
    try:
        cluster.kubectl("delete", "pod", "graceful", "-n", ns, "--wait=false")
        q = wait_for(lambda: (r := get_pod(cluster, ns, "graceful"))["status"].get("phase") == "Failed" and r,
                     what="graceful Failed once deleted")  # fmt: skip
        assert (tmp_path / "trapped").read_text() == "TERM\n"  # got SIGTERM and exited on it
        ignored = (tmp_path / "ignored").read_text().split()
        assert ignored[0] == "TERM" and "alive" in ignored[1:]  # got SIGTERM, ran on through it...
        wait_for(lambda: not agent.processes(marker), timeout=60, what="the ignorer killed")  # ...until SIGKILL
        exits = {c["name"]: c["state"]["terminated"] for c in q["status"]["containerStatuses"]}
        assert (exits["trapper"]["exitCode"], exits["trapper"]["reason"]) == (0, "Completed")
        assert (exits["ignorer"]["exitCode"], exits["ignorer"]["reason"]) == (137, "Error")
        wait_for(lambda: p["status"]["podIP"] not in leased(), timeout=60, what="the pod's IP freed")
    finally:
        cluster.kubectl("patch", "pod", "graceful", "-n", ns, "--type=json", "-p", release, check=False)
    cluster.kubectl("wait", "--for=delete", "pod/graceful", "-n", ns, "--timeout=60s")


def deployment(name: str, image: str, command: list[str], replicas: int, **container: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": name, "image": image, "command": command,
                                                           **container}]}}}}  # fmt: skip


def test_deployment_of_busybox_web_servers_rolls_out(
    cluster: Server, agent: AgentNode, registry: Registry, ns: str
) -> None:
    serve = ["sh", "-c", "mkdir /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    ready = {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1, "timeoutSeconds": 3}
    apply(cluster, ns, deployment("web", registry.busybox, serve, 2, readinessProbe=ready,
                                  ports=[{"containerPort": 8080}]))  # fmt: skip
    out = cluster.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=90s", timeout=120).stdout
    assert 'deployment "web" successfully rolled out' in out
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["phase"] == "Running" and condition(p, "Ready") == "True"
        with urllib.request.urlopen(f"http://{p['status']['podIP']}:8080/index.html", timeout=10) as resp:
            assert resp.read().decode().strip() == p["metadata"]["name"]
    assert "2/2" in cluster.kubectl("get", "deployment", "web", "-n", ns).stdout


def test_kubectl_top_and_the_hpa_on_real_usage(cluster: Server, agent: AgentNode, registry: Registry, ns: str) -> None:
    burn = deployment("burn", registry.busybox, ["sh", "-c", "while true; do :; done"], 1,
                      resources={"requests": {"cpu": "20m"}, "limits": {"cpu": "100m", "memory": "32Mi"}})  # fmt: skip
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "burn"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
                    "minReplicas": 1, "maxReplicas": 2,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": 50}}}]}}  # fmt: skip
    apply(cluster, ns, burn, pod("idle", registry.busybox, ["sleep", "3600"]))

    def top_pods() -> dict[str, tuple[int, int]]:
        out = cluster.kubectl("top", "pods", "-n", ns, "--no-headers", check=False).stdout
        return {f[0]: (int(f[1].rstrip("m")), int(f[2].rstrip("Mi"))) for f in map(str.split, out.splitlines())
                if len(f) == 3}  # fmt: skip

    def both() -> dict[str, tuple[int, int]] | None:
        found = top_pods()
        burning = any(k.startswith("burn-") and v[0] >= 20 for k, v in found.items())
        return found if "idle" in found and burning else None

    found = wait_for(both, timeout=60, what="kubectl top pods showing burn and idle")
    burner = next(v for k, v in found.items() if k.startswith("burn-"))
    assert burner[0] <= 150  # its CPU quota holds it near 100m
    assert found["idle"][0] < 20
    raw = json.loads(cluster.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/idle").stdout)
    assert raw["containers"][0]["name"] == "c" and raw["containers"][0]["usage"]["memory"] != "0"
    nodes = cluster.kubectl("top", "nodes", "--no-headers").stdout
    line = next(f for f in map(str.split, nodes.splitlines()) if f and f[0] == NODE)
    assert line[1].endswith("m") and int(line[1].rstrip("m")) > 0 and line[3].endswith("Mi")

    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(hpa))
    wait_for(lambda: json.loads(cluster.kubectl("get", "deployment", "burn", "-n", ns, "-o", "json").stdout)
             ["spec"]["replicas"] == 2, timeout=60, what="the HPA scaling burn to 2")  # fmt: skip
    described = cluster.kubectl("describe", "hpa", "burn", "-n", ns).stdout
    assert "SuccessfulRescale" in described


SECCOMP_PROBE = ("grep Seccomp: /proc/self/status; unshare -U true && echo UNSHARE=ok;"
                 " mkdir /tmp/d && echo MKDIR=ok; echo DONE=1")


def test_seccomp_profiles(cluster: Server, agent: AgentNode, registry: Registry, ns: str) -> None:
    """RuntimeDefault denies unshare (EPERM) and lets the rest run; Unconfined, privileged or CAP_SYS_ADMIN may
    unshare; a Localhost profile from the node's seccomp directory applies, and a missing one is a
    CreateContainerError; bad fields are refused with Kubernetes' words."""
    profiles = agent.state_dir / "seccomp" / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "no-mkdir.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))  # fmt: skip

    def probe(name: str, profile: dict[str, str], **container: Any) -> dict[str, Any]:
        return pod(name, registry.busybox, ["sh", "-c", SECCOMP_PROBE], restartPolicy="Never",
                   securityContext={"seccompProfile": profile}, container=container)  # fmt: skip

    local = {"type": "Localhost", "localhostProfile": "profiles/no-mkdir.json"}
    default = {"type": "RuntimeDefault"}
    apply(cluster, ns, probe("default", default), probe("unconfined", {"type": "Unconfined"}),
          probe("local", default, securityContext={"seccompProfile": local}),  # the container's wins over the pod's
          probe("missing", {"type": "Localhost", "localhostProfile": "profiles/absent.json"}),
          probe("privileged", default, securityContext={"privileged": True}),
          probe("admin", default, securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}))  # fmt: skip

    def output(name: str) -> dict[str, str]:
        def done() -> str:
            text = cluster.kubectl("logs", name, "-n", ns, check=False).stdout
            return text if "DONE=" in text else ""

        return status_fields(wait_for(done, what=f"{name}'s output"))

    confined, unconfined, localhost = output("default"), output("unconfined"), output("local")
    assert confined["Seccomp"] == "2" and "UNSHARE" not in confined and confined["MKDIR"] == "ok"
    assert "unshare: unshare(0x10000000): Operation not permitted" in logs(cluster, ns, "default", "c")
    assert unconfined["Seccomp"] == "0" and unconfined["UNSHARE"] == "ok"
    assert localhost["Seccomp"] == "2" and localhost["UNSHARE"] == "ok" and "MKDIR" not in localhost
    assert "mkdir: can't create directory '/tmp/d': Operation not permitted" in logs(cluster, ns, "local", "c")
    # a privileged container runs unconfined whatever its profile; CAP_SYS_ADMIN allows the namespace calls again
    privileged, admin = output("privileged"), output("admin")
    assert privileged["Seccomp"] == "0" and privileged["UNSHARE"] == "ok"
    assert admin["Seccomp"] == "2" and admin["UNSHARE"] == "ok"

    def create_error() -> str:
        waiting = container_state(get_pod(cluster, ns, "missing")).get("state", {}).get("waiting") or {}
        return str(waiting.get("message", "")) if waiting.get("reason") == "CreateContainerError" else ""

    path = (profiles / "absent.json").resolve()
    assert wait_for(create_error, what="missing profile refused") == (
        f'failed to generate seccomp spec opts: cannot load seccomp profile "{path}": open {path}: '
        "no such file or directory")
    assert "CreateContainerError" in cluster.kubectl("get", "pod", "missing", "-n", ns).stdout
    bad = probe("bad", {"type": "Localhost"})
    out = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0 and 'The Pod "bad" is invalid: spec.securityContext.seccompProfile.localhostProfile: ' \
        "Required value: must be set when seccomp type is Localhost" in out.stderr  # fmt: skip


def test_nothing_left_behind(cluster: Server, agent: AgentNode) -> None:
    """Runs last: the namespaces (and so the pods) are gone, and the agent removed their containers,
    network namespaces, mounts and NAT rules."""
    wait_for(lambda: not agent.leftovers(), timeout=60, what="no leftovers")

"""Persistent volumes and service account credentials end to end: a real server with its scheduler and
controllers, a real `skiff agent` on runc.

A claim of the default `local-path` class is bound once a pod uses it (WaitForFirstConsumer: the scheduler
picks the node, the provisioner makes a hostPath volume there); data outlives the pod; deleting the claim
deletes the volume and its directory (k3s's helper pod). Pods get the kube-api-access projected volume
(token, ca.crt, namespace) whose token the API server accepts, `kubectl create token` works, and
`automountServiceAccountToken: false` gives no volume.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agent_node import (
    AgentNode,
    NodeSetup,
    Registry,
    local_storage_of,
    missing_requirements,
    node_fixtures,
    wait_for,
)
from tests.e2e.cluster import Server, kubectl_binary

pytestmark = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


# with the scheduler, which binds WaitForFirstConsumer claims to the node
registry, cluster, agent = node_fixtures(NodeSetup(name="volumes", pod_cidr="10.199.44.0/24", server_args=(),
                                                   local_storage=True))


@pytest.fixture(scope="module")
def storage(cluster: Server) -> Path:
    return local_storage_of(cluster)


@pytest.fixture
def ns(cluster: Server, agent: AgentNode, request: pytest.FixtureRequest) -> Iterator[str]:
    name = ("vol-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]).rstrip("-")
    cluster.kubectl("create", "namespace", name)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
             what="the default service account")  # fmt: skip
    yield name
    cluster.kubectl("delete", "pods", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False, timeout=90)
    cluster.kubectl("delete", "pvc", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False, timeout=90)


def apply(cluster: Server, ns: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


def get(cluster: Server, ns: str, kind: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout)
    return out


def run_to_completion(cluster: Server, ns: str, name: str, image: str, script: str, **spec: Any) -> str:
    """A pod that runs `script` once; its log once it Succeeded."""
    volumes = spec.pop("volumes", [])
    container = {"name": "c", "image": image, "command": ["sh", "-c", script], **spec.pop("container", {})}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [container],
                    "volumes": volumes, **spec}}  # fmt: skip
    apply(cluster, ns, pod)

    def finished() -> str:
        return str((get(cluster, ns, "pod", name).get("status") or {}).get("phase") in ("Succeeded", "Failed"))

    try:
        wait_for(lambda: finished() == "True", timeout=60, what=f"pod {name} to finish")
    except AssertionError as exc:
        described = cluster.kubectl("describe", "pod,pvc,pv", "-n", ns, check=False).stdout
        raise AssertionError(f"{exc}\n{described}") from None
    phase = get(cluster, ns, "pod", name)["status"]["phase"]
    logs = cluster.kubectl("logs", name, "-n", ns).stdout
    assert phase == "Succeeded", f"{name} {phase}: {logs}"
    return logs


def as_token(cluster: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with nothing but the token (and the CA): no client certificate to fall back on."""
    ca = cluster.data_dir / "tls" / "ca.crt"
    return subprocess.run([kubectl_binary(), "--kubeconfig", "/dev/null", "--server", cluster.url,
                           "--certificate-authority", str(ca), "--token", token, *args],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def claim(name: str, size: str = "64Mi") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}  # fmt: skip


def test_claim_data_outlives_pods_and_goes_with_the_claim(
    cluster: Server, registry: Registry, storage: Path, ns: str
) -> None:
    apply(cluster, ns, claim("data"))
    pvc = get(cluster, ns, "pvc", "data")
    assert pvc["spec"]["storageClassName"] == "local-path"  # the default class
    assert pvc["status"]["phase"] == "Pending"  # WaitForFirstConsumer: no pod uses it yet
    # the volume controller records its event once it has seen the claim: it may come after the create
    wait_for(lambda: "WaitForFirstConsumer" in cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=data").stdout,
        what="the WaitForFirstConsumer event")  # fmt: skip

    volume = [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
    mount = {"volumeMounts": [{"name": "d", "mountPath": "/data"}]}
    run_to_completion(cluster, ns, "writer", registry.busybox, "echo kept > /data/f", volumes=volume, container=mount)
    pvc = get(cluster, ns, "pvc", "data")
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "e2e-volumes"
    pv = json.loads(cluster.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    assert pv["status"]["phase"] == "Bound" and pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    directory = Path(pv["spec"]["hostPath"]["path"])
    assert directory == storage / f"{ns}_data_{pv['metadata']['name']}"
    assert (directory / "f").read_text() == "kept\n"
    cluster.kubectl("delete", "pod", "writer", "-n", ns)

    readonly = [{"name": "d", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}}]
    logs = run_to_completion(cluster, ns, "reader", registry.busybox,
                             "cat /data/f; touch /data/g 2>/dev/null || echo read-only",
                             volumes=readonly, container=mount)  # fmt: skip
    assert logs.split() == ["kept", "read-only"]
    cluster.kubectl("delete", "pod", "reader", "-n", ns)

    cluster.kubectl("delete", "pvc", "data", "-n", ns)
    wait_for(lambda: cluster.kubectl("get", "pv", pv["metadata"]["name"], check=False).returncode != 0,
             timeout=60, what="the volume to be deleted")  # fmt: skip
    assert not directory.exists()


def test_a_pod_whose_claim_is_missing_waits(cluster: Server, registry: Registry, ns: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan"},
           "spec": {"containers": [{"name": "c", "image": registry.busybox, "command": ["sleep", "60"]}],
                    "terminationGracePeriodSeconds": 1,
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "nowhere"}}]}}  # fmt: skip
    apply(cluster, ns, pod)

    def unschedulable() -> str:
        conditions = (get(cluster, ns, "pod", "orphan").get("status") or {}).get("conditions") or []
        return next((c.get("message", "") for c in conditions if c.get("reason") == "Unschedulable"), "")

    assert 'persistentvolumeclaim "nowhere" not found' in wait_for(unschedulable, what="Unschedulable")
    apply(cluster, ns, claim("nowhere"))  # the claim appears: the pod is scheduled and the claim bound
    wait_for(lambda: get(cluster, ns, "pvc", "nowhere")["status"]["phase"] == "Bound", what="the claim bound")
    wait_for(lambda: (get(cluster, ns, "pod", "orphan").get("status") or {}).get("phase") == "Running",
             what="the pod running")  # fmt: skip

    # in use: deleting the claim only marks it (kubernetes.io/pvc-protection) until the pod is gone
    cluster.kubectl("delete", "pvc", "nowhere", "-n", ns, "--wait=false")
    pvc = get(cluster, ns, "pvc", "nowhere")
    assert pvc["metadata"]["deletionTimestamp"] and pvc["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    time.sleep(1)
    assert get(cluster, ns, "pvc", "nowhere")["status"]["phase"] == "Bound"
    cluster.kubectl("delete", "pod", "orphan", "-n", ns)
    wait_for(lambda: cluster.kubectl("get", "pvc", "nowhere", "-n", ns, check=False).returncode != 0,
             what="the claim deleted once unused")  # fmt: skip


def test_service_account_credentials(cluster: Server, registry: Registry, ns: str) -> None:
    token = cluster.kubectl("create", "token", "default", "-n", ns).stdout.strip()
    whoami = as_token(cluster, token, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{ns}:default"
    assert f"system:serviceaccounts:{ns}" in info["groups"]
    assert as_token(cluster, token + "x", "auth", "whoami").returncode != 0  # a forged signature

    script = (f"cat {SA_DIR}/namespace; echo; head -1 {SA_DIR}/ca.crt; cat {SA_DIR}/token; echo; "
              'echo "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"')  # fmt: skip
    logs = run_to_completion(cluster, ns, "client", registry.busybox, script).splitlines()
    assert logs[0] == ns
    assert logs[1] == "-----BEGIN CERTIFICATE-----"
    pod_token, service = logs[2], logs[3]
    host, port = service.split(":")
    svc = json.loads(cluster.kubectl("get", "svc", "kubernetes", "-n", "default", "-o", "json").stdout)
    assert (host, port) == (svc["spec"]["clusterIP"], "443")
    whoami = as_token(cluster, pod_token, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:default"
    assert (cluster.data_dir / "tls" / "ca.crt").read_text().startswith(logs[1])

    cluster.kubectl("delete", "pod", "client", "-n", ns)  # the token was bound to the pod: it dies with it
    wait_for(lambda: as_token(cluster, pod_token, "auth", "whoami").returncode != 0, what="the token refused")

    logs = run_to_completion(cluster, ns, "no-token", registry.busybox,
                             f"ls {SA_DIR} 2>/dev/null || echo none", automountServiceAccountToken=False)  # fmt: skip
    assert logs.strip() == "none"
    spec = get(cluster, ns, "pod", "no-token")["spec"]
    assert not any(v["name"].startswith("kube-api-access-") for v in spec.get("volumes") or [])


def test_root_ca_configmap_in_every_namespace(cluster: Server, ns: str) -> None:
    cm = wait_for(lambda: cluster.kubectl("get", "cm", "kube-root-ca.crt", "-n", ns, "-o", "json", check=False)
                  .stdout, what="kube-root-ca.crt")  # fmt: skip
    data = json.loads(cm)["data"]
    assert data["ca.crt"] == (cluster.data_dir / "tls" / "ca.crt").read_text()
    cluster.kubectl("delete", "cm", "kube-root-ca.crt", "-n", ns)
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "cm", "kube-root-ca.crt", "-n", ns, check=False).returncode != 0:
        assert time.monotonic() < deadline, "kube-root-ca.crt was not put back"
        time.sleep(0.3)


def test_static_volume_binds_to_the_smallest_fit_and_is_retained(cluster: Server, storage: Path, ns: str) -> None:
    def pv(name: str, size: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-{name}"},
                "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                         "hostPath": {"path": str(storage / name)}}}  # fmt: skip

    apply(cluster, ns, pv("big", "10Gi"), pv("small", "1Gi"))
    manual = claim("manual", "512Mi")
    manual["spec"]["storageClassName"] = "manual"  # an Immediate class-less match: bound without any pod
    apply(cluster, ns, manual)
    wait_for(lambda: get(cluster, ns, "pvc", "manual")["status"].get("phase") == "Bound", what="the claim bound")
    pvc = get(cluster, ns, "pvc", "manual")
    assert pvc["spec"]["volumeName"] == f"{ns}-small"
    assert pvc["status"]["capacity"] == {"storage": "1Gi"}
    cluster.kubectl("delete", "pvc", "manual", "-n", ns)

    def phase() -> str:
        out = cluster.kubectl("get", "pv", f"{ns}-small", "-o", "jsonpath={.status.phase}").stdout
        return out if out == "Released" else ""

    wait_for(phase, what="the volume released")  # Retain (a static volume's default): kept with its data
    cluster.kubectl("delete", "pv", f"{ns}-small", f"{ns}-big")
    short = cluster.kubectl("create", "token", "default", "-n", ns, "--duration=1m", check=False)
    assert "may not specify a duration less than 10 minutes" in short.stderr

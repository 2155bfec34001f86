"""examples/etcd-operator end to end: the kopf operator runs etcd clusters on a real node agent.

One skiff server with its scheduler, one real `skiff agent` (runc, CNI bridge) on a pod network of
this module's own, a registry holding the built-in etcd image, and the operator run as a user
would try it first: `kopf run etcd_operator.py` with the admin kubeconfig (the operator as deploy.yaml's
Deployment, its image and its RBAC: test_etcd_operator_in_cluster.py). The test drives it with
kubectl and talks to etcd with the host's etcdctl at the addresses of the cluster's client Service.
Snapshots go to a PersistentVolumeClaim of the local-path class (its volumes under the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agent_node import AgentNode, NodeSetup, missing_requirements, node_fixtures, wait_for
from tests.e2e.cluster import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etcd-operator"
NS = "etcd-e2e"

_missing = missing_requirements() or (None if shutil.which("etcdctl") else "needs etcdctl (etcd-client)")
pytestmark = [pytest.mark.skipif(_missing is not None, reason=_missing or ""), pytest.mark.timeout(300)]


# with the scheduler; the local-path provisioner's volumes in a directory of the module's
registry, cluster, agent = node_fixtures(NodeSetup(name="etcd", pod_cidr="10.199.47.0/24", images=("etcd:3.4.23",),
                                                   server_args=(), local_storage=True))


@pytest.fixture(scope="module")
def operator(cluster: Server, agent: AgentNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The CRD, a namespace, and `kopf run` of the example (its log file is yielded)."""
    cluster.kubectl("apply", "-f", str(EXAMPLE / "crd.yaml"))
    wait_for(lambda: cluster.kubectl("get", "etcdclusters", "-A", check=False).returncode == 0, 60, what="the CRD")
    cluster.kubectl("create", "namespace", NS)
    log = tmp_path_factory.mktemp("etcd-operator") / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "ETCD_OPERATOR_INTERVAL": "1"}
    kopf = Path(sys.executable).parent / "kopf"
    with log.open("ab") as out:
        proc = subprocess.Popen([str(kopf), "run", "--standalone", "--namespace", NS, "etcd_operator.py"],
                                cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield log
    finally:
        # the operator removes its finalizer; the garbage collector takes the pods and Services
        cluster.kubectl("delete", "etcdclusters", "--all", "-n", NS, "--timeout=60s", check=False, timeout=90)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # shorter grace for what is left; the node's cleanup waits for it
        cluster.kubectl("delete", "pods", "--all", "-n", NS, "--grace-period=1", "--wait=false", check=False)


def etcd_cluster(name: str, size: int) -> str:
    """An EtcdCluster whose snapshots go to a claim of the default (local-path) class."""
    return yaml.safe_dump({
        "apiVersion": "etcd.skiff.dev/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": name},
        "spec": {"size": size, "backup": {"schedule": "@every 4s", "storage": {"size": "64Mi"}}},
    })  # fmt: skip


def get(cluster: Server, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", *what, "-n", NS, "-o", "json").stdout)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def client_endpoints(cluster: Server, service: str) -> str:
    """The addresses behind the client Service, as etcdctl's --endpoints."""
    ep = get(cluster, "endpoints", service)
    ips = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
    return ",".join(f"http://{ip}:2379" for ip in ips)


def etcdctl(endpoints: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["etcdctl", f"--endpoints={endpoints}", "--dial-timeout=3s", "--command-timeout=5s", *args]
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    if check and out.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)}: {out.stderr}")
    return out


def member_names(cluster: Server, service: str) -> list[str]:
    endpoints = client_endpoints(cluster, service)
    if not endpoints:
        return []
    out = etcdctl(endpoints, "member", "list", "-w", "json", check=False)
    if out.returncode != 0:
        return []
    return sorted(m.get("name", "") for m in json.loads(out.stdout).get("members") or [])


def test_etcd_cluster_scales_backs_up_and_restores_after_losing_quorum(cluster: Server, operator: Path) -> None:
    def explain() -> str:
        return operator.read_text(errors="replace")[-6000:]

    cluster.kubectl("apply", "-n", NS, "-f", "-", input=etcd_cluster("demo", 3))

    # three members, Available, and a key written through the client Service reads back
    def available() -> dict[str, Any] | None:
        obj = get(cluster, "etcdcluster", "demo")
        return obj if condition(obj, "Available").get("status") == "True" else None

    try:
        obj = wait_for(available, 120, what="EtcdCluster demo Available")
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{explain()}") from None
    assert obj["status"]["readyMembers"] == 3
    # the client Service's endpoints follow the pods' readiness a moment after the operator saw it
    wait_for(lambda: member_names(cluster, "demo") == ["demo-0", "demo-1", "demo-2"], 60, what="three members listed")
    svc = get(cluster, "service", "demo")
    assert svc["spec"]["ports"][0]["port"] == 2379 and svc["spec"]["clusterIP"] not in ("", "None")
    assert get(cluster, "service", "demo-peers")["spec"]["clusterIP"] == "None"
    wait_for(lambda: len(client_endpoints(cluster, "demo").split(",")) == 3, 60, what="3 client endpoints")
    etcdctl(client_endpoints(cluster, "demo"), "put", "greeting", "hello from before the snapshot")
    assert etcdctl(client_endpoints(cluster, "demo"), "get", "greeting", "--print-value-only").stdout.strip() == (
        "hello from before the snapshot"
    )

    # a snapshot taken after the write appears on the schedule, in the volume and in status
    first = int((get(cluster, "etcdcluster", "demo")["status"].get("backup") or {}).get("succeeded", 0))

    def backed_up() -> dict[str, Any] | None:
        obj = get(cluster, "etcdcluster", "demo")
        return obj if int((obj["status"].get("backup") or {}).get("succeeded", 0)) >= first + 2 else None

    obj = wait_for(backed_up, 60, what="two more snapshots")
    snapshot = obj["status"]["backup"]["lastSnapshot"]
    claim = get(cluster, "pvc", "demo-backups")
    assert claim["status"]["phase"] == "Bound"
    volume = json.loads(cluster.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    assert (Path((volume["spec"].get("hostPath") or volume["spec"].get("local"))["path"]) / snapshot).is_file()
    assert condition(obj, "BackupSucceeded")["status"] == "True" and obj["status"]["backup"]["lastBackupTime"]
    assert "Last-Backup".upper() in cluster.kubectl("get", "etcdcluster", "demo", "-n", NS).stdout

    # scale to 1 and back to 3 (the scale subresource): etcd's member list follows
    cluster.kubectl("scale", "etcdcluster", "demo", "-n", NS, "--replicas=1")
    wait_for(lambda: member_names(cluster, "demo") == ["demo-0"], 60, what="one member left")
    wait_for(lambda: [p["metadata"]["name"] for p in get(cluster, "pods", "-l", "etcd.skiff.dev/role=member")["items"]]
             == ["demo-0"], 60, what="one member pod")  # fmt: skip
    cluster.kubectl("scale", "etcdcluster", "demo", "-n", NS, "--replicas=3")
    wait_for(lambda: member_names(cluster, "demo") == ["demo-0", "demo-1", "demo-2"], 90, what="three members again")
    wait_for(available, 60, what="Available after scaling up")

    # lose two of three members: the operator restores the latest snapshot and grows back
    restores_before = int((get(cluster, "etcdcluster", "demo")["status"].get("restore") or {}).get("count", 0))
    cluster.kubectl("delete", "pod", "demo-0", "demo-1", "-n", NS, "--wait=false")

    def recovered() -> dict[str, Any] | None:
        obj = get(cluster, "etcdcluster", "demo")
        restore = obj["status"].get("restore") or {}
        done = condition(obj, "Restoring").get("reason") == "Recovered" and restore.get("count", 0) > restores_before
        return obj if done and condition(obj, "Available").get("status") == "True" else None

    try:
        obj = wait_for(recovered, 120, what="the cluster restored from its snapshot")
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{explain()}") from None
    restore = obj["status"]["restore"]
    # kubectl deletes the two pods one after the other: an operator that looks in between sees one
    # member lost (a minority: it is removed) and then the next (no quorum left). Either way the
    # cluster is restored from the snapshot.
    lost = restore["lostMembers"]
    assert lost and set(lost) <= {"demo-0", "demo-1"} and restore["snapshot"].endswith(".db")
    restoring = condition(obj, "Restoring")
    assert restoring["status"] == "False" and restore["snapshot"] in restoring["message"]
    wait_for(lambda: len(client_endpoints(cluster, "demo").split(",")) == 3, 60, what="3 client endpoints")
    assert member_names(cluster, "demo") == ["demo-0", "demo-1", "demo-2"]
    assert etcdctl(client_endpoints(cluster, "demo"), "get", "greeting", "--print-value-only").stdout.strip() == (
        "hello from before the snapshot"
    )
    def events() -> dict[str, Any]:  # kopf posts events in the background: the last may trail the status
        found = get(cluster, "events", "--field-selector", "involvedObject.kind=EtcdCluster,involvedObject.name=demo")
        return {e["reason"]: e for e in found["items"]}

    wanted = {"QuorumLost", "Restored", "Recovered", "MemberAdded", "MemberRemoved", "BackupSucceeded"}
    reasons = wait_for(lambda: (lambda r: r if wanted <= set(r) else None)(events()), 60, what=f"events {wanted}")
    assert reasons["QuorumLost"]["type"] == "Warning" and ", ".join(lost) in reasons["QuorumLost"]["message"]
    assert reasons["Recovered"]["type"] == "Normal" and restore["snapshot"] in reasons["Recovered"]["message"]

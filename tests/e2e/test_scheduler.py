"""The scheduler against a real `skiff server`: nodes registered through the API, pods placed as configured.

Nodes here are plain Node objects (allocatable, a Ready condition) with no
agent behind them, so pods stay Pending after binding; what is checked is
`spec.nodeName`, the PodScheduled condition and the events, through the API
and the real kubectl. The servers run with a long node-monitor grace period
so the node lifecycle controller leaves these heartbeat-less nodes alone
(except in the test that relies on it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skiff.api import errors
from skiff.client import Client
from skiff.client import resources as R
from tests.e2e.cluster import BIN, Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
Obj = dict[str, Any]
QUIET_LIFECYCLE = ["--node-monitor-grace-period", "3600"]
UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its nodes must not leak into other modules' clusters."""
    srv = Server(tmp_path_factory.mktemp("scheduler"), extra_args=QUIET_LIFECYCLE).start()
    yield srv
    srv.stop()


@pytest.fixture
async def client(cluster: Server) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(cluster.kubeconfig) as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"sched-{uuid.uuid4().hex[:6]}"
    await client.create(R.NAMESPACES, {"metadata": {"name": name}})
    return name


@pytest.fixture
def group() -> str:
    """A label value unique to the test: its pods select its nodes only."""
    return uuid.uuid4().hex[:6]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def add_node(
    client: Client,
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
    ready: str = "True",
) -> None:
    """Register a node as a kubelet would: the object, then its status (allocatable, Ready)."""
    meta = {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}}
    await client.create(R.NODES, {"metadata": meta, "spec": {"taints": taints} if taints else {}})
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods}
    stamp = now()
    reason = {"True": "KubeletReady", "False": "KubeletNotReady"}.get(ready, "NodeStatusUnknown")
    status = {
        "allocatable": allocatable,
        "capacity": allocatable,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
        ],
    }
    for attempt in range(5):  # the node lifecycle controller may be writing the node at the same moment
        try:
            await client.patch(R.NODES, name, {"status": status}, subresource="status", patch_type="merge")
            return
        except errors.Conflict:
            if attempt == 4:
                raise
            await asyncio.sleep(0.1)


def pod_manifest(
    name: str,
    *,
    cpu: str = "500m",
    memory: str = "256Mi",
    group: str | None = None,
    spec: Obj | None = None,
) -> Obj:
    body: Obj = {
        "containers": [
            {"name": "app", "image": "nginx:1.25", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
        ]
    }
    if group is not None:
        body["nodeSelector"] = {"test-group": group}
    body.update(spec or {})
    return {"metadata": {"name": name}, "spec": body}


async def eventually(check: Callable[[], Any], *, within: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def placements(client: Client, ns: str) -> dict[str, str]:
    pods = (await client.list(R.PODS, namespace=ns))["items"]
    return {p["metadata"]["name"]: p["spec"].get("nodeName") or "" for p in pods}


async def all_bound(client: Client, ns: str, count: int) -> dict[str, str]:
    async def check() -> dict[str, str] | None:
        placed = await placements(client, ns)
        return placed if len(placed) == count and all(placed.values()) else None

    result: dict[str, str] = await eventually(check, what=f"{count} pods bound in {ns}")
    return result


def condition(pod: Obj, type_: str) -> Obj | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


async def events_for(client: Client, ns: str, name: str) -> list[Obj]:
    items = (await client.list(R.EVENTS, namespace=ns))["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


# --- placement ------------------------------------------------------------------------------------


async def test_spreads_pods_with_least_allocated(client: Client, ns: str, group: str, cluster: Server) -> None:
    for i in range(3):
        await add_node(client, f"spread-{group}-{i}", labels={"test-group": group})
    for i in range(6):
        await client.create(R.PODS, pod_manifest(f"web-{i}", group=group), namespace=ns)
    placed = await all_bound(client, ns, 6)
    per_node: dict[str, int] = {}
    for node in placed.values():
        per_node[node] = per_node.get(node, 0) + 1
    assert sorted(per_node.values()) == [2, 2, 2], placed

    pod = await client.get(R.PODS, "web-0", namespace=ns)
    scheduled = condition(pod, "PodScheduled")
    assert scheduled is not None and scheduled["status"] == "True"
    message = f"Successfully assigned {ns}/web-0 to {placed['web-0']}"
    await eventually(lambda: _has_event(client, ns, "web-0", "Scheduled", message), what="the Scheduled event")
    described = cluster.kubectl("describe", "pod", "web-0", "-n", ns).stdout
    assert "Scheduled" in described and message in described and "default-scheduler" in described


async def _has_event(client: Client, ns: str, name: str, reason: str, message: str) -> bool:
    return any(e.get("reason") == reason and e.get("message") == message for e in await events_for(client, ns, name))


async def test_fills_nodes_up_to_their_allocatable(client: Client, ns: str, group: str) -> None:
    await add_node(client, f"small-{group}-a", cpu="1", labels={"test-group": group})
    await add_node(client, f"small-{group}-b", cpu="1", labels={"test-group": group})
    for i in range(4):
        await client.create(R.PODS, pod_manifest(f"half-{i}", cpu="500m", group=group), namespace=ns)
    placed = await all_bound(client, ns, 4)
    assert sorted(placed.values()).count(f"small-{group}-a") == 2, placed
    await client.create(R.PODS, pod_manifest("one-too-many", cpu="500m", group=group), namespace=ns)

    async def refused() -> Obj | None:
        pod = await client.get(R.PODS, "one-too-many", namespace=ns)
        cond = condition(pod, "PodScheduled")
        return cond if cond is not None and cond.get("status") == "False" else None

    cond = await eventually(refused, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert "2 Insufficient cpu" in cond["message"]
    assert (await client.get(R.PODS, "one-too-many", namespace=ns))["spec"].get("nodeName") is None

    # room appears (a new node): the parked pod is tried again at once, not after minutes
    await add_node(client, f"small-{group}-c", cpu="1", labels={"test-group": group})
    placed = await all_bound(client, ns, 5)
    assert placed["one-too-many"] == f"small-{group}-c"


async def test_node_selector_and_node_affinity(client: Client, ns: str, group: str) -> None:
    await add_node(client, f"ssd-{group}", labels={"test-group": group, "disk": "ssd", "zone": "a"})
    await add_node(client, f"hdd-{group}", labels={"test-group": group, "disk": "hdd", "zone": "b"})
    for i in range(3):
        await client.create(R.PODS, pod_manifest(f"db-{i}", group=group, spec={"nodeSelector": {
            "test-group": group, "disk": "ssd"}}), namespace=ns)  # fmt: skip
    zone_b = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}
    affinity = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [zone_b]}}}}  # fmt: skip
    for i in range(2):
        await client.create(R.PODS, pod_manifest(f"zone-b-{i}", group=group, spec=affinity), namespace=ns)
    placed = await all_bound(client, ns, 5)
    assert {placed[f"db-{i}"] for i in range(3)} == {f"ssd-{group}"}
    assert {placed[f"zone-b-{i}"] for i in range(2)} == {f"hdd-{group}"}


async def test_taints_and_tolerations(client: Client, ns: str, group: str) -> None:
    dedicated = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    await add_node(client, f"gpu-{group}", labels={"test-group": group, "kind": "gpu"}, taints=[dedicated])
    await add_node(client, f"plain-{group}", labels={"test-group": group, "kind": "plain"})
    for i in range(3):
        await client.create(R.PODS, pod_manifest(f"ordinary-{i}", group=group), namespace=ns)
    toleration = {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
                  "nodeSelector": {"test-group": group, "kind": "gpu"}}  # fmt: skip
    await client.create(R.PODS, pod_manifest("tolerant", group=group, spec=toleration), namespace=ns)
    placed = await all_bound(client, ns, 4)
    assert {placed[f"ordinary-{i}"] for i in range(3)} == {f"plain-{group}"}
    assert placed["tolerant"] == f"gpu-{group}"

    untolerated = {"nodeSelector": {"test-group": group, "kind": "gpu"}}
    await client.create(R.PODS, pod_manifest("intolerant", group=group, spec=untolerated), namespace=ns)

    async def explained() -> str | None:
        cond = condition(await client.get(R.PODS, "intolerant", namespace=ns), "PodScheduled")
        return cond["message"] if cond and cond.get("status") == "False" else None

    message = await eventually(explained, what="the intolerant pod's PodScheduled=False")
    assert "1 node(s) had untolerated taint {dedicated: gpu}" in message


async def test_not_ready_node_is_avoided_through_its_taint(client: Client, ns: str, group: str) -> None:
    """Kubernetes' way: node lifecycle taints a NotReady node, TaintToleration keeps pods off it."""
    sick = f"sick-{group}"
    await add_node(client, sick, labels={"test-group": group}, ready="False")
    await add_node(client, f"well-{group}", labels={"test-group": group})

    async def tainted() -> bool:
        taints = (await client.get(R.NODES, sick)).get("spec", {}).get("taints") or []
        return any(t.get("key") == "node.kubernetes.io/not-ready" and t.get("effect") == "NoSchedule" for t in taints)

    await eventually(tainted, within=60, what="the not-ready taint from the node lifecycle controller")
    for i in range(4):
        await client.create(R.PODS, pod_manifest(f"p-{i}", group=group), namespace=ns)
    placed = await all_bound(client, ns, 4)
    assert set(placed.values()) == {f"well-{group}"}


async def test_pods_of_other_schedulers_are_left_alone(client: Client, ns: str, group: str, cluster: Server) -> None:
    await add_node(client, f"any-{group}", labels={"test-group": group})
    await client.create(R.PODS, pod_manifest("mine", group=group), namespace=ns)
    await client.create(R.PODS, pod_manifest("theirs", group=group, spec={"schedulerName": "other-scheduler"}),
                        namespace=ns)  # fmt: skip
    gated = {"schedulingGates": [{"name": "example.com/wait"}]}
    await client.create(R.PODS, pod_manifest("gated", group=group, spec=gated), namespace=ns)
    await eventually(lambda: _bound(client, ns, "mine"), what="mine bound")
    await asyncio.sleep(1.0)
    for name in ("theirs", "gated"):
        pod = await client.get(R.PODS, name, namespace=ns)
        assert not pod["spec"].get("nodeName"), name
        assert not [e for e in await events_for(client, ns, name) if e.get("reason") == "FailedScheduling"]
    gated_condition = condition(await client.get(R.PODS, "gated", namespace=ns), "PodScheduled")
    assert gated_condition is not None
    assert (gated_condition["status"], gated_condition["reason"]) == ("False", "SchedulingGated")
    assert "SchedulingGated" in cluster.kubectl("get", "pod", "gated", "-n", ns).stdout
    # lifting the gate hands the pod to the scheduler
    await client.patch(R.PODS, "gated", [{"op": "remove", "path": "/spec/schedulingGates"}], namespace=ns,
                       patch_type="json")  # fmt: skip
    await eventually(lambda: _bound(client, ns, "gated"), what="the ungated pod bound")


async def _bound(client: Client, ns: str, name: str) -> bool:
    return bool((await client.get(R.PODS, name, namespace=ns))["spec"].get("nodeName"))


async def test_preemption_by_priority(client: Client, ns: str, group: str) -> None:
    node = f"tight-{group}"
    await add_node(client, node, cpu="1", labels={"test-group": group})
    # priorities come from PriorityClasses (the Priority admission plugin refuses a pod's own spec.priority)
    for level, value in (("low", 1), ("high", 1000)):
        await client.create(R.PRIORITYCLASSES, {"metadata": {"name": f"{level}-{group}"}, "value": value})
    low = pod_manifest("low", cpu="800m", group=group, spec={"priorityClassName": f"low-{group}"})
    await client.create(R.PODS, low, namespace=ns)
    await eventually(lambda: _bound(client, ns, "low"), what="the low-priority pod bound")
    high = pod_manifest("high", cpu="800m", group=group, spec={"priorityClassName": f"high-{group}"})
    await client.create(R.PODS, high, namespace=ns)

    async def victim_terminating() -> bool:
        try:
            pod = await client.get(R.PODS, "low", namespace=ns)
        except errors.NotFound:
            return True
        if pod["metadata"].get("deletionTimestamp"):
            # no node agent here: finish the deletion as the kubelet would once the container stopped
            await client.delete(R.PODS, "low", namespace=ns, grace_period_seconds=0)
            return True
        return False

    await eventually(victim_terminating, what="the low-priority pod preempted")
    await eventually(lambda: _bound(client, ns, "high"), what="the high-priority pod bound")
    high = await client.get(R.PODS, "high", namespace=ns)
    assert high["spec"]["nodeName"] == node
    assert high["spec"]["priority"] == 1000

    async def preempted_event() -> bool:  # recorded after the preemption's writes: it may trail them
        return "Preempted" in {e.get("reason") for e in await events_for(client, ns, "low")}

    await eventually(preempted_event, what="the Preempted event on the victim")


# --- servers of their own -------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str) -> Server:
        srv = Server(tmp_path / f"srv{len(started)}", extra_args=[*QUIET_LIFECYCLE, *extra]).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


async def test_unschedulable_pod_explains_why(own_server: Callable[..., Server]) -> None:
    srv = own_server()
    async with Client.from_kubeconfig(srv.kubeconfig) as client:
        await add_node(client, "n1", cpu="1")
        await add_node(client, "n2", cpu="1")
        # a node gone silent: Ready Unknown, tainted unreachable (the node lifecycle controller keeps the taint)
        await add_node(client, "n3", cpu="4", taints=[UNREACHABLE], ready="Unknown")
        for node in ("n1", "n2"):
            hog = pod_manifest(f"hog-{node}", cpu="800m", spec={"nodeName": node})
            await client.create(R.PODS, hog, namespace="default")
        await client.create(R.PODS, pod_manifest("waiting", cpu="500m"), namespace="default")
        expected = (
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, "
            "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
            "2 No preemption victims found for incoming pod."
        )

        async def explained() -> Obj | None:
            cond = condition(await client.get(R.PODS, "waiting", namespace="default"), "PodScheduled")
            return cond if cond and cond.get("status") == "False" else None

        cond = await eventually(explained, what="PodScheduled=False")
        assert cond["reason"] == "Unschedulable"
        assert cond["message"] == expected
        await eventually(lambda: _has_event(client, "default", "waiting", "FailedScheduling", expected),
                         what="the FailedScheduling event")  # fmt: skip
        described = srv.kubectl("describe", "pod", "waiting").stdout
        assert "PodScheduled   False" in described
        assert "Warning  FailedScheduling" in described
        assert expected in " ".join(described.split())  # describe may wrap long messages
        events = [e for e in await events_for(client, "default", "waiting") if e.get("reason") == "FailedScheduling"]
        assert events and events[0]["type"] == "Warning"
        assert events[0]["source"]["component"] == "default-scheduler"

        # room appears: the pod is scheduled and says so
        await add_node(client, "n4", cpu="2")
        await eventually(lambda: _bound(client, "default", "waiting"), what="waiting pod bound")
        pod = await client.get(R.PODS, "waiting", namespace="default")
        assert pod["spec"]["nodeName"] == "n4"
        assert (condition(pod, "PodScheduled") or {}).get("status") == "True"


async def test_bin_packing_with_a_scheduler_config_file(own_server: Callable[..., Server], tmp_path: Path) -> None:
    """`skiff server --disable-scheduler` plus `skiff scheduler --config` (MostAllocated) packs pods."""
    srv = own_server("--disable-scheduler")
    config = tmp_path / "binpack.yaml"
    config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\n"
        "kind: KubeSchedulerConfiguration\n"
        "profiles:\n"
        "- schedulerName: default-scheduler\n"
        "  pluginConfig:\n"
        "  - name: NodeResourcesFit\n"
        "    args:\n"
        "      scoringStrategy:\n"
        "        type: MostAllocated\n"
        "        resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]\n"
    )
    log_path = tmp_path / "scheduler.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "skiff"), "scheduler", "--kubeconfig", str(srv.kubeconfig), "--config", str(config),
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": ""},
        )  # fmt: skip
    try:
        async with Client.from_kubeconfig(srv.kubeconfig) as client:
            for i in range(3):
                await add_node(client, f"bin-{i}")
            for i in range(6):
                await client.create(R.PODS, pod_manifest(f"packed-{i}", memory="512Mi"), namespace="default")
            placed = await all_bound(client, "default", 6)
            assert len(set(placed.values())) == 1, placed
            # the node is full at 8 pods of 500m (4 cpu): the 9th goes elsewhere
            for i in range(6, 9):
                await client.create(R.PODS, pod_manifest(f"packed-{i}", memory="512Mi"), namespace="default")
            placed = await all_bound(client, "default", 9)
            counts = sorted(list(placed.values()).count(n) for n in set(placed.values()))
            assert counts == [1, 8], placed
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(proc.wait(), 15) == 0, log_path.read_text()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_bad_scheduler_config_ends_the_scheduler(own_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = own_server("--disable-scheduler")
    config = tmp_path / "bad.yaml"
    config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
        "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: Fullest}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "skiff"), "scheduler", "--kubeconfig", str(srv.kubeconfig), "--config", str(config),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    # the scheduler refuses to start (the process ends; its exit status is the CLI's business)
    assert 'Unsupported value: "Fullest"' in out.decode()


async def _start_scheduler(srv: Server, log_path: Path, *extra: str) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            str(BIN / "skiff"), "scheduler", "--kubeconfig", str(srv.kubeconfig), *extra,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_leader_election_hands_over(own_server: Callable[..., Server], tmp_path: Path) -> None:
    """Two `skiff scheduler --leader-elect`: one holds the kube-system/kube-scheduler Lease; then the other."""
    srv = own_server("--disable-scheduler")
    first = await _start_scheduler(srv, tmp_path / "first.log", "--leader-elect")
    second: asyncio.subprocess.Process | None = None
    try:
        async with Client.from_kubeconfig(srv.kubeconfig) as client:

            async def holder() -> str:
                try:
                    lease = await client.get(R.LEASES, "kube-scheduler", namespace="kube-system")
                except errors.NotFound:
                    return ""
                return str((lease.get("spec") or {}).get("holderIdentity") or "")

            leader = await eventually(holder, what="a leader")
            second = await _start_scheduler(srv, tmp_path / "second.log", "--leader-elect")
            await add_node(client, "solo")
            await client.create(R.PODS, pod_manifest("before"), namespace="default")
            await eventually(lambda: _bound(client, "default", "before"), what="a pod bound by the leader")
            await asyncio.sleep(1)
            assert await holder() == leader  # the standby did not take over

            await _stop(first)  # a graceful stop hands the Lease back at once
            successor = await eventually(
                lambda: _other_holder(holder, leader), within=60, what="the standby taking over"
            )
            assert successor != leader
            await client.create(R.PODS, pod_manifest("after"), namespace="default")
            await eventually(lambda: _bound(client, "default", "after"), what="a pod bound by the new leader")
    finally:
        await _stop(first)
        if second is not None:
            await _stop(second)


async def _other_holder(holder: Callable[[], Any], leader: str) -> str | None:
    current = str(await holder())
    return current if current and current != leader else None

"""The metrics API and the HorizontalPodAutoscaler against real `skiff server` processes.

Usage goes in through the node report path (`skiff.node.metrics.report_usage`)
and comes out through `kubectl top` and the raw metrics.k8s.io API; an HPA
scales a Deployment up when the reported usage is high and back down when it
is low. The HPA test runs its own server with only the HPA controller and
small windows (`--hpa-sync-period 1 --hpa-downscale-stabilization 3`), and
plays the parts of the Deployment controller and the kubelet itself: it keeps
one Running, Ready pod per replica and reports their usage, so what it
observes is the HPA alone (it only ever touches the scale subresource).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skiff.api import errors
from skiff.client import Client
from skiff.client import resources as R
from skiff.node.metrics import PodUsage, report_usage
from tests.e2e.cluster import Server
from tests.e2e.history import Recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
Obj = dict[str, Any]


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def eventually(check: Callable[[], Any], within: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def make_node(client: Client, name: str) -> None:
    await client.create(R.NODES, {"metadata": {"name": name, "labels": {"metrics-test": name}}})
    capacity = {"cpu": "4", "memory": "16Gi", "pods": "110"}
    await client.patch(R.NODES, name, {"status": {"capacity": capacity, "allocatable": capacity}}, subresource="status")


async def make_running_pod(client: Client, ns: str, name: str, labels: dict[str, str], *, cpu: str | None) -> None:
    """A pod as a kubelet would have it: bound, Running and Ready for a while (past CPU initialization)."""
    resources = {"requests": {"cpu": cpu, "memory": "64Mi"}} if cpu else {}
    pod = {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": "hpa-node", "containers": [{"name": "app", "image": "web:1", "resources": resources}]},
    }
    await client.create(R.PODS, pod)
    status = {
        "phase": "Running",
        "startTime": ago(600),
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ago(590)}],
    }
    await client.patch(R.PODS, name, {"status": status}, namespace=ns, subresource="status")


def usage_of(pods: list[tuple[str, str]], cpu: str) -> list[PodUsage]:
    return [PodUsage(ns, name, {"app": {"cpu": cpu, "memory": "100Mi"}}) for ns, name in pods]


# --- metrics API and kubectl top -----------------------------------------------------------------


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    async with Client.from_kubeconfig(server.kubeconfig) as c:
        yield c


async def test_reported_usage_shows_in_kubectl_top(server: Server, client: Client) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns, node = f"top-{suffix}", f"metrics-node-{suffix}"
    await client.create(R.NAMESPACES, {"metadata": {"name": ns}})
    await make_node(client, node)
    try:
        for name in ("web-a", "web-b"):
            await make_running_pod(client, ns, name, {"app": "web"}, cpu="500m")
        await make_running_pod(client, ns, "db", {"app": "db"}, cpu="500m")
        pods = [
            PodUsage(ns, "web-a", {"app": {"cpu": "250m", "memory": "64Mi"}}),
            PodUsage(ns, "web-b", {"app": {"cpu": "12345678n", "memory": "123456Ki"}}),
            PodUsage(ns, "db", {"app": {"cpu": "1", "memory": "1Gi"}}),
        ]
        await report_usage(client, node, {"cpu": "1500m", "memory": "2Gi"}, pods)

        top = server.kubectl("top", "nodes", "-l", f"metrics-test={node}").stdout
        line = next(line.split() for line in top.splitlines() if line.startswith(node))
        assert line[1:] == ["1500m", "37%", "2048Mi", "12%"], top  # of 4 cores and 16Gi allocatable

        top = server.kubectl("top", "pods", "-n", ns).stdout.splitlines()
        assert top[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
        rows = {row.split()[0]: row.split()[1:] for row in top[1:]}
        assert rows == {"db": ["1000m", "1024Mi"], "web-a": ["250m", "64Mi"], "web-b": ["13m", "120Mi"]}
        top = server.kubectl("top", "pods", "-n", ns, "-l", "app=web", "--containers").stdout
        assert "web-a   app    250m" in top and "db" not in top

        # the raw API as metrics-server serves it: labels of the pod, containers, window, timestamp
        code, body, _ = server.raw("GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/web-a")
        assert code == 200, body
        assert body["kind"] == "PodMetrics" and body["metadata"]["labels"] == {"app": "web"}
        assert body["containers"] == [{"name": "app", "usage": {"cpu": "250m", "memory": "64Mi"}}]
        assert body["window"] == "10s" and body["timestamp"].endswith("Z")
        code, body, _ = server.raw("GET", f"/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=metrics-test%3D{node}")
        assert code == 200 and [i["usage"] for i in body["items"]] == [{"cpu": "1500m", "memory": "2Gi"}]
        assert body["kind"] == "NodeMetricsList"
        # get podmetrics prints metrics-server's table
        out = server.kubectl("get", "podmetrics", "-n", ns, "web-a").stdout.split()
        assert out[:4] == ["NAME", "CPU", "MEMORY", "WINDOW"] and out[4:] == ["web-a", "250m", "64Mi", "10s"]

        # a pod that no longer exists has no metrics; read-only and no watch; the group is discoverable
        await client.delete(R.PODS, "db", namespace=ns, grace_period_seconds=0)
        code, body, _ = server.raw("GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/db")
        assert (code, body["reason"], body["message"]) == (404, "NotFound", 'pods.metrics.k8s.io "db" not found')
        code, body, _ = server.raw("DELETE", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/web-a")
        assert code == 405, body
        code, body, _ = server.raw("GET", "/apis/metrics.k8s.io/v1beta1/pods?watch=true")
        assert code == 405, body
        resources = server.kubectl("api-resources", "--api-group=metrics.k8s.io", "-o", "name").stdout.split()
        assert sorted(resources) == ["nodes.metrics.k8s.io", "pods.metrics.k8s.io"]
    finally:
        with contextlib.suppress(errors.StatusError):
            await client.delete(R.NAMESPACES, ns)
        with contextlib.suppress(errors.StatusError):
            await client.delete(R.NODES, node)


async def test_bad_reports_are_rejected_and_change_nothing(server: Server, client: Client) -> None:
    node = f"metrics-node-{uuid.uuid4().hex[:6]}"
    await make_node(client, node)
    try:
        await report_usage(client, node, {"cpu": "1", "memory": "1Gi"}, [])
        path = f"/apis/metrics.k8s.io/v1beta1/nodes/{node}/report"
        code, body, _ = server.raw("POST", path, {"usage": {"cpu": "fast"}})
        assert (code, body["reason"]) == (400, "BadRequest") and "usage.cpu: Invalid value" in body["message"]
        code, body, _ = server.raw("GET", path)
        assert code == 405, body
        code, body, _ = server.raw("POST", path, {"usage": {"cpu": "1"}}, auth=False)
        assert code == 401, body
        code, body, _ = server.raw("GET", f"/apis/metrics.k8s.io/v1beta1/nodes/{node}")
        assert code == 200 and body["usage"] == {"cpu": "1", "memory": "1Gi"}
    finally:
        with contextlib.suppress(errors.StatusError):
            await client.delete(R.NODES, node)


# --- the HPA ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hpa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server running only the HPA controller, evaluating every second, stabilizing down over 3 s."""
    args = ["--controllers", "horizontalpodautoscaling", "--disable-scheduler",
            "--hpa-sync-period", "1", "--hpa-downscale-stabilization", "3"]  # fmt: skip
    srv = Server(tmp_path_factory.mktemp("skiff-hpa"), extra_args=args).start()
    yield srv
    srv.stop()


class FakeWorkload:
    """Stands in for the Deployment controller and the kubelet: one Ready pod per replica, usage reported."""

    def __init__(self, client: Client, ns: str, name: str, *, cpu_request: str | None = "100m") -> None:
        self.client, self.ns, self.name, self.cpu_request = client, ns, name, cpu_request
        self.cpu = "10m"
        self.pods: list[str] = []

    async def sync(self) -> None:
        deployment = await self.client.get(R.DEPLOYMENTS, self.name, namespace=self.ns)
        want = deployment["spec"]["replicas"]
        while len(self.pods) < want:
            pod = f"{self.name}-{uuid.uuid4().hex[:5]}"
            await make_running_pod(self.client, self.ns, pod, {"app": self.name}, cpu=self.cpu_request)
            self.pods.append(pod)
        while len(self.pods) > want:
            await self.client.delete(R.PODS, self.pods.pop(), namespace=self.ns, grace_period_seconds=0)
        await report_usage(self.client, "hpa-node", {"cpu": "1", "memory": "1Gi"}, self.usage())

    def usage(self) -> list[PodUsage]:
        return usage_of([(self.ns, p) for p in self.pods], self.cpu)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


def deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            },
        },
    }


def hpa(name: str, *, min_replicas: int = 1, max_replicas: int = 6, target: int = 50) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}},
                }
            ],
        },
    }


@pytest.fixture
async def hpa_client(hpa_server: Server) -> AsyncIterator[tuple[Client, str]]:
    ns = f"hpa-{uuid.uuid4().hex[:6]}"
    async with Client.from_kubeconfig(hpa_server.kubeconfig) as c:
        with contextlib.suppress(errors.AlreadyExists):
            await make_node(c, "hpa-node")
        await c.create(R.NAMESPACES, {"metadata": {"name": ns}})
        yield c, ns
        with contextlib.suppress(errors.StatusError):
            await c.delete(R.NAMESPACES, ns)


def condition(hpa_obj: Obj, type_: str) -> Obj:
    return next((c for c in (hpa_obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def rescale_events(client: Client, ns: str, name: str) -> list[str]:
    listed = await client.list(R.EVENTS, namespace=ns, field_selector=f"involvedObject.name={name}")
    return [e["message"] for e in listed["items"] if e["reason"] == "SuccessfulRescale"]


async def test_hpa_scales_a_deployment_up_and_down_with_reported_usage(
    hpa_server: Server, hpa_client: tuple[Client, str]
) -> None:
    client, ns = hpa_client
    await client.create(R.DEPLOYMENTS, deployment("web", 2), namespace=ns)
    # every replica count the HPA sets, replayed at the end from the watch history (a step may last a second)
    recording = Recording(hpa_server, f"/apis/apps/v1/namespaces/{ns}/deployments?fieldSelector=metadata.name%3Dweb")
    await client.create(R.HPAS, hpa("web", min_replicas=2), namespace=ns)
    workload = FakeWorkload(client, ns, "web")
    stop = asyncio.Event()
    runner = asyncio.create_task(workload.run(stop))
    try:
        # high: 200m of 100m requested = 200% of a 50% target, ratio 4: 2 * 4 = 8 wanted; without
        # spec.behavior a step at most doubles (or goes to 4), so 2 -> 4, then 4 -> 6 (maxReplicas)
        workload.cpu = "200m"

        async def scaled_up() -> bool:
            d = await client.get(R.DEPLOYMENTS, "web", namespace=ns)
            return bool(d["spec"]["replicas"] == 6)

        await eventually(scaled_up, within=60, what="the HPA to scale web up to 6")
        reason = "reason: cpu resource utilization (percentage of request) above target"

        async def rescaled_up() -> bool:  # the events are recorded after the scale writes: they may trail them
            events = await rescale_events(client, ns, "web")
            return f"New size: 4; {reason}" in events and f"New size: 6; {reason}" in events

        await eventually(rescaled_up, what="the SuccessfulRescale events to 4 and 6")

        async def status_settled() -> Obj | None:
            obj = await client.get(R.HPAS, "web", namespace=ns)
            st = obj.get("status") or {}
            return obj if st.get("currentReplicas") == 6 and st.get("currentMetrics") else None

        obj = await eventually(status_settled, what="HPA status at 6 replicas")
        st = obj["status"]
        assert st["desiredReplicas"] == 6 and st["lastScaleTime"]
        current = st["currentMetrics"][0]
        assert current["type"] == "Resource" and current["resource"]["name"] == "cpu"
        assert current["resource"]["current"]["averageUtilization"] == 200
        assert current["resource"]["current"]["averageValue"] == "200m"
        assert condition(obj, "AbleToScale")["status"] == "True"
        assert condition(obj, "ScalingActive")["reason"] == "ValidMetricFound"
        limited = condition(obj, "ScalingLimited")
        assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")
        out = hpa_server.kubectl("get", "hpa", "web", "-n", ns).stdout
        assert "cpu: 200%/50%" in out and "Deployment/web" in out, out

        # low: 10m = 10% -> ceil(6 * 0.2) = 2 (minReplicas) once the 3 s downscale stabilization has passed
        workload.cpu = "10m"
        low_since = time.monotonic()

        async def scaled_down() -> bool:
            d = await client.get(R.DEPLOYMENTS, "web", namespace=ns)
            return bool(d["spec"]["replicas"] == 2)

        await eventually(scaled_down, within=60, what="the HPA to scale web down to 2")
        assert time.monotonic() - low_since >= 2.5  # not before the stabilization window

        async def rescaled_down() -> bool:
            return "New size: 2; reason: All metrics below target" in await rescale_events(client, ns, "web")

        await eventually(rescaled_down, what="the SuccessfulRescale event to 2")
        # the way down was one step, the way up two: no flapping
        seen: list[int] = []
        for state in await asyncio.to_thread(lambda: [dict(s) for s in recording.states()]):
            replicas = state["web"]["spec"]["replicas"]
            if not seen or seen[-1] != replicas:
                seen.append(replicas)
        assert seen == [2, 4, 6, 2], seen
        described = hpa_server.kubectl("describe", "hpa", "web", "-n", ns).stdout
        assert "SuccessfulRescale" in described and "New size: 2; reason: All metrics below target" in described
    finally:
        stop.set()
        await runner


async def test_hpa_with_behavior_policies_limits_the_rate(hpa_client: tuple[Client, str]) -> None:
    client, ns = hpa_client
    await client.create(R.DEPLOYMENTS, deployment("api", 1), namespace=ns)
    spec = hpa("api", max_replicas=10)
    spec["spec"]["behavior"] = {
        "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}], "selectPolicy": "Max"},
        "scaleDown": {"selectPolicy": "Disabled"},
    }
    await client.create(R.HPAS, spec, namespace=ns)
    workload = FakeWorkload(client, ns, "api")
    workload.cpu = "500m"  # 500%: wants 10
    stop = asyncio.Event()
    runner = asyncio.create_task(workload.run(stop))
    try:

        async def limited() -> Obj | None:
            obj = await client.get(R.HPAS, "api", namespace=ns)
            cond = condition(obj, "ScalingLimited")
            return obj if cond.get("reason") == "ScaleUpLimit" and obj["status"].get("currentReplicas") == 2 else None

        obj = await eventually(limited, what="ScaleUpLimit at 2 replicas")
        assert obj["status"]["desiredReplicas"] == 2
        await asyncio.sleep(3)  # a few more periods: still one pod per 60 s
        d = await client.get(R.DEPLOYMENTS, "api", namespace=ns)
        assert d["spec"]["replicas"] == 2
        workload.cpu = "1m"  # scale-down disabled: stays
        await asyncio.sleep(5)
        d = await client.get(R.DEPLOYMENTS, "api", namespace=ns)
        assert d["spec"]["replicas"] == 2
    finally:
        stop.set()
        await runner


async def test_hpa_reports_pods_without_requests(hpa_server: Server, hpa_client: tuple[Client, str]) -> None:
    client, ns = hpa_client
    await client.create(R.DEPLOYMENTS, deployment("norequests", 1), namespace=ns)
    await client.create(R.HPAS, hpa("norequests"), namespace=ns)
    workload = FakeWorkload(client, ns, "norequests", cpu_request=None)
    await workload.sync()

    async def failing() -> Obj | None:
        obj = await client.get(R.HPAS, "norequests", namespace=ns)
        cond = condition(obj, "ScalingActive")
        return obj if "missing request" in cond.get("message", "") else None

    obj = await eventually(failing, what="ScalingActive=False FailedGetResourceMetric")
    cond = condition(obj, "ScalingActive")
    assert (cond["status"], cond["reason"]) == ("False", "FailedGetResourceMetric")
    assert cond["message"].startswith(
        "the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu"
    )
    missing = "failed to get cpu utilization: missing request for cpu in container app of"
    prefix = "invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: "
    wanted = {
        ("Warning", "FailedGetResourceMetric", missing),
        ("Warning", "FailedComputeMetricsReplicas", prefix + missing),
    }

    async def events_recorded() -> bool:
        listed = await client.list(R.EVENTS, namespace=ns, field_selector="involvedObject.name=norequests")
        return wanted <= {(e["type"], e["reason"], e["message"].split(" Pod ")[0]) for e in listed["items"]}

    await eventually(events_recorded, what="the warning events about the missing request")
    d = await client.get(R.DEPLOYMENTS, "norequests", namespace=ns)
    assert d["spec"]["replicas"] == 1
    described = hpa_server.kubectl("describe", "hpa", "norequests", "-n", ns).stdout
    assert "missing request for cpu" in described


async def test_hpa_target_missing(hpa_client: tuple[Client, str]) -> None:
    client, ns = hpa_client
    await client.create(R.HPAS, hpa("ghost"), namespace=ns)

    async def failed() -> Obj | None:
        obj = await client.get(R.HPAS, "ghost", namespace=ns)
        return obj if condition(obj, "AbleToScale").get("reason") == "FailedGetScale" else None

    obj = await eventually(failed, what="AbleToScale=False FailedGetScale")
    assert condition(obj, "AbleToScale")["message"].startswith(
        "the HPA controller was unable to get the target's current scale:"
    )


# --- the whole loop on simulated nodes ----------------------------------------------------------


def _present(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(
    not all(_present(m) for m in ("skiff.scheduler.scheduler", "skiff.controllers.deployment")),
    reason="needs the scheduler and the Deployment controller",
)
@pytest.mark.timeout(180)
def test_hpa_on_simulated_nodes_from_pod_annotations(
    tmp_path_factory: pytest.TempPathFactory, sim_nodes: Callable[..., Any]
) -> None:
    """Deployment → scheduler → simulated nodes report the annotated usage → HPA scales up, then down."""
    args = ["--hpa-sync-period", "2", "--hpa-downscale-stabilization", "5"]
    srv = Server(tmp_path_factory.mktemp("skiff-hpa-sim"), extra_args=args).start()
    try:
        sim_nodes(2, server=srv, cpu="8", memory="32Gi")
        manifest = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: busy, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: busy}}
  template:
    metadata:
      labels: {app: busy}
      annotations: {sim.skiff.dev/cpu-usage: "300m", sim.skiff.dev/memory-usage: "50Mi"}
    spec:
      containers:
      - name: app
        image: busy:1
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"""
        srv.kubectl("apply", "-f", "-", input=manifest)
        srv.kubectl("autoscale", "deployment", "busy", "--cpu=50%", "--min=1", "--max=5")

        def replicas() -> int:
            code, body, _ = srv.raw("GET", "/apis/apps/v1/namespaces/default/deployments/busy")
            assert code == 200, body
            return int(body["spec"]["replicas"])

        def wait(what: str, check: Callable[[], bool], within: float) -> None:
            deadline = time.monotonic() + within
            while not check():
                if time.monotonic() > deadline:
                    described = srv.kubectl("describe", "hpa", "busy", check=False).stdout
                    raise AssertionError(f"timed out waiting for {what}:\n{described}")
                time.sleep(0.5)

        # 300m of a 100m request = 300% of the 50% target: up to maxReplicas
        wait("the HPA to scale busy up to 5", lambda: replicas() == 5, within=90)
        top = srv.kubectl("top", "pods", "-l", "app=busy").stdout
        assert "300m" in top and "50Mi" in top, top
        # the load drops: annotate the running pods; their nodes report it within a report interval
        srv.kubectl("annotate", "pods", "-l", "app=busy", "sim.skiff.dev/cpu-usage=5m", "--overwrite")
        wait("the HPA to scale busy down to 1", lambda: replicas() == 1, within=90)
        described = srv.kubectl("describe", "hpa", "busy").stdout
        assert "New size: 5; reason: cpu resource utilization (percentage of request) above target" in described
        assert "reason: All metrics below target" in described
    finally:
        srv.stop()

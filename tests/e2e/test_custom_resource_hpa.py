"""A HorizontalPodAutoscaler scales a custom kind through its CRD's scale subresource.

The HPA controller finds the target by discovery and reads and writes
`…/widgets/<name>/scale` (autoscaling/v1 Scale from specReplicasPath,
statusReplicasPath and labelSelectorPath), exactly as for a Deployment; the
pods and their usage are played by the test, as in `test_metrics_hpa`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest

from skiff.client import Client
from skiff.client import resources as R
from skiff.client.resources import Resource
from skiff.node.metrics import report_usage
from tests.e2e.cluster import Server
from tests.e2e.test_custom_resources import apply_crd, widget_crd
from tests.e2e.test_metrics_hpa import eventually, make_node, make_running_pod, usage_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def hpa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--controllers", "horizontalpodautoscaling", "--disable-scheduler", "--hpa-sync-period", "1"]
    srv = Server(tmp_path_factory.mktemp("skiff-cr-hpa"), extra_args=args).start()
    yield srv
    srv.stop()


async def test_an_hpa_scales_a_custom_resource(hpa_server: Server) -> None:
    group, ns = f"h{uuid.uuid4().hex[:8]}.example.com", f"cr-hpa-{uuid.uuid4().hex[:6]}"
    apply_crd(hpa_server, widget_crd(group))
    widgets = Resource(group, "v1", "widgets", "Widget", True)
    async with Client.from_kubeconfig(hpa_server.kubeconfig) as client:
        await make_node(client, "hpa-node")
        await client.create(R.NAMESPACES, {"metadata": {"name": ns}})
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"},
                "spec": {"size": 1, "replicas": 1, "selector": "app=w"}}  # fmt: skip
        await client.create(widgets, body, namespace=ns)
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "w"},
            "spec": {
                "scaleTargetRef": {"apiVersion": f"{group}/v1", "kind": "Widget", "name": "w"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
            },
        }  # fmt: skip
        await client.create(R.HPAS, hpa, namespace=ns)
        pods: list[str] = []
        stop = asyncio.Event()

        async def workload() -> None:
            """One Ready pod per replica of the widget, each using 200m of its 100m request."""
            while not stop.is_set():
                want = (await client.get(widgets, "w", namespace=ns))["spec"]["replicas"]
                while len(pods) < want:
                    pods.append(f"w-{uuid.uuid4().hex[:5]}")
                    await make_running_pod(client, ns, pods[-1], {"app": "w"}, cpu="100m")
                await client.patch(widgets, "w", {"status": {"replicas": len(pods)}}, namespace=ns,
                                   subresource="status")  # fmt: skip
                await report_usage(client, "hpa-node", {"cpu": "1", "memory": "1Gi"},
                                   usage_of([(ns, p) for p in pods], "200m"))  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

        runner = asyncio.create_task(workload())
        try:

            async def scaled() -> bool:
                return bool((await client.get(widgets, "w", namespace=ns))["spec"]["replicas"] == 3)

            await eventually(scaled, within=60, what="the HPA to scale the widget to 3")
            out = hpa_server.kubectl("get", "hpa", "w", "-n", ns).stdout
            assert "Widget/w" in out, out
            raw = hpa_server.kubectl("get", "--raw", f"/apis/{group}/v1/namespaces/{ns}/widgets/w/scale").stdout
            scale = json.loads(raw)
            assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=w"
        finally:
            stop.set()
            await runner

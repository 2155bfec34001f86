"""`skiff proxy` against a real `skiff server`: Services and EndpointSlices from the API become a node's rules.

The node is a network namespace (see proxy_lab); the proxy is the real command with --netns.
The Service has no selector and its EndpointSlice is written by the test, so that readiness is
the test's to change; its cluster IP is given explicitly, its node port allocated by the server.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import BIN, Server
from tests.e2e.proxy_lab import CLUSTER_CIDR, Lab, missing

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]
SLICE_LABEL = "kubernetes.io/service-name"
SUBNET = 63


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def api(server: Server, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
    code, out, _ = server.raw(method, path, body, content_type=content_type)
    assert code in (200, 201), f"{method} {path}: {code} {out}"
    return out


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(SUBNET)
    try:
        yield lab.setup(3, tmp_path / "www")
    finally:
        lab.close()


def test_skiff_proxy_follows_services_and_endpoint_slices(server: Server, lab: Lab, tmp_path: Path) -> None:
    name = f"proxied-{uuid.uuid4().hex[:6]}"
    cluster_ip = f"10.43.{random.randint(100, 250)}.{random.randint(2, 250)}"
    svc = api(server, "POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "clusterIP": cluster_ip,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    node_port = svc["spec"]["ports"][0]["nodePort"]
    slice_path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"

    def endpoints(not_ready: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [{"addresses": [p.ip], "conditions": {"ready": p.ip not in not_ready}} for p in lab.pods]

    api(server, "POST", slice_path, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "labels": {SLICE_LABEL: name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(),
    })  # fmt: skip
    before = lab.rules()
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen(
            [str(BIN / "skiff"), "proxy", "--kubeconfig", str(server.kubeconfig), "--cluster-cidr", CLUSTER_CIDR,
             "--netns", lab.node, "--node-name", "lab-node", "--min-sync-period", "0.5"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        everyone = {"pod-0", "pod-1", "pod-2"}

        def reached(host: str, port: int, count: int = 30) -> set[str]:
            return {str(r["ok"]) for r in lab.get(lab.client, host, port, count=count, timeout=1.0) if "ok" in r}

        wait_for("every backend through the cluster IP", lambda: reached(cluster_ip, 80) == everyone, timeout=60)
        assert reached(lab.node_ip, node_port) == everyone

        # pod-1 turns unready: within a few seconds no connection reaches it any more
        slice_obj = f"{slice_path}/{name}-1"
        patch = {"endpoints": endpoints(not_ready=(lab.pods[1].ip,))}
        api(server, "PATCH", slice_obj, patch, content_type="application/merge-patch+json")
        wait_for("pod-1 left out", lambda: reached(cluster_ip, 80) == {"pod-0", "pod-2"}, timeout=60)
        assert reached(cluster_ip, 80, count=40) == {"pod-0", "pod-2"}

        # sessionAffinity: ClientIP
        affinity = {"spec": {"sessionAffinity": "ClientIP"}}
        api(server, "PATCH", f"/api/v1/namespaces/default/services/{name}", affinity,
            content_type="application/merge-patch+json")  # fmt: skip
        wait_for("one backend per client", lambda: len(reached(cluster_ip, 80)) == 1, timeout=60)

        # no ready endpoint: refused at once, not a hang
        api(server, "PATCH", slice_obj, {"endpoints": endpoints(not_ready=tuple(p.ip for p in lab.pods))},
            content_type="application/merge-patch+json")  # fmt: skip
        wait_for(
            "connection refused",
            lambda: (
                [r.get("err") for r in lab.get(lab.client, cluster_ip, 80, count=2, timeout=3.0)]
                == ["refused", "refused"]
            ),
            timeout=5,
        )
        assert proxy.poll() is None, log.read_text()
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            code = proxy.wait(15)
        except subprocess.TimeoutExpired:
            proxy.kill()
            code = proxy.wait()
        server.raw("DELETE", f"/api/v1/namespaces/default/services/{name}")
        server.raw("DELETE", f"{slice_path}/{name}-1")
    assert code == 0, log.read_text()
    assert lab.rules() == before, "the proxy must remove its rules at exit"

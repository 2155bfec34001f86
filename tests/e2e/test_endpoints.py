"""Endpoints and EndpointSlices follow the pods a Service selects, end to end on a real server.

Pods run on simulated nodes (they get IPs and readiness from `skiff sim nodes`);
the Endpoints and EndpointSlice controllers of `skiff server` keep each
Service's addresses up to date as pods come, turn unready and go.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.cluster import Server, SimNodes

pytestmark = pytest.mark.timeout(180)
SLICE_LABEL = "kubernetes.io/service-name"


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


def create(server: Server, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    code, body, _ = server.raw("POST", path, obj)
    assert code == 201, body
    return dict(body)


def web_pod(name: str, node: str, *, labels: dict[str, str] | None = None, port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "web"}},
        "spec": {
            "nodeName": node,  # placed by hand: these tests are about endpoints, not scheduling
            "containers": [{"name": "web", "image": "registry.local/web:1",
                            "ports": [{"name": "http", "containerPort": port}]}],
        },
    }


def service(name: str, selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec},
    }
    if selector is not None:
        body["spec"]["selector"] = selector
    return body


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


class Api:
    def __init__(self, server: Server, ns: str) -> None:
        self.server, self.ns = server, ns

    def pods(self) -> list[dict[str, Any]]:
        return list(get(self.server, f"/api/v1/namespaces/{self.ns}/pods")["items"])

    def create_pod(self, pod: dict[str, Any]) -> None:
        create(self.server, f"/api/v1/namespaces/{self.ns}/pods", pod)

    def wait_pods_ready(self, n: int) -> list[dict[str, Any]]:
        return list(wait_for(f"{n} ready pods", lambda: (ps := [p for p in self.pods() if ready(p)])
                             and len(ps) == n and ps))

    def endpoints(self, name: str) -> dict[str, Any] | None:
        return get(self.server, f"/api/v1/namespaces/{self.ns}/endpoints/{name}")  # type: ignore[no-any-return]

    def slices(self, name: str) -> list[dict[str, Any]]:
        body = get(self.server, f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices"
                                f"?labelSelector={SLICE_LABEL}%3D{name}")
        return list(body["items"])


def addresses(ep: dict[str, Any] | None, field: str = "addresses") -> set[str]:
    return {a["ip"] for s in (ep or {}).get("subsets") or [] for a in s.get(field) or []}


def slice_endpoints(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["addresses"][0]: e for s in slices for e in s.get("endpoints") or []}


@pytest.fixture
def ns(server: Server) -> Iterator[str]:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    yield name
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def nodes(sim_nodes: Callable[..., SimNodes]) -> SimNodes:
    return sim_nodes(2)


def test_service_endpoints_follow_ready_pods(server: Server, ns: str, nodes: SimNodes) -> None:
    api = Api(server, ns)
    for i in range(3):
        api.create_pod(web_pod(f"web-{i}", nodes.names[i % 2]))
    api.create_pod(web_pod("other", nodes.names[0], labels={"app": "other"}))
    pods = {p["status"]["podIP"]: p for p in api.wait_pods_ready(4) if p["metadata"]["labels"]["app"] == "web"}
    svc = create(server, f"/api/v1/namespaces/{ns}/services", service("web", {"app": "web"}))

    # Endpoints: the three ready pods, the named targetPort resolved to the container port
    ep = wait_for("3 endpoint addresses", lambda: (e := api.endpoints("web")) and len(addresses(e)) == 3 and e)
    assert addresses(ep) == set(pods)
    (subset,) = ep["subsets"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    for addr in subset["addresses"]:
        pod = pods[addr["ip"]]
        assert addr["nodeName"] == pod["spec"]["nodeName"]
        assert addr["targetRef"] == {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                                     "uid": pod["metadata"]["uid"]}
    assert ep["metadata"]["labels"]["team"] == "a"
    out = server.kubectl("get", "endpoints", "web", "-n", ns).stdout
    assert ":8080" in out, out

    # EndpointSlice: one slice, three ready endpoints, owned by the Service
    (sl,) = wait_for("a slice with 3 endpoints",
                     lambda: (ss := api.slices("web")) and len(slice_endpoints(ss)) == 3 and ss)
    labels = sl["metadata"]["labels"]
    assert labels[SLICE_LABEL] == "web" and labels["team"] == "a"
    assert labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert sl["metadata"]["name"].startswith("web-")
    (owner,) = sl["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Service", "web",
                                                                               svc["metadata"]["uid"], True)
    assert sl["addressType"] == "IPv4"
    assert sl["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    for ip, e in slice_endpoints([sl]).items():
        assert e["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert e["nodeName"] == pods[ip]["spec"]["nodeName"]
        assert e["targetRef"]["name"] == pods[ip]["metadata"]["name"]
    assert "8080" in server.kubectl("get", "endpointslices", "-n", ns).stdout
    # settled: nothing is rewritten while nothing changes
    time.sleep(1.5)
    assert api.endpoints("web")["metadata"]["resourceVersion"] == ep["metadata"]["resourceVersion"]  # type: ignore[index]
    assert [s["metadata"]["resourceVersion"] for s in api.slices("web")] == [sl["metadata"]["resourceVersion"]]

    # a pod turning unready moves to notReadyAddresses and is not ready in its slice
    server.kubectl("annotate", "pod", "web-1", "-n", ns, "sim.skiff.dev/not-ready=true")
    ip1 = next(ip for ip, p in pods.items() if p["metadata"]["name"] == "web-1")
    ep = wait_for("web-1 not ready", lambda: (e := api.endpoints("web")) and addresses(e, "notReadyAddresses")
                  == {ip1} and e)
    assert addresses(ep) == set(pods) - {ip1}
    e1 = wait_for("web-1 unready in its slice",
                  lambda: (e := slice_endpoints(api.slices("web")).get(ip1)) and not e["conditions"]["ready"] and e)
    assert e1["conditions"] == {"ready": False, "serving": False, "terminating": False}

    # a deleted pod leaves both
    ip0 = next(ip for ip, p in pods.items() if p["metadata"]["name"] == "web-0")
    server.kubectl("delete", "pod", "web-0", "-n", ns)
    ep = wait_for("web-0 gone", lambda: (e := api.endpoints("web")) and ip0 not in addresses(e) and e)
    assert addresses(ep) == set(pods) - {ip0, ip1}
    wait_for("web-0 gone from slices", lambda: ip0 not in slice_endpoints(api.slices("web")))

    # a new matching pod joins
    api.create_pod(web_pod("web-3", nodes.names[1]))
    wait_for("web-3 joins", lambda: len(addresses(api.endpoints("web"))) == 2
             and len([e for e in slice_endpoints(api.slices("web")).values() if e["conditions"]["ready"]]) == 2)

    # the Service goes: so do its Endpoints and slices
    server.kubectl("delete", "service", "web", "-n", ns)
    wait_for("endpoints deleted", lambda: api.endpoints("web") is None)
    wait_for("slices deleted", lambda: not api.slices("web"))


def test_service_without_selector_is_left_alone(server: Server, ns: str) -> None:
    api = Api(server, ns)
    create(server, f"/api/v1/namespaces/{ns}/services", service("external"))
    manual = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
              "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"name": "http", "port": 9999}]}]}
    create(server, f"/api/v1/namespaces/{ns}/endpoints", manual)
    time.sleep(2)
    assert addresses(api.endpoints("external")) == {"192.0.2.10"}
    assert api.slices("external") == []


def test_service_without_pods_has_placeholder_slice_and_empty_endpoints(server: Server, ns: str) -> None:
    api = Api(server, ns)
    create(server, f"/api/v1/namespaces/{ns}/services", service("lonely", {"app": "nobody"}))
    ep = wait_for("endpoints", lambda: api.endpoints("lonely"))
    assert not ep.get("subsets")
    (sl,) = wait_for("placeholder slice", lambda: api.slices("lonely"))
    assert not sl.get("endpoints") and not sl.get("ports")
    time.sleep(1.5)
    assert len(api.slices("lonely")) == 1  # and only one


def test_named_ports_and_many_endpoints_split_into_slices(server: Server, ns: str, nodes: SimNodes) -> None:
    api = Api(server, ns)
    items = [web_pod(f"big-{i}", nodes.names[i % 2], labels={"app": "big"}, port=8080 if i % 5 else 9090)
             for i in range(130)]
    server.kubectl("create", "-n", ns, "-f", "-", input="\n---\n".join(json.dumps(i) for i in items))
    create(server, f"/api/v1/namespaces/{ns}/services", service("big", {"app": "big"}))
    api.wait_pods_ready(130)

    def settled() -> list[dict[str, Any]] | None:
        ss = api.slices("big")
        return ss if len(slice_endpoints(ss)) == 130 else None

    slices = wait_for("130 endpoints in slices", settled, timeout=60)
    by_port: dict[int, int] = {}
    for sl in slices:
        assert len(sl["endpoints"]) <= 100
        (port,) = sl["ports"]
        by_port[port["port"]] = by_port.get(port["port"], 0) + len(sl["endpoints"])
    assert by_port == {8080: 104, 9090: 26}
    assert len(slices) == 3  # 104 endpoints on 8080 need two slices, 26 on 9090 one
    # Endpoints: one subset per resolved port (another controller than the slices': it may trail them)
    ep = wait_for("130 addresses in Endpoints", lambda: (e := api.endpoints("big")) and len(addresses(e)) == 130 and e)
    assert sorted((s["ports"][0]["port"], len(s["addresses"])) for s in ep["subsets"]) == [(8080, 104), (9090, 26)]

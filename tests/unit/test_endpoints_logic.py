"""What the Endpoints and EndpointSlice controllers compute, without a server: subsets, ports, slice plans."""

from __future__ import annotations

from typing import Any

from skiff.controllers.endpoints import desired_subsets, truncate
from skiff.controllers.endpointslice import endpoint_key, new_slice, plan_port_mapping, pod_to_endpoint
from skiff.controllers.endpointutil import find_port, should_pod_be_in_endpoints

SVC: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
    "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http",
                                                     "protocol": "TCP"}]},
}


def pod(name: str, ip: str | None, *, ready: bool = True, port: int = 8080, deleting: bool = False,
        phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": {"nodeName": "n1", "containers": [
        {"name": "c", "ports": [{"name": "http", "containerPort": port}]}]}, "status": status}


def test_find_port() -> None:
    p = pod("a", "10.0.0.1")
    assert find_port(p, {"port": 80, "targetPort": "http"}) == 8080
    assert find_port(p, {"port": 80, "targetPort": 9000}) == 9000
    assert find_port(p, {"port": 80}) == 80
    assert find_port(p, {"port": 80, "targetPort": "grpc"}) is None
    assert find_port(p, {"port": 80, "targetPort": "http", "protocol": "UDP"}) is None


def test_which_pods_belong() -> None:
    assert should_pod_be_in_endpoints(pod("a", "10.0.0.1"), include_terminating=False)
    assert not should_pod_be_in_endpoints(pod("a", None), include_terminating=True)
    assert not should_pod_be_in_endpoints(pod("a", "10.0.0.1", phase="Succeeded"), include_terminating=True)
    assert not should_pod_be_in_endpoints(pod("a", "10.0.0.1", deleting=True), include_terminating=False)
    assert should_pod_be_in_endpoints(pod("a", "10.0.0.1", deleting=True), include_terminating=True)


def test_subsets_group_by_port_and_split_ready() -> None:
    pods = [pod("a", "10.0.0.2"), pod("b", "10.0.0.1"), pod("c", "10.0.0.3", ready=False),
            pod("d", "10.0.0.4", port=9090), pod("e", None), pod("f", "10.0.0.5", deleting=True)]
    subsets = desired_subsets(SVC, pods)
    assert [(s["ports"][0]["port"], [a["ip"] for a in s.get("addresses", [])],
             [a["ip"] for a in s.get("notReadyAddresses", [])]) for s in subsets] == [
        (8080, ["10.0.0.1", "10.0.0.2"], ["10.0.0.3"]), (9090, ["10.0.0.4"], [])]
    addr = subsets[0]["addresses"][0]
    assert addr == {"ip": "10.0.0.1", "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "namespace": "ns", "name": "b", "uid": "uid-b"}}
    publish = {**SVC, "spec": {**SVC["spec"], "publishNotReadyAddresses": True}}
    (only,) = [s for s in desired_subsets(publish, pods) if s["ports"][0]["port"] == 8080]
    assert "notReadyAddresses" not in only and len(only["addresses"]) == 4  # unready and terminating too


def test_truncate_keeps_ready_first() -> None:
    subsets = [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(3)],
                "notReadyAddresses": [{"ip": "10.0.1.1"}], "ports": [{"port": 1}]}]
    cut, truncated = truncate(subsets, limit=2)
    assert truncated and cut == [{"ports": [{"port": 1}], "addresses": [{"ip": "10.0.0.0"}, {"ip": "10.0.0.1"}]}]
    assert truncate(subsets, limit=10) == (subsets, False)


def endpoints(n: int, start: int = 0) -> dict[Any, dict[str, Any]]:
    eps = [pod_to_endpoint(pod(f"p{i}", f"10.0.{i // 250}.{i % 250 + 1}"), None, SVC, "IPv4")
           for i in range(start, start + n)]
    return {endpoint_key(e): e for e in eps}


PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_plan_creates_slices_of_at_most_max() -> None:
    plan = plan_port_mapping(SVC, "IPv4", PORTS, [], endpoints(250), 100)
    assert [len(s["endpoints"]) for s in plan.create] == [100, 100, 50] and not plan.update and not plan.delete
    sl = plan.create[0]
    assert sl["metadata"]["labels"] == {"team": "a", "kubernetes.io/service-name": "web",
                                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert sl["metadata"]["ownerReferences"][0]["uid"] == "svc-uid" and sl["addressType"] == "IPv4"
    e = sl["endpoints"][0]
    assert e["conditions"] == {"ready": True, "serving": True, "terminating": False} and e["nodeName"] == "n1"


def existing(name: str, eps: list[dict[str, Any]]) -> dict[str, Any]:
    sl = new_slice(SVC, "IPv4", PORTS, eps)
    sl["metadata"]["name"] = name
    return sl


def test_plan_changes_little() -> None:
    desired = endpoints(60)
    current = existing("web-a", list(desired.values())[:50])
    # unchanged: nothing to write
    plan = plan_port_mapping(SVC, "IPv4", PORTS, [current], dict(list(desired.items())[:50]), 100)
    assert not (plan.create or plan.update or plan.delete)
    # ten more fit into the existing slice: one update, no new slice
    plan = plan_port_mapping(SVC, "IPv4", PORTS, [current], desired, 100)
    assert not plan.create and [len(s["endpoints"]) for s in plan.update] == [60]
    # one endpoint changes condition: only its slice is written
    changed = dict(list(desired.items())[:50])
    key = next(iter(changed))
    changed[key] = {**changed[key], "conditions": {"ready": False, "serving": False, "terminating": True}}
    plan = plan_port_mapping(SVC, "IPv4", PORTS, [current, existing("web-b", [])], changed, 100)
    assert [s["metadata"]["name"] for s in plan.update] == ["web-a"]
    assert [s["metadata"]["name"] for s in plan.delete] == ["web-b"]  # empty: deleted
    # everything gone: the slice is deleted
    plan = plan_port_mapping(SVC, "IPv4", PORTS, [current], {}, 100)
    assert plan.delete == [current]


def test_plan_drops_duplicates_across_slices() -> None:
    desired = endpoints(3)
    one = existing("web-a", list(desired.values()))
    two = existing("web-b", list(desired.values())[:1])
    plan = plan_port_mapping(SVC, "IPv4", PORTS, [one, two], desired, 100)
    assert plan.delete == [two] and not plan.update and not plan.create

"""PriorityClasses, pod priority and default tolerations through the real kubectl and the official client.

The shared server holds no globalDefault class (it would change every other
test's pods); tests that need one, or other server flags, or simulated nodes
that must see only their own pods, start a server of their own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import Server, SimNodes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
Obj = dict[str, Any]

TOLERATIONS_300 = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod_yaml(name: str, ns: str, **spec: Any) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}], **spec},
    }
    return json.dumps(body)


@pytest.fixture
def ns(server: Server) -> Iterator[str]:
    name = unique("prio")
    server.kubectl("create", "namespace", name)
    yield name
    server.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str) -> Server:
        srv = Server(tmp_path / f"srv{len(started)}", extra_args=list(extra)).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


# --- the kind -----------------------------------------------------------------------------------------


def test_system_classes_exist_and_print_as_kubernetes(server: Server) -> None:
    out = server.kubectl("get", "priorityclasses").stdout.splitlines()
    assert out[0].split() == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["system-cluster-critical"][1:3] == ["2000000000", "false"]
    assert rows["system-node-critical"][1:3] == ["2000001000", "false"]
    assert rows["system-node-critical"][4] == "PreemptLowerPriority"
    described = yaml.safe_load(server.kubectl("get", "pc", "system-node-critical", "-o", "yaml").stdout)
    assert described["description"] == "Used for system critical pods that must not be moved from their current node."
    resources = server.kubectl("api-resources", "--api-group=scheduling.k8s.io").stdout.splitlines()
    assert resources[1].split() == ["priorityclasses", "pc", "scheduling.k8s.io/v1", "false", "PriorityClass"]


def test_kubectl_creates_and_gets_a_class(server: Server) -> None:
    name = unique("high")
    server.kubectl("create", "priorityclass", name, "--value=1000", "--description=for the important ones")
    obj = yaml.safe_load(server.kubectl("get", "pc", name, "-o", "yaml").stdout)
    assert obj["apiVersion"] == "scheduling.k8s.io/v1"
    assert (obj["value"], obj["description"]) == (1000, "for the important ones")
    assert obj["preemptionPolicy"] == "PreemptLowerPriority"  # defaulted
    assert obj["metadata"]["generation"] == 1
    assert "globalDefault" not in obj
    row = server.kubectl("get", "pc", name, "--no-headers").stdout.split()
    assert (row[0], row[1], row[2], row[4]) == (name, "1000", "false", "PreemptLowerPriority")
    never = unique("never")
    server.kubectl("create", "priorityclass", never, "--value=5", "--preemption-policy=Never")
    got = k8s.SchedulingV1Api(server.client()).read_priority_class(never)
    assert (got.value, got.preemption_policy) == (5, "Never")
    server.kubectl("delete", "pc", name, never)


def test_value_and_policy_are_immutable(server: Server) -> None:
    name = unique("fixed")
    server.kubectl("create", "priorityclass", name, "--value=10")
    proc = server.kubectl("patch", "pc", name, "--type=merge", "-p", '{"value": 11}', check=False)
    assert proc.returncode != 0
    assert f'The PriorityClass "{name}" is invalid: value: Forbidden: may not be changed in an update.' in proc.stderr
    code, body, _ = server.raw(
        "PATCH",
        f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}",
        {"preemptionPolicy": "Never"},
        content_type="application/merge-patch+json",
    )
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        f'PriorityClass.scheduling.k8s.io "{name}" is invalid: preemptionPolicy: Invalid value: "Never": '
        "field is immutable"
    )
    # the description may change, and the generation stays 1
    server.kubectl("patch", "pc", name, "--type=merge", "-p", '{"description": "changed"}')
    obj = yaml.safe_load(server.kubectl("get", "pc", name, "-o", "yaml").stdout)
    assert (obj["description"], obj["metadata"]["generation"]) == ("changed", 1)
    server.kubectl("delete", "pc", name)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("too-high", 1_000_000_001, "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
        (
            "system-mine",
            10,
            "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use "
            "only. error: system-mine is not a known system priority class",
        ),
    ],
    ids=["over-max", "reserved-prefix"],
)
def test_invalid_classes_are_refused(server: Server, name: str, value: int, message: str) -> None:
    body = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value}
    code, status, _ = server.raw("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", body)
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == f'PriorityClass.scheduling.k8s.io "{name}" is invalid: {message}'


def test_system_classes_cannot_be_deleted(server: Server) -> None:
    proc = server.kubectl("delete", "pc", "system-cluster-critical", check=False)
    assert proc.returncode != 0
    assert (
        'Error from server (Forbidden): priorityclasses.scheduling.k8s.io "system-cluster-critical" is forbidden: '
        "this is a system priority class and cannot be deleted"
    ) in proc.stderr
    server.kubectl("get", "pc", "system-cluster-critical")


# --- pods ---------------------------------------------------------------------------------------------


def test_unknown_class_is_forbidden(server: Server, ns: str) -> None:
    proc = server.kubectl("create", "-f", "-", input=pod_yaml("x", ns, priorityClassName="foo"), check=False)
    assert proc.returncode != 0
    assert "Error from server (Forbidden)" in proc.stderr
    assert 'pods "x" is forbidden: no PriorityClass with name foo was found' in proc.stderr
    core = k8s.CoreV1Api(server.client())
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(ns, json.loads(pod_yaml("y", ns, priorityClassName="foo")))
    assert err.value.status == 403
    status = json.loads(str(err.value.body))
    assert status["reason"] == "Forbidden"
    assert status["details"] == {"name": "y", "kind": "pods"}


def test_priority_comes_from_the_class(server: Server, ns: str) -> None:
    high = unique("high")
    server.kubectl("create", "priorityclass", high, "--value=4242", "--preemption-policy=Never")
    server.kubectl("create", "-f", "-", input=pod_yaml("p", ns, priorityClassName=high))
    pod = k8s.CoreV1Api(server.client()).read_namespaced_pod("p", ns)
    assert pod.spec is not None
    assert (pod.spec.priority_class_name, pod.spec.priority, pod.spec.preemption_policy) == (high, 4242, "Never")
    # no class and no global default: priority 0
    server.kubectl("create", "-f", "-", input=pod_yaml("plain", ns))
    plain = yaml.safe_load(server.kubectl("get", "pod", "plain", "-n", ns, "-o", "yaml").stdout)
    assert (plain["spec"]["priority"], plain["spec"]["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    assert "priorityClassName" not in plain["spec"]
    # a priority of the pod's own that differs from the class's: 403
    proc = server.kubectl(
        "create", "-f", "-", input=pod_yaml("own", ns, priorityClassName=high, priority=7), check=False
    )
    assert proc.returncode != 0
    assert (
        'pods "own" is forbidden: the integer value of priority (7) must not be provided in pod spec; '
        "priority admission controller computed 4242 from the given PriorityClass name"
    ) in proc.stderr
    # the same value is accepted
    server.kubectl("create", "-f", "-", input=pod_yaml("same", ns, priorityClassName=high, priority=4242))
    # an update that leaves priority and preemptionPolicy out keeps them (pod updates may not change them)
    path = f"/api/v1/namespaces/{ns}/pods/p"
    code, current, _ = server.raw("GET", path)
    assert code == 200
    del current["spec"]["priority"], current["spec"]["preemptionPolicy"]
    current["metadata"].setdefault("labels", {})["touched"] = "yes"
    code, updated, _ = server.raw("PUT", path, current)
    assert code == 200, updated
    assert (updated["spec"]["priority"], updated["spec"]["preemptionPolicy"]) == (4242, "Never")
    assert updated["metadata"]["labels"]["touched"] == "yes"
    server.kubectl("delete", "pod", "--all", "-n", ns, "--wait=false")
    server.kubectl("delete", "pc", high)


def test_pods_get_default_tolerations(server: Server, ns: str) -> None:
    server.kubectl("create", "-f", "-", input=pod_yaml("t", ns))
    pod = yaml.safe_load(server.kubectl("get", "pod", "t", "-n", ns, "-o", "yaml").stdout)
    assert pod["spec"]["tolerations"] == TOLERATIONS_300
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
    server.kubectl("create", "-f", "-", input=pod_yaml("u", ns, tolerations=[own]))
    pod = yaml.safe_load(server.kubectl("get", "pod", "u", "-n", ns, "-o", "yaml").stdout)
    assert pod["spec"]["tolerations"] == [own, TOLERATIONS_300[0]]
    anything = {"operator": "Exists"}
    server.kubectl("create", "-f", "-", input=pod_yaml("v", ns, tolerations=[anything]))
    pod = yaml.safe_load(server.kubectl("get", "pod", "v", "-n", ns, "-o", "yaml").stdout)
    assert pod["spec"]["tolerations"] == [anything]
    # pods made by controllers get them too
    server.kubectl("create", "deployment", "d", "-n", ns, "--image=nginx:1.25")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = json.loads(server.kubectl("get", "pods", "-n", ns, "-l", "app=d", "-o", "json").stdout)["items"]
        if items:
            assert items[0]["spec"]["tolerations"] == TOLERATIONS_300
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the deployment made no pod")


def test_toleration_seconds_flags(own_server: Callable[..., Server]) -> None:
    srv = own_server("--default-not-ready-toleration-seconds", "60", "--default-unreachable-toleration-seconds", "7")
    srv.kubectl("create", "-f", "-", input=pod_yaml("t", "default"))
    pod = yaml.safe_load(srv.kubectl("get", "pod", "t", "-o", "yaml").stdout)
    assert [t["tolerationSeconds"] for t in pod["spec"]["tolerations"]] == [60, 7]


def test_one_global_default(own_server: Callable[..., Server]) -> None:
    srv = own_server()
    srv.kubectl("create", "priorityclass", "standard", "--value=50", "--global-default=true")
    proc = srv.kubectl("create", "priorityclass", "other", "--value=60", "--global-default=true", check=False)
    assert proc.returncode != 0
    message = (
        'priorityclasses.scheduling.k8s.io "other" is forbidden: '
        "PriorityClass standard is already marked as default. Only one default can exist"
    )
    assert message in proc.stderr
    body = {"metadata": {"name": "other"}, "value": 60, "globalDefault": True}
    code, status, _ = srv.raw("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", body)
    assert (code, status["reason"], status["message"]) == (403, "Forbidden", message)
    row = srv.kubectl("get", "pc", "standard", "--no-headers").stdout.split()
    assert row[:3] == ["standard", "50", "true"]
    # marking another class default later is refused the same way
    srv.kubectl("create", "priorityclass", "other", "--value=60")
    proc = srv.kubectl("patch", "pc", "other", "--type=merge", "-p", '{"globalDefault": true}', check=False)
    assert "PriorityClass standard is already marked as default. Only one default can exist" in proc.stderr
    # a pod naming no class gets the default's name and value
    srv.kubectl("create", "-f", "-", input=pod_yaml("d", "default"))
    pod = yaml.safe_load(srv.kubectl("get", "pod", "d", "-o", "yaml").stdout)
    assert (pod["spec"]["priorityClassName"], pod["spec"]["priority"]) == ("standard", 50)


# --- preemption with classes --------------------------------------------------------------------------


def _pods(srv: Server, selector: str) -> list[Obj]:
    items: list[Obj] = json.loads(srv.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    return items


def _wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_preemption_with_priority_classes(
    own_server: Callable[..., Server], sim_nodes: Callable[..., SimNodes]
) -> None:
    srv = own_server()
    sim_nodes(1, server=srv, cpu="1", prefix="tight")
    srv.kubectl("create", "priorityclass", "low", "--value=10")
    srv.kubectl("create", "priorityclass", "high", "--value=1000")
    filler = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "filler"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "filler"}},
            "template": {
                "metadata": {"labels": {"app": "filler"}},
                "spec": {
                    "priorityClassName": "low",
                    "containers": [{"name": "app", "image": "nginx:1.25", "resources": {"requests": {"cpu": "800m"}}}],
                },
            },
        },
    }
    srv.kubectl("apply", "-f", "-", input=json.dumps(filler))
    victim = _wait(
        lambda: [p for p in _pods(srv, "app=filler") if p["status"].get("phase") == "Running"], "the filler Running"
    )[0]
    assert victim["spec"]["priority"] == 10
    urgent = json.loads(pod_yaml("urgent", "default", priorityClassName="high"))
    urgent["metadata"]["labels"] = {"app": "urgent"}
    urgent["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "800m"}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(urgent))
    _wait(
        lambda: [p for p in _pods(srv, "app=urgent") if p["status"].get("phase") == "Running"], "the urgent pod Running"
    )
    pod = yaml.safe_load(srv.kubectl("get", "pod", "urgent", "-o", "yaml").stdout)
    assert (pod["spec"]["priority"], pod["spec"]["nodeName"]) == (1000, "tight-0")

    def preempted_event() -> bool:  # recorded after the preemption's writes: it may trail them
        events = srv.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={victim['metadata']['name']}", "-o", "json"
        ).stdout
        return "Preempted" in {e.get("reason") for e in json.loads(events)["items"]}

    _wait(preempted_event, "the Preempted event on the victim")
    # the filler's replacement cannot preempt the higher-priority pod: it waits
    time.sleep(2)
    waiting = [p for p in _pods(srv, "app=filler") if p["metadata"]["name"] != victim["metadata"]["name"]]
    assert waiting and all(not p["spec"].get("nodeName") for p in waiting)

"""Server-side Table output: the columns and cells `kubectl get` prints, per kind, as Kubernetes does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skiff.api.errors import BadRequest
from skiff.api.humanize import human_duration, parse_time, short_human_duration, since
from skiff.api.tables import include_object_param, to_table

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def md(name: str, *, created: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "creationTimestamp": created or ago(hours=5),
        **extra,
    }


def table(group: str, kind: str, *objs: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return to_table(group, kind, list(objs), now=NOW, **kw)


def columns(group: str, kind: str, **kw: Any) -> list[str]:
    return [c["name"] for c in table(group, kind, **kw)["columnDefinitions"]]


def cells(group: str, kind: str, obj: dict[str, Any], **kw: Any) -> list[Any]:
    rows = table(group, kind, obj, **kw)["rows"]
    assert len(rows) == 1
    return list(rows[0]["cells"])


# --- humanized durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "human", "short"),
    [
        (timedelta(seconds=-5), "<invalid>", "<invalid>"),
        (timedelta(seconds=-1.5), "0s", "0s"),
        (timedelta(0), "0s", "0s"),
        (timedelta(seconds=5), "5s", "5s"),
        (timedelta(seconds=59), "59s", "59s"),
        (timedelta(seconds=90), "90s", "1m"),
        (timedelta(minutes=2), "2m", "2m"),
        (timedelta(minutes=3, seconds=12), "3m12s", "3m"),
        (timedelta(minutes=9, seconds=59), "9m59s", "9m"),
        (timedelta(minutes=10, seconds=30), "10m", "10m"),
        (timedelta(minutes=179), "179m", "2h"),
        (timedelta(hours=3), "3h", "3h"),
        (timedelta(hours=3, minutes=25), "3h25m", "3h"),
        (timedelta(hours=8, minutes=59), "8h", "8h"),
        (timedelta(hours=47), "47h", "1d"),
        (timedelta(days=2), "2d", "2d"),
        (timedelta(days=2, hours=4), "2d4h", "2d"),
        (timedelta(days=7, hours=23), "7d23h", "7d"),
        (timedelta(days=10), "10d", "10d"),
        (timedelta(days=400), "400d", "1y"),
        (timedelta(days=365 * 2), "2y", "2y"),
        (timedelta(days=365 * 3 + 20), "3y20d", "3y"),
        (timedelta(days=365 * 9), "9y", "9y"),
    ],
)
def test_human_durations(delta: timedelta, human: str, short: str) -> None:
    assert human_duration(delta) == human
    assert short_human_duration(delta) == short


def test_since_and_parse_time() -> None:
    assert since(ago(minutes=5), NOW) == "5m"
    assert since("2025-06-01T11:59:30.123456Z", NOW) == "29s"
    assert since("2025-06-01T13:59:30+02:00", NOW) == "30s"
    assert since(None, NOW) == "<unknown>"
    assert since("", NOW) == "<unknown>"
    assert since("0001-01-01T00:00:00Z", NOW) == "<unknown>"
    assert since("not a time", NOW) == "<unknown>"
    assert parse_time("2025-06-01T12:00:00Z") == NOW


# --- the Table envelope ---------------------------------------------------------------------------------


def test_table_envelope_and_partial_object_metadata() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md("web", labels={"app": "web"}), "spec": {}}
    out = table("", "Pod", pod, list_meta={"resourceVersion": "42", "continue": "abc"})
    assert out["kind"] == "Table"
    assert out["apiVersion"] == "meta.k8s.io/v1"
    assert out["metadata"] == {"resourceVersion": "42", "continue": "abc"}
    assert set(out["columnDefinitions"][0]) == {"name", "type", "format", "description", "priority"}
    assert out["columnDefinitions"][0] | {"description": ""} == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "",
        "priority": 0,
    }
    assert out["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": pod["metadata"],
    }
    assert "conditions" not in out["rows"][0]


def test_include_object_modes() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md("web"), "spec": {}}
    assert table("", "Pod", pod, include_object="Object")["rows"][0]["object"] is pod
    assert "object" not in table("", "Pod", pod, include_object="None")["rows"][0]
    assert table("", "Pod", pod, include_object="")["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    with pytest.raises(BadRequest):
        table("", "Pod", pod, include_object="Everything")


def test_include_object_param() -> None:
    assert include_object_param(None) == "Metadata"
    assert include_object_param("") == "Metadata"
    assert include_object_param("Object") == "Object"
    with pytest.raises(BadRequest):
        include_object_param("object")


def test_no_headers_and_empty_lists() -> None:
    out = table("", "Pod", no_headers=True)
    assert out["columnDefinitions"] is None
    assert out["rows"] == []
    assert out["metadata"] == {}


def test_wide_columns_have_priority_one() -> None:
    defs = table("apps", "Deployment")["columnDefinitions"]
    assert [(c["name"], c["priority"]) for c in defs] == [
        ("Name", 0),
        ("Ready", 0),
        ("Up-to-date", 0),
        ("Available", 0),
        ("Age", 0),
        ("Containers", 1),
        ("Images", 1),
        ("Selector", 1),
    ]


# --- column names per kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "kind", "names"),
    [
        (
            "",
            "Pod",
            ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"],
        ),
        (
            "",
            "Node",
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime",
            ],
        ),
        ("", "Namespace", ["Name", "Status", "Age"]),
        ("", "Service", ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]),
        ("", "Endpoints", ["Name", "Endpoints", "Age"]),
        ("", "ConfigMap", ["Name", "Data", "Age"]),
        ("", "Secret", ["Name", "Type", "Data", "Age"]),
        ("", "ServiceAccount", ["Name", "Age"]),
        (
            "",
            "Event",
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name",
            ],
        ),
        (
            "events.k8s.io",
            "Event",
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name",
            ],
        ),
        ("", "LimitRange", ["Name", "Created At"]),
        ("", "ResourceQuota", ["Name", "Request", "Limit", "Age"]),
        (
            "",
            "PersistentVolume",
            [
                "Name",
                "Capacity",
                "Access Modes",
                "Reclaim Policy",
                "Status",
                "Claim",
                "StorageClass",
                "VolumeAttributesClass",
                "Reason",
                "Age",
                "VolumeMode",
            ],
        ),
        (
            "",
            "PersistentVolumeClaim",
            [
                "Name",
                "Status",
                "Volume",
                "Capacity",
                "Access Modes",
                "StorageClass",
                "VolumeAttributesClass",
                "Age",
                "VolumeMode",
            ],
        ),
        (
            "apps",
            "Deployment",
            ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"],
        ),
        (
            "apps",
            "ReplicaSet",
            ["Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"],
        ),
        (
            "apps",
            "DaemonSet",
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers",
                "Images",
                "Selector",
            ],
        ),
        ("apps", "StatefulSet", ["Name", "Ready", "Age", "Containers", "Images"]),
        ("apps", "ControllerRevision", ["Name", "Controller", "Revision", "Age"]),
        (
            "batch",
            "Job",
            ["Name", "Status", "Completions", "Duration", "Age", "Containers", "Images", "Selector"],
        ),
        (
            "batch",
            "CronJob",
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector",
            ],
        ),
        (
            "autoscaling",
            "HorizontalPodAutoscaler",
            ["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"],
        ),
        ("coordination.k8s.io", "Lease", ["Name", "Holder", "Age"]),
        ("discovery.k8s.io", "EndpointSlice", ["Name", "AddressType", "Ports", "Endpoints", "Age"]),
        ("rbac.authorization.k8s.io", "Role", ["Name", "Created At"]),
        ("rbac.authorization.k8s.io", "ClusterRole", ["Name", "Created At"]),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"],
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"],
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition", ["Name", "Created At"]),
        ("example.com", "Widget", ["Name", "Created At"]),
    ],
)
def test_column_names(group: str, kind: str, names: list[str]) -> None:
    assert columns(group, kind) == names


def test_default_table_created_at_is_an_rfc3339_date() -> None:
    role = {"metadata": md("reader", created="2025-05-01T10:00:00+02:00"), "rules": []}
    out = table("rbac.authorization.k8s.io", "Role", role)
    assert out["columnDefinitions"][1]["type"] == "date"
    assert out["rows"][0]["cells"] == ["reader", "2025-05-01T08:00:00Z"]
    assert cells("", "LimitRange", {"metadata": {"name": "x"}}) == ["x", "0001-01-01T00:00:00Z"]


# --- pods -----------------------------------------------------------------------------------------------


def pod(
    name: str, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md(name, **meta),
        "spec": spec if spec is not None else {"containers": [{"name": "app", "image": "nginx"}]},
        "status": status if status is not None else {},
    }


def running(name: str = "app", ready: bool = True, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "started": True,
        "state": {"running": {"startedAt": ago(hours=5)}},
        **extra,
    }


POD_CASES: list[tuple[str, dict[str, Any], list[Any]]] = [
    (
        "running",
        pod(
            "web",
            {"containers": [{"name": "app"}], "nodeName": "node-1"},
            {
                "phase": "Running",
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}],
                "containerStatuses": [running()],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        ),
        ["web", "1/1", "Running", "0", "5h", "10.244.0.5", "node-1", "<none>", "<none>"],
    ),
    (
        "crashloop with restarts",
        pod(
            "crash",
            {"containers": [{"name": "app"}, {"name": "sidecar"}]},
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "app",
                        "ready": False,
                        "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                        "lastState": {
                            "terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(minutes=5)}
                        },
                    },
                    running(
                        "sidecar",
                        restarts=1,
                        lastState={"terminated": {"exitCode": 0, "finishedAt": ago(hours=2)}},
                    ),
                ],
            },
            created=ago(days=2, hours=4),
        ),
        ["crash", "1/2", "CrashLoopBackOff", "4 (5m ago)", "2d4h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "terminating",
        pod(
            "old",
            None,
            {"phase": "Running", "containerStatuses": [running()]},
            deletionTimestamp=ago(seconds=10),
            deletionGracePeriodSeconds=30,
        ),
        ["old", "1/1", "Terminating", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "terminating on a lost node",
        pod(
            "lost",
            None,
            {"phase": "Running", "reason": "NodeLost", "containerStatuses": [running()]},
            deletionTimestamp=ago(seconds=10),
        ),
        ["lost", "1/1", "Unknown", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "deleted after success stays Completed",
        pod(
            "done",
            None,
            {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "app",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
            },
            deletionTimestamp=ago(seconds=10),
        ),
        ["done", "0/1", "Completed", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "init containers running",
        pod(
            "init",
            {"initContainers": [{"name": "migrate"}, {"name": "warm"}], "containers": [{"name": "app"}]},
            {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": [
                    {
                        "name": "migrate",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    },
                    {"name": "warm", "ready": False, "restartCount": 0, "state": {"running": {}}},
                ],
                "containerStatuses": [
                    {
                        "name": "app",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}},
                    }
                ],
            },
        ),
        ["init", "0/1", "Init:1/2", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "init container waiting",
        pod(
            "pull",
            {"initContainers": [{"name": "fetch"}], "containers": [{"name": "app"}]},
            {
                "phase": "Pending",
                "initContainerStatuses": [
                    {
                        "name": "fetch",
                        "ready": False,
                        "restartCount": 2,
                        "state": {"waiting": {"reason": "ImagePullBackOff"}},
                    }
                ],
            },
        ),
        ["pull", "0/1", "Init:ImagePullBackOff", "2", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "init container failed without a reason",
        pod(
            "fail",
            {"initContainers": [{"name": "check"}], "containers": [{"name": "app"}]},
            {
                "phase": "Pending",
                "initContainerStatuses": [
                    {
                        "name": "check",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 2}},
                    }
                ],
            },
        ),
        ["fail", "0/1", "Init:ExitCode:2", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "sidecar init container counts toward READY",
        pod(
            "side",
            {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}],
            },
            {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "initContainerStatuses": [
                    running(
                        "proxy",
                        restarts=2,
                        lastState={"terminated": {"exitCode": 137, "finishedAt": ago(minutes=30)}},
                    )
                ],
                "containerStatuses": [running()],
            },
        ),
        ["side", "2/2", "Running", "2 (30m ago)", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "container killed by a signal",
        pod(
            "sig",
            None,
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "app",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "signal": 9}},
                    }
                ],
            },
        ),
        ["sig", "0/1", "Signal:9", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "pending without status",
        pod("new", None, {"phase": "Pending"}),
        ["new", "0/1", "Pending", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "scheduling gated",
        pod(
            "gated",
            None,
            {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
            },
        ),
        ["gated", "0/1", "SchedulingGated", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "evicted",
        pod("evicted", None, {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
        ["evicted", "0/1", "Evicted", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "completed container next to a running one",
        pod(
            "job",
            {"containers": [{"name": "a"}, {"name": "b"}]},
            {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "a",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    },
                    running("b"),
                ],
            },
        ),
        ["job", "1/2", "NotReady", "0", "5h", "<none>", "<none>", "<none>", "<none>"],
    ),
    (
        "readiness gates and nomination",
        pod(
            "gates",
            {
                "containers": [{"name": "app"}],
                "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}],
            },
            {
                "phase": "Pending",
                "nominatedNodeName": "node-2",
                "podIP": "fd00::5",
                "conditions": [
                    {"type": "example.com/lb", "status": "True"},
                    {"type": "example.com/dns", "status": "False"},
                ],
            },
        ),
        ["gates", "0/1", "Pending", "0", "5h", "fd00::5", "<none>", "node-2", "1/2"],
    ),
]


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in POD_CASES], ids=[c[0] for c in POD_CASES])
def test_pod_rows(obj: dict[str, Any], expected: list[Any]) -> None:
    assert cells("", "Pod", obj) == expected


def test_finished_pods_carry_a_completed_row_condition() -> None:
    done = pod("done", None, {"phase": "Succeeded"})
    failed = pod("failed", None, {"phase": "Failed"})
    out = table("", "Pod", done, failed, pod("run", None, {"phase": "Running"}))
    assert out["rows"][0]["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]
    assert out["rows"][1]["conditions"][0]["reason"] == "Failed"
    assert "conditions" not in out["rows"][2]


# --- other core kinds -----------------------------------------------------------------------------------


def obj(name: str, created: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"metadata": md(name, created=created), **fields}


CORE_CASES: list[tuple[str, str, dict[str, Any], list[Any]]] = [
    (
        "Node",
        "ready cordoned control plane",
        {
            "metadata": {
                "name": "cp-1",
                "creationTimestamp": ago(days=10),
                "labels": {
                    "node-role.kubernetes.io/control-plane": "",
                    "kubernetes.io/role": "master",
                    "node-role.kubernetes.io/": "",
                },
            },
            "spec": {"unschedulable": True},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ],
                "addresses": [
                    {"type": "Hostname", "address": "cp-1"},
                    {"type": "InternalIP", "address": "192.168.1.10"},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.37.1",
                    "osImage": "Debian GNU/Linux 13 (trixie)",
                    "kernelVersion": "6.12.0",
                    "containerRuntimeVersion": "containerd://2.1.0",
                },
            },
        },
        [
            "cp-1",
            "Ready,SchedulingDisabled",
            "control-plane,master",
            "10d",
            "v1.37.1",
            "192.168.1.10",
            "<none>",
            "Debian GNU/Linux 13 (trixie)",
            "6.12.0",
            "containerd://2.1.0",
        ],
    ),
    (
        "Node",
        "not ready worker",
        {
            "metadata": {"name": "w-1", "creationTimestamp": ago(minutes=3)},
            "status": {
                "conditions": [{"type": "Ready", "status": "Unknown"}],
                "addresses": [{"type": "ExternalIP", "address": "203.0.113.7"}],
            },
        },
        [
            "w-1",
            "NotReady",
            "<none>",
            "3m",
            "",
            "<none>",
            "203.0.113.7",
            "<unknown>",
            "<unknown>",
            "<unknown>",
        ],
    ),
    (
        "Node",
        "no conditions yet",
        {"metadata": {"name": "w-2", "creationTimestamp": ago(seconds=4)}},
        ["w-2", "Unknown", "<none>", "4s", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"],
    ),
    (
        "Namespace",
        "active",
        {"metadata": {"name": "team-a", "creationTimestamp": ago(days=30)}, "status": {"phase": "Active"}},
        ["team-a", "Active", "30d"],
    ),
    (
        "Namespace",
        "terminating",
        {"metadata": {"name": "gone", "creationTimestamp": ago(days=3)}, "status": {"phase": "Terminating"}},
        ["gone", "Terminating", "3d"],
    ),
    (
        "Service",
        "NodePort",
        obj(
            "web",
            spec={
                "type": "NodePort",
                "clusterIP": "10.96.0.12",
                "clusterIPs": ["10.96.0.12"],
                "selector": {"app": "web", "tier": "front"},
                "ports": [
                    {"port": 80, "protocol": "TCP", "targetPort": 8080},
                    {"port": 443, "protocol": "TCP", "nodePort": 30443},
                ],
            },
        ),
        ["web", "NodePort", "10.96.0.12", "<none>", "80/TCP,443:30443/TCP", "5h", "app=web,tier=front"],
    ),
    (
        "Service",
        "ClusterIP with external IPs and UDP",
        obj(
            "dns",
            spec={
                "type": "ClusterIP",
                "clusterIP": "10.96.0.10",
                "externalIPs": ["1.2.3.4", "5.6.7.8"],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            },
        ),
        ["dns", "ClusterIP", "10.96.0.10", "1.2.3.4,5.6.7.8", "53/UDP,53/TCP", "5h", "<none>"],
    ),
    (
        "Service",
        "headless without ports",
        obj("db", spec={"type": "ClusterIP", "clusterIP": "None", "selector": {"app": "db"}}),
        ["db", "ClusterIP", "None", "<none>", "<none>", "5h", "app=db"],
    ),
    (
        "Service",
        "pending load balancer",
        obj(
            "lb",
            spec={
                "type": "LoadBalancer",
                "clusterIP": "10.96.1.1",
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31080}],
            },
        ),
        ["lb", "LoadBalancer", "10.96.1.1", "<pending>", "80:31080/TCP", "5h", "<none>"],
    ),
    (
        "Service",
        "provisioned load balancer",
        obj(
            "lb2",
            spec={
                "type": "LoadBalancer",
                "clusterIP": "10.96.1.2",
                "externalIPs": ["9.9.9.9"],
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31081}],
            },
            status={"loadBalancer": {"ingress": [{"ip": "34.1.2.3"}, {"hostname": "lb.example.com"}]}},
        ),
        [
            "lb2",
            "LoadBalancer",
            "10.96.1.2",
            "34.1.2.3,lb.example.com,9.9.9.9",
            "80:31081/TCP",
            "5h",
            "<none>",
        ],
    ),
    (
        "Service",
        "ExternalName",
        obj("ext", spec={"type": "ExternalName", "externalName": "db.example.com"}),
        ["ext", "ExternalName", "<none>", "db.example.com", "<none>", "5h", "<none>"],
    ),
    (
        "Endpoints",
        "more than three",
        obj(
            "web",
            subsets=[
                {
                    "addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 5)],
                    "ports": [{"port": 80, "protocol": "TCP"}],
                },
                {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]},
            ],
        ),
        ["web", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more...", "5h"],
    ),
    (
        "Endpoints",
        "ipv6 and headless",
        obj(
            "mixed",
            subsets=[
                {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]},
                {"addresses": [{"ip": "10.0.0.9"}]},
            ],
        ),
        ["mixed", "[fd00::1]:8080,10.0.0.9", "5h"],
    ),
    ("Endpoints", "none", obj("empty"), ["empty", "<none>", "5h"]),
    (
        "ConfigMap",
        "data and binaryData",
        obj("cfg", data={"a": "1", "b": "2"}, binaryData={"c": "AA=="}),
        ["cfg", 3, "5h"],
    ),
    ("ConfigMap", "empty", obj("nothing"), ["nothing", 0, "5h"]),
    (
        "Secret",
        "opaque",
        obj("creds", type="Opaque", data={"user": "YQ==", "pass": "Yg=="}),
        ["creds", "Opaque", 2, "5h"],
    ),
    (
        "Secret",
        "tls",
        obj("tls", type="kubernetes.io/tls", data={"tls.crt": "", "tls.key": ""}),
        ["tls", "kubernetes.io/tls", 2, "5h"],
    ),
    ("ServiceAccount", "default", obj("default", secrets=[{"name": "tok"}]), ["default", "5h"]),
    (
        "ResourceQuota",
        "requests and limits",
        obj(
            "quota",
            spec={"hard": {"pods": "10"}},
            status={
                "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "2Gi", "limits.cpu": "4"},
                "used": {"pods": "3", "requests.cpu": "500m", "limits.memory": "1Gi"},
            },
        ),
        ["quota", "pods: 3/10, requests.cpu: 500m/2", "limits.cpu: 0/4, limits.memory: 1Gi/2Gi", "5h"],
    ),
    ("ResourceQuota", "no status", obj("fresh"), ["fresh", "", "", "5h"]),
    (
        "PersistentVolume",
        "bound",
        {
            "metadata": {"name": "pv-1", "creationTimestamp": ago(days=1)},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "standard",
                "claimRef": {"namespace": "default", "name": "data"},
                "volumeMode": "Filesystem",
            },
            "status": {"phase": "Bound"},
        },
        [
            "pv-1",
            "10Gi",
            "RWO,RWX",
            "Retain",
            "Bound",
            "default/data",
            "standard",
            "<unset>",
            "",
            "24h",
            "Filesystem",
        ],
    ),
    (
        "PersistentVolume",
        "terminating with beta class annotation",
        {
            "metadata": {
                "name": "pv-2",
                "creationTimestamp": ago(days=1),
                "deletionTimestamp": ago(seconds=1),
                "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"},
            },
            "spec": {"accessModes": ["ReadOnlyMany", "ReadWriteOncePod"], "storageClassName": "ignored"},
            "status": {"phase": "Released", "reason": "Oops"},
        },
        ["pv-2", "0", "ROX,RWOP", "", "Terminating", "", "legacy", "<unset>", "Oops", "24h", "<unset>"],
    ),
    (
        "PersistentVolumeClaim",
        "bound",
        obj(
            "data",
            spec={
                "volumeName": "pv-1",
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "5Gi"}},
                "volumeMode": "Filesystem",
                "volumeAttributesClassName": "fast",
            },
            status={"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]},
        ),
        ["data", "Bound", "pv-1", "10Gi", "RWO", "standard", "fast", "5h", "Filesystem"],
    ),
    (
        "PersistentVolumeClaim",
        "pending",
        obj("wait", spec={"resources": {"requests": {"storage": "5Gi"}}}, status={"phase": "Pending"}),
        ["wait", "Pending", "", "", "", "", "<unset>", "5h", "<unset>"],
    ),
    (
        "ReplicationController",
        "legacy",
        obj(
            "rc",
            spec={
                "replicas": 2,
                "selector": {"app": "rc"},
                "template": {"spec": {"containers": [{"name": "a", "image": "busybox"}]}},
            },
            status={"replicas": 2, "readyReplicas": 1},
        ),
        ["rc", 2, 2, 1, "5h", "a", "busybox", "app=rc"],
    ),
    (
        "PodTemplate",
        "template",
        obj(
            "tpl",
            template={
                "metadata": {"labels": {"b": "2", "a": "1"}},
                "spec": {"containers": [{"name": "x", "image": "x:1"}, {"name": "y", "image": "y:2"}]},
            },
        ),
        ["tpl", "x,y", "x:1,y:2", "a=1,b=2"],
    ),
]


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [c[::2][:1] + c[2:] for c in CORE_CASES],
    ids=[f"{c[0]}-{c[1]}" for c in CORE_CASES],
)
def test_core_rows(kind: str, obj: dict[str, Any], expected: list[Any]) -> None:
    assert cells("", kind, obj) == expected


def test_core_event_row() -> None:
    ev = {
        "metadata": md("web.17f3a", created=ago(minutes=10)),
        "involvedObject": {
            "kind": "Pod",
            "namespace": "default",
            "name": "web",
            "fieldPath": "spec.containers{app}",
        },
        "reason": "BackOff",
        "message": "Back-off restarting failed container\n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(minutes=10),
        "lastTimestamp": ago(minutes=2),
        "count": 5,
        "type": "Warning",
    }
    assert cells("", "Event", ev) == [
        "2m",
        "Warning",
        "BackOff",
        "pod/web",
        "spec.containers{app}",
        "kubelet, node-1",
        "Back-off restarting failed container",
        "10m",
        5,
        "web.17f3a",
    ]


def test_core_event_without_timestamps_uses_event_time() -> None:
    ev = {
        "metadata": md("ns.1"),
        "involvedObject": {"kind": "Namespace"},
        "reason": "Created",
        "message": "made",
        "eventTime": "2025-06-01T11:59:50.000000Z",
        "reportingComponent": "skiff",
        "reportingController": "skiff-controller",
        "type": "Normal",
    }
    assert cells("", "Event", ev) == [
        "10s",
        "Normal",
        "Created",
        "namespace",
        "",
        "skiff-controller",
        "made",
        "10s",
        1,
        "ns.1",
    ]


def test_events_k8s_io_event_row() -> None:
    ev = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": md("web.2"),
        "eventTime": ago(hours=2),
        "series": {"count": 7, "lastObservedTime": ago(seconds=30)},
        "regarding": {"kind": "Deployment", "name": "web"},
        "note": "Scaled up replica set web-abc to 3",
        "reason": "ScalingReplicaSet",
        "reportingController": "deployment-controller",
        "reportingInstance": "cp-1",
        "type": "Normal",
    }
    assert cells("events.k8s.io", "Event", ev) == [
        "30s",
        "Normal",
        "ScalingReplicaSet",
        "deployment/web",
        "",
        "deployment-controller, cp-1",
        "Scaled up replica set web-abc to 3",
        "120m",
        7,
        "web.2",
    ]


# --- apps, batch, autoscaling ---------------------------------------------------------------------------

TEMPLATE = {
    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "fluentbit"}]}
}
SELECTOR = {
    "matchLabels": {"app": "web"},
    "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["front", "edge"]},
        {"key": "canary", "operator": "DoesNotExist"},
    ],
}

APPS_CASES: list[tuple[str, str, str, dict[str, Any], list[Any]]] = [
    (
        "apps",
        "Deployment",
        "two of three ready",
        obj(
            "web",
            created=ago(minutes=5),
            spec={"replicas": 3, "selector": SELECTOR, "template": TEMPLATE},
            status={"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2},
        ),
        ["web", "2/3", 3, 2, "5m", "web,log", "nginx:1.27,fluentbit", "app=web,!canary,tier in (edge,front)"],
    ),
    (
        "apps",
        "Deployment",
        "fresh, replicas defaulted",
        obj("new", spec={"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}),
        ["new", "0/1", 0, 0, "5h", "c", "i", ""],
    ),
    (
        "apps",
        "ReplicaSet",
        "scaled",
        obj(
            "web-7d4b9",
            spec={
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9"}},
                "template": TEMPLATE,
            },
            status={"replicas": 2, "readyReplicas": 2},
        ),
        ["web-7d4b9", 2, 2, 2, "5h", "web,log", "nginx:1.27,fluentbit", "app=web,pod-template-hash=7d4b9"],
    ),
    (
        "apps",
        "ReplicaSet",
        "scaled to zero",
        obj("web-old", spec={"replicas": 0, "selector": {}, "template": TEMPLATE}),
        ["web-old", 0, 0, 0, "5h", "web,log", "nginx:1.27,fluentbit", "<none>"],
    ),
    (
        "apps",
        "DaemonSet",
        "with node selector",
        obj(
            "agent",
            spec={
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [{"name": "agent", "image": "agent:2"}],
                    }
                },
            },
            status={
                "desiredNumberScheduled": 3,
                "currentNumberScheduled": 3,
                "numberReady": 2,
                "updatedNumberScheduled": 3,
                "numberAvailable": 2,
            },
        ),
        ["agent", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "5h", "agent", "agent:2", "app=agent"],
    ),
    (
        "apps",
        "StatefulSet",
        "one of two",
        obj("db", spec={"replicas": 2, "template": TEMPLATE}, status={"readyReplicas": 1}),
        ["db", "1/2", "5h", "web,log", "nginx:1.27,fluentbit"],
    ),
    (
        "apps",
        "ControllerRevision",
        "owned by a daemonset",
        {
            "metadata": {
                "name": "agent-5c9",
                "creationTimestamp": ago(hours=5),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": "agent",
                        "uid": "u",
                        "controller": True,
                    }
                ],
            },
            "revision": 4,
        },
        ["agent-5c9", "daemonset.apps/agent", 4, "5h"],
    ),
    (
        "apps",
        "ControllerRevision",
        "orphan",
        {"metadata": {"name": "lone", "creationTimestamp": ago(hours=5)}, "revision": 1},
        ["lone", "<none>", 1, "5h"],
    ),
    (
        "batch",
        "Job",
        "complete",
        obj(
            "pi",
            created=ago(minutes=3),
            spec={
                "completions": 1,
                "parallelism": 1,
                "template": TEMPLATE,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            },
            status={
                "succeeded": 1,
                "startTime": ago(minutes=3),
                "completionTime": ago(minutes=2, seconds=45),
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"},
                ],
            },
        ),
        [
            "pi",
            "Complete",
            "1/1",
            "15s",
            "3m",
            "web,log",
            "nginx:1.27,fluentbit",
            "batch.kubernetes.io/controller-uid=u1",
        ],
    ),
    (
        "batch",
        "Job",
        "running work queue",
        obj(
            "queue",
            spec={"parallelism": 3, "template": TEMPLATE},
            status={"startTime": ago(minutes=4, seconds=30), "active": 3},
        ),
        ["queue", "Running", "0/1 of 3", "4m30s", "5h", "web,log", "nginx:1.27,fluentbit", "<none>"],
    ),
    (
        "batch",
        "Job",
        "failed",
        obj(
            "bad",
            spec={"completions": 5, "parallelism": 2, "template": TEMPLATE},
            status={
                "succeeded": 2,
                "failed": 6,
                "startTime": ago(hours=1, minutes=1),
                "conditions": [
                    {"type": "FailureTarget", "status": "True"},
                    {"type": "Failed", "status": "True"},
                ],
            },
        ),
        ["bad", "Failed", "2/5", "61m", "5h", "web,log", "nginx:1.27,fluentbit", "<none>"],
    ),
    (
        "batch",
        "Job",
        "suspended, not started",
        obj(
            "later",
            spec={"suspend": True, "template": TEMPLATE},
            status={"conditions": [{"type": "Suspended", "status": "True"}]},
        ),
        ["later", "Suspended", "0/1", "", "5h", "web,log", "nginx:1.27,fluentbit", "<none>"],
    ),
    (
        "batch",
        "CronJob",
        "never scheduled",
        obj("nightly", spec={"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}}),
        [
            "nightly",
            "0 0 * * *",
            "<none>",
            "False",
            0,
            "<none>",
            "5h",
            "web,log",
            "nginx:1.27,fluentbit",
            "<none>",
        ],
    ),
    (
        "batch",
        "CronJob",
        "suspended with time zone",
        obj(
            "report",
            created=ago(days=3),
            spec={
                "schedule": "*/5 * * * *",
                "timeZone": "Europe/Paris",
                "suspend": True,
                "jobTemplate": {"spec": {"template": TEMPLATE}},
            },
            status={"active": [{"name": "report-1"}], "lastScheduleTime": ago(minutes=4)},
        ),
        [
            "report",
            "*/5 * * * *",
            "Europe/Paris",
            "True",
            1,
            "4m",
            "3d",
            "web,log",
            "nginx:1.27,fluentbit",
            "<none>",
        ],
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "v2 cpu utilization",
        obj(
            "web",
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 10,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
            status={
                "currentReplicas": 3,
                "desiredReplicas": 3,
                "currentMetrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "current": {"averageUtilization": 55, "averageValue": "110m"},
                        },
                    }
                ],
            },
        ),
        ["web", "Deployment/web", "cpu: 55%/80%", "2", 10, 3, "5h"],
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "v2 several metrics, no status yet",
        obj(
            "multi",
            spec={
                "scaleTargetRef": {"kind": "StatefulSet", "name": "db"},
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "memory",
                            "target": {"type": "AverageValue", "averageValue": "500Mi"},
                        },
                    },
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "qps"},
                            "target": {"type": "AverageValue", "averageValue": "10"},
                        },
                    },
                    {
                        "type": "External",
                        "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "30"}},
                    },
                ],
            },
        ),
        ["multi", "StatefulSet/db", "memory: <unknown>/500Mi, <unknown>/10 + 1 more...", "1", 4, 0, "5h"],
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "v1 object",
        obj(
            "old",
            spec={
                "scaleTargetRef": {"kind": "Deployment", "name": "old"},
                "minReplicas": 1,
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 60,
            },
            status={"currentReplicas": 1, "currentCPUUtilizationPercentage": 12},
        ),
        ["old", "Deployment/old", "cpu: 12%/60%", "1", 5, 1, "5h"],
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "no metrics: the default CPU target",
        obj("bare", spec={"scaleTargetRef": {"kind": "Deployment", "name": "bare"}, "maxReplicas": 3}),
        ["bare", "Deployment/bare", "cpu: <unknown>/80%", "1", 3, 0, "5h"],
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "obj", "expected"),
    [(g, k, o, e) for g, k, _, o, e in APPS_CASES],
    ids=[f"{c[1]}-{c[2]}" for c in APPS_CASES],
)
def test_workload_rows(group: str, kind: str, obj: dict[str, Any], expected: list[Any]) -> None:
    assert cells(group, kind, obj) == expected


# --- the remaining groups -------------------------------------------------------------------------------

MISC_CASES: list[tuple[str, str, str, dict[str, Any], list[Any]]] = [
    (
        "coordination.k8s.io",
        "Lease",
        "held",
        obj("kube-scheduler", spec={"holderIdentity": "cp-1_8c2f", "leaseDurationSeconds": 15}),
        ["kube-scheduler", "cp-1_8c2f", "5h"],
    ),
    ("coordination.k8s.io", "Lease", "free", obj("free", spec={}), ["free", "", "5h"]),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        "many endpoints",
        obj(
            "web-abc12",
            addressType="IPv4",
            ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "https", "port": 443}],
            endpoints=[{"addresses": [f"10.0.1.{i}"], "conditions": {"ready": True}} for i in range(1, 6)],
        ),
        ["web-abc12", "IPv4", "80,443", "10.0.1.1,10.0.1.2,10.0.1.3 + 2 more...", "5h"],
    ),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        "empty",
        obj("web-empty", addressType="IPv6", ports=[{"name": "named"}, {}], endpoints=None),
        ["web-empty", "IPv6", "named,*", "<unset>", "5h"],
    ),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "mixed subjects",
        obj(
            "read",
            roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            subjects=[
                {"kind": "User", "name": "alice"},
                {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "namespace": "ci", "name": "runner"},
            ],
        ),
        ["read", "ClusterRole/view", "5h", "alice, bob", "devs", "ci/runner"],
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "no subjects",
        {
            "metadata": {"name": "empty", "creationTimestamp": ago(days=2)},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        },
        ["empty", "ClusterRole/cluster-admin", "2d", "", "", ""],
    ),
    (
        "networking.k8s.io",
        "Ingress",
        "hosts and tls",
        obj(
            "site",
            spec={
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["a.example.com"]}],
                "rules": [
                    {"host": "a.example.com"},
                    {"host": "b.example.com"},
                    {},
                    {"host": "c.example.com"},
                    {"host": "d.example.com"},
                ],
            },
            status={"loadBalancer": {"ingress": [{"ip": "34.1.2.3"}]}},
        ),
        [
            "site",
            "nginx",
            "a.example.com,b.example.com,c.example.com + 2 more...",
            "34.1.2.3",
            "80, 443",
            "5h",
        ],
    ),
    (
        "networking.k8s.io",
        "Ingress",
        "catch-all",
        obj("all", spec={"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}),
        ["all", "<none>", "*", "", "80", "5h"],
    ),
    (
        "networking.k8s.io",
        "NetworkPolicy",
        "deny all",
        obj("deny", spec={"podSelector": {}, "policyTypes": ["Ingress"]}),
        ["deny", "<none>", "5h"],
    ),
    (
        "policy",
        "PodDisruptionBudget",
        "min available",
        obj("pdb", spec={"minAvailable": "50%"}, status={"disruptionsAllowed": 1}),
        ["pdb", "50%", "N/A", 1, "5h"],
    ),
    (
        "storage.k8s.io",
        "StorageClass",
        "default class",
        {
            "metadata": {
                "name": "standard",
                "creationTimestamp": ago(days=9),
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
        ["standard (default)", "rancher.io/local-path", "Delete", "WaitForFirstConsumer", False, "9d"],
    ),
    (
        "scheduling.k8s.io",
        "PriorityClass",
        "system",
        {
            "metadata": {"name": "system-node-critical", "creationTimestamp": ago(days=1)},
            "value": 2000001000,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        ["system-node-critical", 2000001000, False, "24h", "PreemptLowerPriority"],
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "two hooks",
        obj("policy", webhooks=[{"name": "a.example.com"}, {"name": "b.example.com"}]),
        ["policy", 2, "5h"],
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "obj", "expected"),
    [(g, k, o, e) for g, k, _, o, e in MISC_CASES],
    ids=[f"{c[1]}-{c[2]}" for c in MISC_CASES],
)
def test_other_group_rows(group: str, kind: str, obj: dict[str, Any], expected: list[Any]) -> None:
    assert cells(group, kind, obj) == expected


# --- custom resources -----------------------------------------------------------------------------------

PRINTER_COLUMNS = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the database is ready",
    },
    {"name": "Version", "type": "string", "jsonPath": "{.spec.version}"},
    {"name": "Size", "type": "number", "jsonPath": ".spec.sizeGb", "format": "float"},
    {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
    {"name": "Images", "type": "string", "jsonPath": ".spec.containers[*].image", "priority": 1},
    {"name": "Tags", "type": "string", "jsonPath": ".spec.tags"},
    {"name": "Synced", "type": "date", "jsonPath": ".status.lastSync"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def test_custom_resource_columns() -> None:
    defs = table("example.com", "Database", printer_columns=PRINTER_COLUMNS)["columnDefinitions"]
    assert [(c["name"], c["type"], c["format"], c["priority"]) for c in defs] == [
        ("Name", "string", "name", 0),
        ("Replicas", "integer", "", 0),
        ("Ready", "string", "", 0),
        ("Version", "string", "", 0),
        ("Size", "number", "float", 0),
        ("Paused", "boolean", "", 0),
        ("Images", "string", "", 1),
        ("Tags", "string", "", 0),
        ("Synced", "date", "", 0),
        ("Age", "date", "", 0),
    ]
    assert defs[1]["description"] == "Custom resource definition column (in JSONPath format): .spec.replicas"
    assert defs[2]["description"] == "Whether the database is ready"


def test_custom_resource_cells() -> None:
    db = {
        "apiVersion": "example.com/v1",
        "kind": "Database",
        "metadata": md("orders", created=ago(days=3)),
        "spec": {
            "replicas": 3,
            "version": 16,
            "sizeGb": 20,
            "paused": False,
            "tags": ["a", "b"],
            "containers": [{"image": "postgres:16"}, {"image": "exporter:1"}],
        },
        "status": {
            "conditions": [{"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}],
            "lastSync": ago(seconds=42),
        },
    }
    assert cells("example.com", "Database", db, printer_columns=PRINTER_COLUMNS) == [
        "orders",
        3,
        "False",
        "16",
        20.0,
        False,
        "postgres:16",
        '["a","b"]',
        "42s",
        "3d",
    ]


def test_custom_resource_missing_and_mistyped_fields_are_null() -> None:
    db = {
        "metadata": md("empty"),
        "spec": {"replicas": "three", "sizeGb": True, "paused": "no", "version": None},
        "status": {"lastSync": "yesterday"},
    }
    assert cells("example.com", "Database", db, printer_columns=PRINTER_COLUMNS) == [
        "empty",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        "<invalid>",
        "5h",
    ]


def test_custom_resource_integer_from_float() -> None:
    cols = [
        {"name": "N", "type": "integer", "jsonPath": ".n"},
        {"name": "When", "type": "date", "jsonPath": ".w"},
    ]
    assert cells("x.io", "Thing", {"metadata": md("t"), "n": 2.9, "w": ""}, printer_columns=cols) == [
        "t",
        2,
        "<unknown>",
    ]


def test_custom_resource_without_printer_columns_gets_age() -> None:
    out = table("example.com", "Widget", obj("w", created=ago(minutes=7)), printer_columns=[])
    assert [(c["name"], c["type"]) for c in out["columnDefinitions"]] == [("Name", "string"), ("Age", "date")]
    assert out["rows"][0]["cells"] == ["w", "7m"]


def test_custom_resource_invalid_column_drops_it_and_the_rest() -> None:
    cols = [
        {"name": "Ok", "type": "string", "jsonPath": ".spec.a"},
        {"name": "Bad", "type": "string", "jsonPath": ".spec[oops"},
        {"name": "After", "type": "string", "jsonPath": ".spec.b"},
    ]
    out = table("example.com", "Widget", obj("w", spec={"a": "x", "b": "y"}), printer_columns=cols)
    assert [c["name"] for c in out["columnDefinitions"]] == ["Name", "Ok"]
    assert out["rows"][0]["cells"] == ["w", "x"]

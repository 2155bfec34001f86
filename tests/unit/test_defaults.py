"""Kubernetes defaulting of built-in kinds, compared with what a real API server returns."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from skiff.api.defaults import apply_defaults, image_pull_policy

DEFAULTED_CONTAINER = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "resources": {},
}
DEFAULTED_POD_SPEC = {
    "restartPolicy": "Always",
    "dnsPolicy": "ClusterFirst",
    "terminationGracePeriodSeconds": 30,
    "schedulerName": "default-scheduler",
    "securityContext": {},
}


def defaulted(api_version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, **copy.deepcopy(obj)}
    apply_defaults(api_version, kind, obj)
    return obj


def template(image: str = "nginx:1.25") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": image}]}}


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("localhost:5000/app", "Always"),
        ("localhost:5000/app:v2", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
        ("", "Always"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_pod() -> None:
    pod = defaulted(
        "v1",
        "Pod",
        {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "ports": [{"containerPort": 80}],
                        "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}},
                        "livenessProbe": {"httpGet": {"port": 80}},
                    }
                ],
                "initContainers": [{"name": "i", "image": "busybox:1.36", "imagePullPolicy": "Never"}],
                "volumes": [
                    {"name": "a"},
                    {"name": "b", "secret": {"secretName": "s"}},
                    {"name": "c", "hostPath": {"path": "/"}},
                ],
            }
        },
    )
    spec = pod["spec"]
    assert {k: spec[k] for k in DEFAULTED_POD_SPEC} == DEFAULTED_POD_SPEC
    assert spec["enableServiceLinks"] is True
    assert spec["containers"][0] == {
        "name": "c",
        "image": "busybox",
        "imagePullPolicy": "Always",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}},
        "livenessProbe": {
            "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    assert spec["initContainers"][0] == {
        "name": "i",
        "image": "busybox:1.36",
        "imagePullPolicy": "Never",
        **DEFAULTED_CONTAINER,
    }
    assert spec["volumes"] == [
        {"name": "a", "emptyDir": {}},
        {"name": "b", "secret": {"secretName": "s", "defaultMode": 420}},
        {"name": "c", "hostPath": {"path": "/", "type": ""}},
    ]


def test_pod_host_network_sets_host_ports() -> None:
    pod = defaulted(
        "v1",
        "Pod",
        {"spec": {"hostNetwork": True, "containers": [{"name": "c", "ports": [{"containerPort": 53}]}]}},
    )
    assert pod["spec"]["containers"][0]["ports"] == [{"containerPort": 53, "hostPort": 53, "protocol": "TCP"}]


def test_values_sent_are_never_changed() -> None:
    spec = {
        "restartPolicy": "Never",
        "dnsPolicy": "Default",
        "terminationGracePeriodSeconds": 0,
        "schedulerName": "mine",
        "securityContext": {"runAsUser": 1},
        "enableServiceLinks": False,
        "containers": [
            {
                "name": "c",
                "image": "x",
                "imagePullPolicy": "Never",
                "terminationMessagePath": "/t",
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {"requests": {"cpu": "1"}},
            }
        ],
    }
    assert defaulted("v1", "Pod", {"spec": spec})["spec"] == spec


def test_deployment_matches_the_real_server() -> None:
    obj = defaulted(
        "apps/v1", "Deployment", {"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template()}}
    )
    assert obj["spec"] == {
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": {"app": "x"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {
                **DEFAULTED_POD_SPEC,
                "containers": [
                    {
                        "name": "c",
                        "image": "nginx:1.25",
                        "imagePullPolicy": "IfNotPresent",
                        **DEFAULTED_CONTAINER,
                    }
                ],
            },
        },
    }
    # Pod-only defaults stay out of templates
    assert "enableServiceLinks" not in obj["spec"]["template"]["spec"]


def test_deployment_recreate_has_no_rolling_update() -> None:
    obj = defaulted("apps/v1", "Deployment", {"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}})
    assert obj["spec"]["strategy"] == {"type": "Recreate"}
    assert obj["spec"]["replicas"] == 0


def test_replica_set_and_daemon_set() -> None:
    rs = defaulted("apps/v1", "ReplicaSet", {"spec": {"template": template()}})
    assert rs["spec"]["replicas"] == 1
    assert rs["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    ds = defaulted("apps/v1", "DaemonSet", {"spec": {"template": template()}})
    assert ds["spec"]["revisionHistoryLimit"] == 10
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }


def test_stateful_set() -> None:
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    sts = defaulted(
        "apps/v1", "StatefulSet", {"spec": {"template": template(), "volumeClaimTemplates": [claim]}}
    )
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10
    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 0, "maxUnavailable": 1},
    }
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    on_delete = defaulted("apps/v1", "StatefulSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}})
    assert on_delete["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_job() -> None:
    job = defaulted("batch/v1", "Job", {"spec": {"template": template()}})
    spec = job["spec"]
    assert {k: v for k, v in spec.items() if k != "template"} == {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "suspend": False,
        "podReplacementPolicy": "TerminatingOrFailed",
    }
    assert job["metadata"]["labels"] == {"app": "x"}
    assert spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    work_queue = defaulted(
        "batch/v1",
        "Job",
        {
            "spec": {
                "parallelism": 3,
                "backoffLimitPerIndex": 1,
                "podFailurePolicy": {
                    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
                },
            }
        },
    )
    spec = work_queue["spec"]
    assert "completions" not in spec and spec["parallelism"] == 3
    assert spec["backoffLimit"] == 2**31 - 1
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["podFailurePolicy"]["rules"][0]["onPodConditions"] == [
        {"type": "DisruptionTarget", "status": "True"}
    ]
    assert "manualSelector" not in spec


def test_cron_job_defaults_the_pod_template_but_not_the_job_spec() -> None:
    cron = defaulted(
        "batch/v1",
        "CronJob",
        {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template()}}}},
    )
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Allow" and spec["suspend"] is False
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 1
    job_spec = spec["jobTemplate"]["spec"]
    assert set(job_spec) == {"template"}
    assert job_spec["template"]["spec"]["containers"][0]["terminationMessagePolicy"] == "File"


def test_service() -> None:
    svc = defaulted(
        "v1",
        "Service",
        {
            "spec": {
                "selector": {"app": "x"},
                "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
            }
        },
    )
    assert svc["spec"] == {
        "selector": {"app": "x"},
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "ports": [
            {"port": 80, "protocol": "TCP", "targetPort": 80},
            {"port": 53, "protocol": "UDP", "targetPort": "dns"},
        ],
        "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack",
    }
    lb = defaulted(
        "v1",
        "Service",
        {"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 443}]}},
    )
    assert lb["spec"]["externalTrafficPolicy"] == "Cluster"
    assert lb["spec"]["allocateLoadBalancerNodePorts"] is True
    assert lb["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    external = defaulted("v1", "Service", {"spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert external["spec"] == {
        "type": "ExternalName",
        "externalName": "example.com",
        "sessionAffinity": "None",
    }


def test_small_core_kinds() -> None:
    assert defaulted("v1", "Secret", {"data": {}})["type"] == "Opaque"
    assert defaulted("v1", "Secret", {"type": "kubernetes.io/tls"})["type"] == "kubernetes.io/tls"
    ns = defaulted("v1", "Namespace", {})
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "x"}
    pvc = defaulted("v1", "PersistentVolumeClaim", {"spec": {"accessModes": ["ReadWriteOnce"]}})
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"] == {"phase": "Pending"}
    pv = defaulted("v1", "PersistentVolume", {"spec": {"capacity": {"storage": "1Gi"}}})
    assert (
        pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and pv["spec"]["volumeMode"] == "Filesystem"
    )


def test_horizontal_pod_autoscaler() -> None:
    target = {
        "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
        "maxReplicas": 5,
    }
    v2 = defaulted("autoscaling/v2", "HorizontalPodAutoscaler", {"spec": target})
    assert v2["spec"]["minReplicas"] == 1
    assert v2["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]
    assert "behavior" not in v2["spec"]
    with_behavior = defaulted(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        {"spec": {**target, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}},
    )
    behavior = with_behavior["spec"]["behavior"]
    assert behavior["scaleUp"]["policies"] == [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"] == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }
    v1 = defaulted("autoscaling/v1", "HorizontalPodAutoscaler", {"spec": target})
    assert v1["spec"] == {**target, "minReplicas": 1}


def test_kinds_without_defaults_are_untouched() -> None:
    for api_version, kind in (
        ("v1", "ConfigMap"),
        ("coordination.k8s.io/v1", "Lease"),
        ("example.com/v1", "Widget"),
    ):
        obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {"a": 1}}
        before = copy.deepcopy(obj)
        apply_defaults(api_version, kind, obj)
        assert obj == before


def test_wrong_types_are_left_for_validation() -> None:
    for spec in ("x", {"containers": "x"}, {"containers": ["x", None]}, {"template": 3}, {"strategy": []}):
        for api_version, kind in (
            ("v1", "Pod"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "Job"),
            ("v1", "Service"),
        ):
            obj = {"spec": copy.deepcopy(spec)}
            apply_defaults(api_version, kind, obj)  # must not raise

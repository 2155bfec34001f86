"""Kubernetes defaulting for built-in kinds.

The real API server fills unset fields right after decoding (the `SetDefaults_*`
functions of k8s.io/kubernetes `pkg/apis/<group>/<version>/defaults.go` plus
the generated per-type defaulters), so that what clients read back, and what
controllers act on, always has e.g. `restartPolicy: Always` or
`strategy.rollingUpdate.maxSurge: 25%`. `apply_defaults` does the same for
skiff's dict objects, in place, before validation and storage.

Fields are only ever added when missing (or null): a value the client sent is
never changed. Values of the wrong type are left alone for validation to report.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]


# ---------------------------------------------------------------- helpers


def _d(obj: Obj, key: str) -> Obj | None:
    """obj[key] if it is a dict (created empty when missing or null), else None."""
    val = obj.get(key)
    if val is None:
        val = obj[key] = {}
    return val if isinstance(val, dict) else None


def _dicts(obj: Obj | None, key: str) -> list[Obj]:
    """The dict items of the list obj[key] (nothing if absent or not a list)."""
    val = obj.get(key) if obj is not None else None
    return [x for x in val if isinstance(x, dict)] if isinstance(val, list) else []


def _child(obj: Obj | None, key: str) -> Obj | None:
    """obj[key] if present and a dict; never creates it."""
    val = obj.get(key) if obj is not None else None
    return val if isinstance(val, dict) else None


def _fill(obj: Obj | None, defaults: dict[str, Any]) -> None:
    """Set each missing (or null) key of `obj` to its default (copied when mutable)."""
    if obj is None:
        return
    for key, value in defaults.items():
        if obj.get(key) is None:
            obj[key] = copy.deepcopy(value)


def image_pull_policy(image: str) -> str:
    """`Always` for `:latest` or untagged images, else `IfNotPresent` (digests count as tagged)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


# ---------------------------------------------------------------- core/v1 pieces

PROBE = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
HTTP_GET = {"path": "/", "scheme": "HTTP"}
POD_SPEC = {
    "restartPolicy": "Always",
    "dnsPolicy": "ClusterFirst",
    "terminationGracePeriodSeconds": 30,
    "schedulerName": "default-scheduler",
    "securityContext": {},
}
CONTAINER = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "resources": {},  # a non-pointer struct: the real server always writes it
}
VOLUME_MODE = {"secret": 420, "configMap": 420, "downwardAPI": 420, "projected": 420}
VOLUME_SOURCES = (
    "hostPath emptyDir gcePersistentDisk awsElasticBlockStore gitRepo secret nfs iscsi glusterfs "
    "persistentVolumeClaim rbd flexVolume cinder cephfs flocker downwardAPI fc azureFile configMap "
    "vsphereVolume quobyte azureDisk photonPersistentDisk projected portworxVolume scaleIO storageos "
    "csi ephemeral image"
).split()


def _handler(handler: Obj | None) -> None:
    """Probe / lifecycle handler: httpGet path and scheme."""
    _fill(_child(handler, "httpGet"), HTTP_GET)


def _field_refs(items: list[Obj]) -> None:
    for item in items:
        _fill(_child(item, "fieldRef"), {"apiVersion": "v1"})


def _container(c: Obj) -> None:
    if c.get("imagePullPolicy") is None and isinstance(c.get("image", ""), str):
        c["imagePullPolicy"] = image_pull_policy(c.get("image") or "")
    _fill(c, CONTAINER)
    for port in _dicts(c, "ports"):
        _fill(port, {"protocol": "TCP"})
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = _child(c, probe)
        _fill(p, PROBE)
        _handler(p)
    lifecycle = _child(c, "lifecycle")
    _handler(_child(lifecycle, "postStart"))
    _handler(_child(lifecycle, "preStop"))
    _field_refs([_child(e, "valueFrom") or {} for e in _dicts(c, "env")])


def _volume(v: Obj) -> None:
    if not any(v.get(src) is not None for src in VOLUME_SOURCES):
        v["emptyDir"] = {}
    for src, mode in VOLUME_MODE.items():
        _fill(_child(v, src), {"defaultMode": mode})
    _fill(_child(v, "hostPath"), {"type": ""})
    _field_refs(_dicts(_child(v, "downwardAPI"), "items"))
    for source in _dicts(_child(v, "projected"), "sources"):
        _fill(_child(source, "serviceAccountToken"), {"expirationSeconds": 3600})
        _field_refs(_dicts(_child(source, "downwardAPI"), "items"))
    image = _child(v, "image")
    if image is not None and image.get("pullPolicy") is None:
        image["pullPolicy"] = image_pull_policy(str(image.get("reference") or ""))
    claim = _child(_child(_child(v, "ephemeral"), "volumeClaimTemplate"), "spec")
    _fill(claim, {"volumeMode": "Filesystem"})


def pod_spec(spec: Obj | None) -> None:
    """SetDefaults_PodSpec and the defaults of everything inside it."""
    if spec is None:
        return
    _fill(spec, POD_SPEC)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _dicts(spec, key):
            _container(c)
    for v in _dicts(spec, "volumes"):
        _volume(v)


def pod_template(template: Obj | None) -> None:
    """A PodTemplateSpec inside a workload: pod spec defaults only (not the Pod-only ones)."""
    pod_spec(_child(template, "spec"))


def _pod(obj: Obj) -> None:
    spec = _d(obj, "spec")
    pod_spec(spec)
    if spec is None:
        return
    _fill(spec, {"enableServiceLinks": True})
    for c in _dicts(spec, "containers") + _dicts(spec, "initContainers"):
        resources = _child(c, "resources")
        limits = _child(resources, "limits")
        if resources is not None and limits:
            requests = _d(resources, "requests")
            _fill(requests, dict(limits))
        if spec.get("hostNetwork") is True:
            for port in _dicts(c, "ports"):
                if not port.get("hostPort"):
                    port["hostPort"] = port.get("containerPort")


def _service(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if spec is None:
        return
    _fill(spec, {"type": "ClusterIP", "sessionAffinity": "None"})
    kind = spec["type"]
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        client_ip = _child(_child(spec, "sessionAffinityConfig"), "clientIP")
        if client_ip is None or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    for port in _dicts(spec, "ports"):
        _fill(port, {"protocol": "TCP"})
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if kind in ("NodePort", "LoadBalancer") or (kind == "ClusterIP" and spec.get("externalIPs")):
        _fill(spec, {"externalTrafficPolicy": "Cluster"})
    if kind != "ExternalName":
        _fill(spec, {"internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack"})
    if kind == "LoadBalancer":
        _fill(spec, {"allocateLoadBalancerNodePorts": True})


def _namespace(obj: Obj) -> None:
    metadata = _child(obj, "metadata")
    if metadata is not None and isinstance(metadata.get("name"), str) and metadata["name"]:
        _fill(_d(metadata, "labels"), {"kubernetes.io/metadata.name": metadata["name"]})
    _fill(_d(obj, "spec"), {"finalizers": ["kubernetes"]})
    _fill(_d(obj, "status"), {"phase": "Active"})


def _pvc(obj: Obj) -> None:
    _fill(_d(obj, "spec"), {"volumeMode": "Filesystem"})
    _fill(_d(obj, "status"), {"phase": "Pending"})


def _pv(obj: Obj) -> None:
    _fill(_d(obj, "spec"), {"persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"})
    _fill(_d(obj, "status"), {"phase": "Pending"})


def _endpoints(obj: Obj) -> None:
    for subset in _dicts(obj, "subsets"):
        for port in _dicts(subset, "ports"):
            _fill(port, {"protocol": "TCP"})


def _replication_controller(obj: Obj) -> None:
    spec = _d(obj, "spec")
    template = _child(spec, "template")
    labels = _child(_child(template, "metadata"), "labels")
    if spec is not None and labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        metadata = _d(obj, "metadata")
        if metadata is not None and not metadata.get("labels"):
            metadata["labels"] = dict(labels)
    _fill(spec, {"replicas": 1})
    pod_template(template)


# ---------------------------------------------------------------- apps, batch, autoscaling, ...


def _deployment(obj: Obj) -> None:
    spec = _d(obj, "spec")
    _fill(spec, {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600})
    strategy = _d(spec, "strategy") if spec is not None else None
    _fill(strategy, {"type": "RollingUpdate"})
    if strategy is not None and strategy["type"] == "RollingUpdate":
        _fill(_d(strategy, "rollingUpdate"), {"maxUnavailable": "25%", "maxSurge": "25%"})
    pod_template(_child(spec, "template"))


def _daemon_set(obj: Obj) -> None:
    spec = _d(obj, "spec")
    _fill(spec, {"revisionHistoryLimit": 10})
    strategy = _d(spec, "updateStrategy") if spec is not None else None
    _fill(strategy, {"type": "RollingUpdate"})
    if strategy is not None and strategy["type"] == "RollingUpdate":
        _fill(_d(strategy, "rollingUpdate"), {"maxUnavailable": 1, "maxSurge": 0})
    pod_template(_child(spec, "template"))


def _stateful_set(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if spec is None:
        return
    _fill(spec, {"podManagementPolicy": "OrderedReady", "replicas": 1, "revisionHistoryLimit": 10})
    strategy = _d(spec, "updateStrategy")
    if strategy is not None and strategy.get("type") is None:
        strategy["type"] = "RollingUpdate"
        _d(strategy, "rollingUpdate")
    if strategy is not None and strategy["type"] == "RollingUpdate":
        # maxUnavailable: MaxUnavailableStatefulSet is beta and on by default
        _fill(_child(strategy, "rollingUpdate"), {"partition": 0, "maxUnavailable": 1})
    _fill(_d(spec, "persistentVolumeClaimRetentionPolicy"), {"whenDeleted": "Retain", "whenScaled": "Retain"})
    for claim in _dicts(spec, "volumeClaimTemplates"):
        _pvc(claim)
    pod_template(_child(spec, "template"))


def _replica_set(obj: Obj) -> None:
    spec = _d(obj, "spec")
    _fill(spec, {"replicas": 1})
    pod_template(_child(spec, "template"))


def _job(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if spec is None:
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    per_index = spec.get("backoffLimitPerIndex") is not None
    failure_policy = _child(spec, "podFailurePolicy")
    _fill(
        spec,
        {
            "parallelism": 1,
            "backoffLimit": 2**31 - 1 if per_index else 6,
            "completionMode": "NonIndexed",
            "suspend": False,
            "podReplacementPolicy": "Failed" if failure_policy is not None else "TerminatingOrFailed",
        },
    )
    for rule in _dicts(failure_policy, "rules"):
        for pattern in _dicts(rule, "onPodConditions"):
            _fill(pattern, {"status": "True"})
    labels = _child(_child(_child(spec, "template"), "metadata"), "labels")
    metadata = _d(obj, "metadata")
    if labels and metadata is not None and not metadata.get("labels"):
        metadata["labels"] = dict(labels)
    pod_template(_child(spec, "template"))


def _cron_job(obj: Obj) -> None:
    spec = _d(obj, "spec")
    _fill(
        spec,
        {
            "concurrencyPolicy": "Allow",
            "suspend": False,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
        },
    )
    pod_template(_child(_child(_child(spec, "jobTemplate"), "spec"), "template"))


def _pod_template(obj: Obj) -> None:
    pod_template(_child(obj, "template"))


HPA_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
HPA_SCALE_DOWN = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
HPA_CPU_METRIC = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
}


def _hpa_v1(obj: Obj) -> None:
    _fill(_d(obj, "spec"), {"minReplicas": 1})


def _hpa_v2(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if spec is None:
        return
    _fill(spec, {"minReplicas": 1})
    if not spec.get("metrics"):
        spec["metrics"] = [copy.deepcopy(HPA_CPU_METRIC)]
    behavior = _child(spec, "behavior")
    if behavior is not None:
        _fill(_d(behavior, "scaleUp"), HPA_SCALE_UP)
        _fill(_d(behavior, "scaleDown"), HPA_SCALE_DOWN)


def _network_policy(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if spec is None:
        return
    for rule in _dicts(spec, "ingress") + _dicts(spec, "egress"):
        for port in _dicts(rule, "ports"):
            _fill(port, {"protocol": "TCP"})
    if spec.get("policyTypes") is None:
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _role_binding(obj: Obj) -> None:
    _fill(_child(obj, "roleRef"), {"apiGroup": "rbac.authorization.k8s.io"})
    for subject in _dicts(obj, "subjects"):
        if subject.get("kind") in ("User", "Group"):
            _fill(subject, {"apiGroup": "rbac.authorization.k8s.io"})


def _storage_class(obj: Obj) -> None:
    _fill(obj, {"reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})


def _top(defaults: dict[str, Any]) -> Callable[[Obj], None]:
    """A defaulter that only fills top-level fields (Secret.type ...)."""
    return lambda obj: _fill(obj, defaults)


# (apiVersion, kind) -> defaulter
DEFAULTERS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("v1", "Pod"): _pod,
    ("v1", "PodTemplate"): _pod_template,
    ("v1", "ReplicationController"): _replication_controller,
    ("v1", "Service"): _service,
    ("v1", "Secret"): _top({"type": "Opaque"}),
    ("v1", "Namespace"): _namespace,
    ("v1", "PersistentVolumeClaim"): _pvc,
    ("v1", "PersistentVolume"): _pv,
    ("v1", "Endpoints"): _endpoints,
    ("apps/v1", "Deployment"): _deployment,
    ("apps/v1", "ReplicaSet"): _replica_set,
    ("apps/v1", "DaemonSet"): _daemon_set,
    ("apps/v1", "StatefulSet"): _stateful_set,
    ("batch/v1", "Job"): _job,
    ("batch/v1", "CronJob"): _cron_job,
    ("autoscaling/v1", "HorizontalPodAutoscaler"): _hpa_v1,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): _hpa_v2,
    ("networking.k8s.io/v1", "NetworkPolicy"): _network_policy,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _role_binding,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _role_binding,
    ("storage.k8s.io/v1", "StorageClass"): _storage_class,
    ("scheduling.k8s.io/v1", "PriorityClass"): _top({"preemptionPolicy": "PreemptLowerPriority"}),
}


def apply_defaults(api_version: str, kind: str, obj: Obj) -> None:
    """Fill in the fields the real API server defaults for this kind, in place.

    Kinds without defaults (ConfigMap, Lease, custom resources ...) are left as they are.
    """
    defaulter = DEFAULTERS.get((api_version, kind))
    if defaulter is not None and isinstance(obj, dict):
        defaulter(obj)

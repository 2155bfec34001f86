"""The built-in kinds skiff serves, described as data for the one registry.

Each entry names the kind's URL and storage place, its short names and
categories (for `kubectl get all`), subresources, and a strategy. Versions of
one kind that share storage (autoscaling v1/v2, core and events.k8s.io
events) carry conversion functions to and from the stored version.
"""

from __future__ import annotations

from skiff.api import validation
from skiff.apiserver import conversion
from skiff.apiserver.crd_strategy import CRDStrategy
from skiff.apiserver.priorityclass import PriorityClassStrategy
from skiff.apiserver.registry import ResourceType
from skiff.apiserver.strategy import (
    CronJobStrategy,
    JobStrategy,
    NamespaceStrategy,
    NodeStrategy,
    PodStrategy,
    SecretStrategy,
    Strategy,
    WorkloadStrategy,
)

ALL = ("all",)
CREATE_ONLY = ("create",)


def _rt(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    strategy: Strategy | None = None,
    package: str | None = None,
    **kw: object,
) -> ResourceType:
    pkg = package or f"io.k8s.api.{(group.split('.')[0] if group else 'core')}.{version}"
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=sub,
        schema_ref=f"{pkg}.{kind}",
        strategy=strategy or Strategy(has_status="status" in sub),
        **kw,  # type: ignore[arg-type]
    )


def builtin_types() -> list[ResourceType]:
    label_names = validation.dns1123_label
    return [
        # core/v1
        _rt(
            "",
            "v1",
            "Namespace",
            "namespaces",
            namespaced=False,
            short=("ns",),
            sub=("status", "finalize"),
            strategy=NamespaceStrategy(),
        ),
        _rt(
            "",
            "v1",
            "Pod",
            "pods",
            short=("po",),
            categories=ALL,
            sub=("status", "binding"),
            strategy=PodStrategy(),
        ),
        _rt(
            "",
            "v1",
            "Node",
            "nodes",
            namespaced=False,
            short=("no",),
            sub=("status",),
            strategy=NodeStrategy(),
        ),
        _rt(
            "",
            "v1",
            "Service",
            "services",
            short=("svc",),
            categories=ALL,
            sub=("status",),
            strategy=Strategy(
                has_status=True,
                tracks_generation=False,
                name_validator=label_names,
                selectable_fields=("spec.clusterIP", "spec.type"),
            ),
        ),
        _rt("", "v1", "Endpoints", "endpoints", short=("ep",), strategy=Strategy(tracks_generation=False)),
        _rt("", "v1", "ConfigMap", "configmaps", short=("cm",), strategy=Strategy(tracks_generation=False)),
        _rt(
            "",
            "v1",
            "Secret",
            "secrets",
            strategy=SecretStrategy(),
        ),
        _rt(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            short=("sa",),
            strategy=Strategy(tracks_generation=False),
        ),
        _rt(
            "",
            "v1",
            "Event",
            "events",
            short=("ev",),
            storage_resource="core/events",
            strategy=Strategy(
                tracks_generation=False,
                selectable_fields=(
                    "involvedObject.kind",
                    "involvedObject.namespace",
                    "involvedObject.name",
                    "involvedObject.uid",
                    "involvedObject.apiVersion",
                    "involvedObject.resourceVersion",
                    "involvedObject.fieldPath",
                    "reason",
                    "reportingComponent",
                    "source",
                    "type",
                ),
            ),
        ),
        _rt(
            "",
            "v1",
            "LimitRange",
            "limitranges",
            short=("limits",),
            strategy=Strategy(tracks_generation=False),
        ),
        _rt("", "v1", "ResourceQuota", "resourcequotas", short=("quota",), sub=("status",)),
        _rt(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            namespaced=False,
            short=("pv",),
            sub=("status",),
            strategy=Strategy(has_status=True, tracks_generation=False),
        ),
        _rt(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            short=("pvc",),
            sub=("status",),
            strategy=Strategy(has_status=True, tracks_generation=False),
        ),
        # apps/v1
        _rt(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            short=("deploy",),
            categories=ALL,
            sub=("status", "scale"),
            strategy=WorkloadStrategy(),
        ),
        _rt(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            short=("rs",),
            categories=ALL,
            sub=("status", "scale"),
            strategy=WorkloadStrategy(selectable_fields=("status.replicas",), initial_status={"replicas": 0}),
        ),
        _rt(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            short=("ds",),
            categories=ALL,
            sub=("status",),
            strategy=WorkloadStrategy(
                initial_status={
                    "currentNumberScheduled": 0,
                    "numberMisscheduled": 0,
                    "desiredNumberScheduled": 0,
                    "numberReady": 0,
                }
            ),
        ),
        _rt(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            short=("sts",),
            categories=ALL,
            sub=("status", "scale"),
            strategy=WorkloadStrategy(
                immutable=("spec.selector", "spec.serviceName", "spec.podManagementPolicy"),
                initial_status={"replicas": 0, "availableReplicas": 0},
            ),
        ),
        _rt(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            strategy=Strategy(tracks_generation=False, immutable_fields=("data",)),
        ),
        # batch/v1
        _rt(
            "batch",
            "v1",
            "Job",
            "jobs",
            categories=ALL,
            sub=("status",),
            strategy=JobStrategy(
                immutable=("spec.selector", "spec.template", "spec.completions"),
                selectable_fields=("status.successful",),
            ),
        ),
        _rt(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            short=("cj",),
            categories=ALL,
            sub=("status",),
            strategy=CronJobStrategy(has_status=True),
        ),
        # autoscaling: v2 is stored, v1 converted
        _rt(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            short=("hpa",),
            categories=ALL,
            sub=("status",),
        ),
        _rt(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            short=("hpa",),
            categories=ALL,
            sub=("status",),
            storage_version="autoscaling/v2",
            to_storage=conversion.hpa_v1_to_v2,
            from_storage=conversion.hpa_v2_to_v1,
        ),
        # the rest
        _rt(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            package="io.k8s.api.coordination.v1",
            strategy=Strategy(tracks_generation=False),
        ),
        _rt(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            package="io.k8s.api.discovery.v1",
            strategy=Strategy(tracks_generation=False, selectable_fields=("addressType",)),
        ),
        _rt(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            short=("ev",),
            package="io.k8s.api.events.v1",
            storage_resource="core/events",
            storage_version="v1",
            to_storage=conversion.event_v1_to_core,
            from_storage=conversion.event_core_to_v1,
            strategy=Strategy(tracks_generation=False),
        ),
        _rt(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            namespaced=False,
            short=("pc",),
            package="io.k8s.api.scheduling.v1",
            strategy=PriorityClassStrategy(),
        ),
        _rt(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            package="io.k8s.api.rbac.v1",
            strategy=Strategy(tracks_generation=False),
        ),
        _rt(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            namespaced=False,
            package="io.k8s.api.rbac.v1",
            strategy=Strategy(tracks_generation=False),
        ),
        _rt(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            package="io.k8s.api.rbac.v1",
            strategy=Strategy(tracks_generation=False, immutable_fields=("roleRef",)),
        ),
        _rt(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            namespaced=False,
            package="io.k8s.api.rbac.v1",
            strategy=Strategy(tracks_generation=False, immutable_fields=("roleRef",)),
        ),
        _rt(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=False,
            short=("crd", "crds"),
            sub=("status",),
            package="io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
            strategy=CRDStrategy(),
        ),
        # virtual kinds: create answers, nothing stored
        _rt(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            namespaced=False,
            package="io.k8s.api.authorization.v1",
            verbs=CREATE_ONLY,
            strategy=Strategy(create_only=True),
        ),
        _rt(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            namespaced=False,
            package="io.k8s.api.authorization.v1",
            verbs=CREATE_ONLY,
            strategy=Strategy(create_only=True),
        ),
        _rt(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            namespaced=False,
            package="io.k8s.api.authentication.v1",
            verbs=CREATE_ONLY,
            strategy=Strategy(create_only=True),
        ),
    ]

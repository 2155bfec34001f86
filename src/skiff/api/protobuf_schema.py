"""Field tables for the Kubernetes protobuf messages kubectl sends.

The protobuf encoding of Kubernetes objects (k8s.io/api and k8s.io/apimachinery
`generated.proto`) numbers every field; the JSON encoding names them. This
module maps one to the other for the kinds that kubectl's typed commands POST
in protobuf (`kubectl create <kind>`, `kubectl auth can-i`, `kubectl auth whoami`)
and for everything those objects can contain, so that `skiff.api.protobuf`
can turn such a body back into the JSON object the same command would have
sent. The tables are hand-written from the upstream `.proto` files; the Go
struct tags decide the flags below. Fields new in 1.37 (alpha ones such as
PodSpec.schedulingGroup) were numbered by watching kubectl 1.37 encode them,
and the rendering of every field kubectl can send is checked against
`kubectl create ... --dry-run=client -o json` (tests/e2e/test_kubectl_protobuf.py).
PodSpec and everything in it are in `skiff.api.protobuf_schema_core`, only for size.

A message is `{field number: "jsonName:type"}`. The type is

* a scalar: `string`, `bytes` (rendered base64, as Go's JSON does),
  `bool`, `int32`, `int64`, `double`;
* a special: `Time` (RFC 3339, seconds; the zero time is left out, or `null`
  for a `!` field, as Go renders it), `MicroTime`,
  `Quantity` (its string), `IntOrString` (int or string), `FieldsV1` (raw JSON),
  `StringList` (a message wrapping a `repeated string`, rendered as a list:
  authentication/authorization `ExtraValue`);
* another message name;
* `[T]` for a repeated field, `{T}` for a `map<string, T>`.

The JSON name `...` marks an embedded Go struct (`json:",inline"`): its fields
are merged into the enclosing object. Trailing flags follow Go's JSON encoding:

* none: `omitempty` - a zero scalar (`""`, `0`, `false`) is dropped. Kubernetes'
  Go encoder writes every non-pointer field, zero or not, so zeros do reach us;
* `*`: a pointer field - present on the wire only when set, and then rendered
  even when zero (`replicas: 0`, `automountServiceAccountToken: false`);
* `!`: a field without `omitempty` - always rendered; when absent, as its zero
  value (`""`, `0`, `{...}` for a struct) or `null` (a list, a map, a time)
  (`containerPort`, `PolicyRule.verbs`, `SubjectAccessReviewStatus.allowed`);
* `?`: a pointer field without `omitempty` - rendered when on the wire, zero
  included, and `null` when absent (`GRPCAction.service`).

Messages (non-special types) are rendered whenever they are on the wire, `{}`
included, as Go renders a non-pointer struct field.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from skiff.api.protobuf_schema_core import POD_MESSAGES, VOLUME_MESSAGES

SCALARS: Final = frozenset({"string", "bytes", "bool", "int32", "int64", "double"})
SPECIALS: Final = frozenset({"Time", "MicroTime", "Quantity", "IntOrString", "FieldsV1", "StringList"})


class Field(NamedTuple):
    """One field of a message: how its wire value becomes JSON."""

    name: str  # JSON name; "..." for an inlined (embedded) message
    type: str  # a scalar, a special, or a message name
    repeated: bool = False
    map: bool = False  # map<string, type>, on the wire a repeated {1 key, 2 value} entry
    keep_zero: bool = False  # render zero values seen on the wire ("*" or "!")
    always: bool = False  # render even when absent: zero scalar or null ("!", "?")
    nullable: bool = False  # absent renders null even for a scalar ("?")

    @property
    def inline(self) -> bool:
        return self.name == "..."


_SPEC = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9]*|\.\.\.):(?P<type>\[\w+\]|\{\w+\}|\w+)(?P<flag>[*!?]?)$")


def parse_field(spec: str) -> Field:
    """Parse one `"jsonName:type[flag]"` table entry."""
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"bad field spec {spec!r}")
    name, typ, flag = match["name"], match["type"], match["flag"]
    repeated = typ.startswith("[")
    is_map = typ.startswith("{")
    if repeated or is_map:
        typ = typ[1:-1]
    return Field(name, typ, repeated, is_map, keep_zero=flag != "", always=flag in ("!", "?"), nullable=flag == "?")


# fmt: off
_META: dict[str, dict[int, str]] = {
    "ObjectMeta": {
        1: "name:string", 2: "generateName:string", 3: "namespace:string", 4: "selfLink:string",
        5: "uid:string", 6: "resourceVersion:string", 7: "generation:int64", 8: "creationTimestamp:Time",
        9: "deletionTimestamp:Time", 10: "deletionGracePeriodSeconds:int64*", 11: "labels:{string}",
        12: "annotations:{string}", 13: "ownerReferences:[OwnerReference]", 14: "finalizers:[string]",
        17: "managedFields:[ManagedFieldsEntry]",
    },
    "OwnerReference": {
        5: "apiVersion:string!", 1: "kind:string!", 3: "name:string!", 4: "uid:string!",
        6: "controller:bool*", 7: "blockOwnerDeletion:bool*",
    },
    "ManagedFieldsEntry": {
        1: "manager:string", 2: "operation:string", 3: "apiVersion:string", 4: "time:Time",
        6: "fieldsType:string", 7: "fieldsV1:FieldsV1", 8: "subresource:string",
    },
    "LabelSelector": {1: "matchLabels:{string}", 2: "matchExpressions:[LabelSelectorRequirement]"},
    "LabelSelectorRequirement": {1: "key:string!", 2: "operator:string!", 3: "values:[string]"},
    "Condition": {
        1: "type:string!", 2: "status:string!", 3: "observedGeneration:int64", 4: "lastTransitionTime:Time!",
        5: "reason:string!", 6: "message:string!",
    },
}

_CORE_OBJECTS: dict[str, dict[int, str]] = {
    "Namespace": {1: "metadata:ObjectMeta", 2: "spec:NamespaceSpec", 3: "status:NamespaceStatus"},
    "NamespaceSpec": {1: "finalizers:[string]"},
    "NamespaceStatus": {1: "phase:string", 2: "conditions:[NamespaceCondition]"},
    "NamespaceCondition": {
        1: "type:string!", 2: "status:string!", 4: "lastTransitionTime:Time", 5: "reason:string",
        6: "message:string",
    },
    "ConfigMap": {
        1: "metadata:ObjectMeta", 4: "immutable:bool*", 2: "data:{string}", 3: "binaryData:{bytes}",
    },
    "Secret": {
        1: "metadata:ObjectMeta", 5: "immutable:bool*", 2: "data:{bytes}", 4: "stringData:{string}",
        3: "type:string",
    },
    "ServiceAccount": {
        1: "metadata:ObjectMeta", 2: "secrets:[ObjectReference]",
        3: "imagePullSecrets:[LocalObjectReference]", 4: "automountServiceAccountToken:bool*",
    },
    "Service": {1: "metadata:ObjectMeta", 2: "spec:ServiceSpec", 3: "status:ServiceStatus"},
    "ServiceSpec": {
        1: "ports:[ServicePort]", 2: "selector:{string}", 3: "clusterIP:string", 18: "clusterIPs:[string]",
        4: "type:string", 5: "externalIPs:[string]", 7: "sessionAffinity:string", 8: "loadBalancerIP:string",
        9: "loadBalancerSourceRanges:[string]", 10: "externalName:string", 11: "externalTrafficPolicy:string",
        12: "healthCheckNodePort:int32", 13: "publishNotReadyAddresses:bool",
        14: "sessionAffinityConfig:SessionAffinityConfig", 19: "ipFamilies:[string]",
        17: "ipFamilyPolicy:string*", 20: "allocateLoadBalancerNodePorts:bool*",
        21: "loadBalancerClass:string*", 22: "internalTrafficPolicy:string*",
        23: "trafficDistribution:string*",
    },
    "ServicePort": {
        1: "name:string", 2: "protocol:string", 6: "appProtocol:string*", 3: "port:int32!",
        4: "targetPort:IntOrString", 5: "nodePort:int32",
    },
    "SessionAffinityConfig": {1: "clientIP:ClientIPConfig"},
    "ClientIPConfig": {1: "timeoutSeconds:int32*"},
    "ServiceStatus": {1: "loadBalancer:LoadBalancerStatus", 2: "conditions:[Condition]"},
    "LoadBalancerStatus": {1: "ingress:[LoadBalancerIngress]"},
    "LoadBalancerIngress": {
        1: "ip:string", 2: "hostname:string", 3: "ipMode:string*", 4: "ports:[PortStatus]",
    },
    "PortStatus": {1: "port:int32!", 2: "protocol:string!", 3: "error:string*"},
    "ResourceQuota": {1: "metadata:ObjectMeta", 2: "spec:ResourceQuotaSpec", 3: "status:ResourceQuotaStatus"},
    "ResourceQuotaSpec": {1: "hard:{Quantity}", 2: "scopes:[string]", 3: "scopeSelector:ScopeSelector"},
    "ResourceQuotaStatus": {1: "hard:{Quantity}", 2: "used:{Quantity}"},
    "ScopeSelector": {1: "matchExpressions:[ScopedResourceSelectorRequirement]"},
    "ScopedResourceSelectorRequirement": {
        1: "scopeName:string!", 2: "operator:string!", 3: "values:[string]",
    },
    "ObjectReference": {
        1: "kind:string", 2: "namespace:string", 3: "name:string", 4: "uid:string", 5: "apiVersion:string",
        6: "resourceVersion:string", 7: "fieldPath:string",
    },
    "LocalObjectReference": {1: "name:string"},
    "TypedLocalObjectReference": {1: "apiGroup:string*", 2: "kind:string!", 3: "name:string!"},
    "TypedObjectReference": {
        1: "apiGroup:string*", 2: "kind:string!", 3: "name:string!", 4: "namespace:string*",
    },
}

_APPS_BATCH: dict[str, dict[int, str]] = {
    # apps/v1
    "Deployment": {1: "metadata:ObjectMeta", 2: "spec:DeploymentSpec", 3: "status:DeploymentStatus"},
    "DeploymentSpec": {
        1: "replicas:int32*", 2: "selector:LabelSelector", 3: "template:PodTemplateSpec!",
        4: "strategy:DeploymentStrategy", 5: "minReadySeconds:int32", 6: "revisionHistoryLimit:int32*",
        7: "paused:bool", 9: "progressDeadlineSeconds:int32*",
    },
    "DeploymentStrategy": {1: "type:string", 2: "rollingUpdate:RollingUpdateDeployment"},
    "RollingUpdateDeployment": {1: "maxUnavailable:IntOrString", 2: "maxSurge:IntOrString"},
    "DeploymentStatus": {
        1: "observedGeneration:int64", 2: "replicas:int32", 3: "updatedReplicas:int32",
        7: "readyReplicas:int32", 4: "availableReplicas:int32", 5: "unavailableReplicas:int32",
        9: "terminatingReplicas:int32*", 6: "conditions:[DeploymentCondition]", 8: "collisionCount:int32*",
    },
    "DeploymentCondition": {
        1: "type:string!", 2: "status:string!", 6: "lastUpdateTime:Time", 7: "lastTransitionTime:Time",
        4: "reason:string", 5: "message:string",
    },
    # batch/v1
    "Job": {1: "metadata:ObjectMeta", 2: "spec:JobSpec", 3: "status:JobStatus"},
    "JobSpec": {
        1: "parallelism:int32*", 2: "completions:int32*", 3: "activeDeadlineSeconds:int64*",
        11: "podFailurePolicy:PodFailurePolicy", 16: "successPolicy:SuccessPolicy", 7: "backoffLimit:int32*",
        12: "backoffLimitPerIndex:int32*", 13: "maxFailedIndexes:int32*", 4: "selector:LabelSelector",
        5: "manualSelector:bool*", 6: "template:PodTemplateSpec!", 8: "ttlSecondsAfterFinished:int32*",
        9: "completionMode:string*", 10: "suspend:bool*", 14: "podReplacementPolicy:string*",
        15: "managedBy:string*", 17: "scheduling:JobSchedulingConfiguration",
    },
    "JobStatus": {
        1: "conditions:[JobCondition]", 2: "startTime:Time", 3: "completionTime:Time", 4: "active:int32",
        5: "succeeded:int32", 6: "failed:int32", 11: "terminating:int32*", 7: "completedIndexes:string",
        10: "failedIndexes:string*", 8: "uncountedTerminatedPods:UncountedTerminatedPods", 9: "ready:int32*",
    },
    "JobCondition": {
        1: "type:string!", 2: "status:string!", 3: "lastProbeTime:Time", 4: "lastTransitionTime:Time",
        5: "reason:string", 6: "message:string",
    },
    "UncountedTerminatedPods": {1: "succeeded:[string]", 2: "failed:[string]"},
    "PodFailurePolicy": {1: "rules:[PodFailurePolicyRule]!"},
    "PodFailurePolicyRule": {
        1: "action:string!", 2: "onExitCodes:PodFailurePolicyOnExitCodesRequirement",
        3: "onPodConditions:[PodFailurePolicyOnPodConditionsPattern]",
    },
    "PodFailurePolicyOnExitCodesRequirement": {
        1: "containerName:string*", 2: "operator:string!", 3: "values:[int32]!",
    },
    "PodFailurePolicyOnPodConditionsPattern": {1: "type:string!", 2: "status:string!"},
    "SuccessPolicy": {1: "rules:[SuccessPolicyRule]!"},
    "SuccessPolicyRule": {1: "succeededIndexes:string*", 2: "succeededCount:int32*"},
    # JobSpec.scheduling (alpha in 1.37): numbers observed from kubectl 1.37's own encoding.
    "JobSchedulingConfiguration": {
        1: "schedulingPolicy:PodGroupSchedulingPolicy",
        2: "schedulingConstraints:PodGroupSchedulingConstraints",
        3: "disruptionMode:PodGroupDisruptionMode", 4: "resourceClaims:[PodGroupResourceClaim]",
    },
    "PodGroupSchedulingPolicy": {1: "basic:EmptyObject", 2: "gang:GangSchedulingPolicy"},
    "GangSchedulingPolicy": {1: "minCount:int32*"},
    "PodGroupSchedulingConstraints": {1: "topology:[TopologyConstraint]"},
    "TopologyConstraint": {1: "key:string*"},
    "PodGroupDisruptionMode": {1: "single:EmptyObject", 2: "all:EmptyObject"},
    "PodGroupResourceClaim": {
        1: "name:string*", 2: "resourceClaimName:string*", 3: "resourceClaimTemplateName:string*",
    },
    "EmptyObject": {},
    "JobTemplateSpec": {1: "metadata:ObjectMeta", 2: "spec:JobSpec"},
    "CronJob": {1: "metadata:ObjectMeta", 2: "spec:CronJobSpec", 3: "status:CronJobStatus"},
    "CronJobSpec": {
        1: "schedule:string!", 8: "timeZone:string*", 2: "startingDeadlineSeconds:int64*",
        3: "concurrencyPolicy:string", 4: "suspend:bool*", 5: "jobTemplate:JobTemplateSpec!",
        6: "successfulJobsHistoryLimit:int32*", 7: "failedJobsHistoryLimit:int32*",
    },
    "CronJobStatus": {
        1: "active:[ObjectReference]", 4: "lastScheduleTime:Time", 5: "lastSuccessfulTime:Time",
    },
}

_OTHER_GROUPS: dict[str, dict[int, str]] = {
    # rbac.authorization.k8s.io/v1
    "Role": {1: "metadata:ObjectMeta", 2: "rules:[PolicyRule]!"},
    "ClusterRole": {1: "metadata:ObjectMeta", 2: "rules:[PolicyRule]!", 3: "aggregationRule:AggregationRule"},
    "PolicyRule": {
        1: "verbs:[string]!", 2: "apiGroups:[string]", 3: "resources:[string]", 4: "resourceNames:[string]",
        5: "nonResourceURLs:[string]",
    },
    "AggregationRule": {1: "clusterRoleSelectors:[LabelSelector]"},
    "RoleBinding": {1: "metadata:ObjectMeta", 2: "subjects:[Subject]", 3: "roleRef:RoleRef!"},
    "ClusterRoleBinding": {1: "metadata:ObjectMeta", 2: "subjects:[Subject]", 3: "roleRef:RoleRef!"},
    "Subject": {1: "kind:string!", 2: "apiGroup:string", 3: "name:string!", 4: "namespace:string"},
    "RoleRef": {1: "apiGroup:string!", 2: "kind:string!", 3: "name:string!"},
    # certificates.k8s.io/v1 (`kubectl certificate approve|deny` PUTs the whole object to /approval)
    "CertificateSigningRequest": {
        1: "metadata:ObjectMeta", 2: "spec:CertificateSigningRequestSpec", 3: "status:CertificateSigningRequestStatus",
    },
    "CertificateSigningRequestSpec": {
        1: "request:bytes!", 7: "signerName:string!", 8: "expirationSeconds:int32*", 5: "usages:[string]",
        2: "username:string", 3: "uid:string", 4: "groups:[string]", 6: "extra:{StringList}",
    },
    "CertificateSigningRequestStatus": {1: "conditions:[CertificateSigningRequestCondition]", 2: "certificate:bytes"},
    "CertificateSigningRequestCondition": {
        1: "type:string!", 6: "status:string!", 2: "reason:string", 3: "message:string", 4: "lastUpdateTime:Time",
        5: "lastTransitionTime:Time",
    },
    # scheduling.k8s.io/v1
    "PriorityClass": {
        1: "metadata:ObjectMeta", 2: "value:int32!", 3: "globalDefault:bool", 4: "description:string",
        5: "preemptionPolicy:string*",
    },
    # policy/v1
    "PodDisruptionBudget": {
        1: "metadata:ObjectMeta", 2: "spec:PodDisruptionBudgetSpec", 3: "status:PodDisruptionBudgetStatus",
    },
    "PodDisruptionBudgetSpec": {
        1: "minAvailable:IntOrString", 2: "selector:LabelSelector", 3: "maxUnavailable:IntOrString",
        4: "unhealthyPodEvictionPolicy:string*",
    },
    "PodDisruptionBudgetStatus": {
        1: "observedGeneration:int64", 2: "disruptedPods:{Time}", 3: "disruptionsAllowed:int32!",
        4: "currentHealthy:int32!", 5: "desiredHealthy:int32!", 6: "expectedPods:int32!",
        7: "conditions:[Condition]",
    },
    # networking.k8s.io/v1
    "Ingress": {1: "metadata:ObjectMeta", 2: "spec:IngressSpec", 3: "status:IngressStatus"},
    "IngressSpec": {
        4: "ingressClassName:string*", 1: "defaultBackend:IngressBackend", 2: "tls:[IngressTLS]",
        3: "rules:[IngressRule]",
    },
    "IngressBackend": {4: "service:IngressServiceBackend", 3: "resource:TypedLocalObjectReference"},
    "IngressServiceBackend": {1: "name:string!", 2: "port:ServiceBackendPort"},
    "ServiceBackendPort": {1: "name:string", 2: "number:int32"},
    "IngressTLS": {1: "hosts:[string]", 2: "secretName:string"},
    "IngressRule": {1: "host:string", 2: "...:IngressRuleValue"},
    "IngressRuleValue": {1: "http:HTTPIngressRuleValue"},
    "HTTPIngressRuleValue": {1: "paths:[HTTPIngressPath]!"},
    "HTTPIngressPath": {1: "path:string", 3: "pathType:string*", 2: "backend:IngressBackend!"},
    "IngressStatus": {1: "loadBalancer:IngressLoadBalancerStatus"},
    "IngressLoadBalancerStatus": {1: "ingress:[IngressLoadBalancerIngress]"},
    "IngressLoadBalancerIngress": {1: "ip:string", 2: "hostname:string", 4: "ports:[IngressPortStatus]"},
    "IngressPortStatus": {1: "port:int32!", 2: "protocol:string!", 3: "error:string*"},
    # authorization.k8s.io/v1 (also v1beta1)
    "SelfSubjectAccessReview": {
        1: "metadata:ObjectMeta", 2: "spec:SelfSubjectAccessReviewSpec!",
        3: "status:SubjectAccessReviewStatus",
    },
    "SelfSubjectAccessReviewSpec": {
        1: "resourceAttributes:ResourceAttributes", 2: "nonResourceAttributes:NonResourceAttributes",
    },
    "ResourceAttributes": {
        1: "namespace:string", 2: "verb:string", 3: "group:string", 4: "version:string", 5: "resource:string",
        6: "subresource:string", 7: "name:string", 8: "fieldSelector:FieldSelectorAttributes",
        9: "labelSelector:LabelSelectorAttributes",
    },
    "FieldSelectorAttributes": {1: "rawSelector:string", 2: "requirements:[FieldSelectorRequirement]"},
    "FieldSelectorRequirement": {1: "key:string!", 2: "operator:string!", 3: "values:[string]"},
    "LabelSelectorAttributes": {1: "rawSelector:string", 2: "requirements:[LabelSelectorRequirement]"},
    "NonResourceAttributes": {1: "path:string", 2: "verb:string"},
    "SubjectAccessReviewStatus": {
        1: "allowed:bool!", 4: "denied:bool", 2: "reason:string", 3: "evaluationError:string",
    },
    "SelfSubjectRulesReview": {
        1: "metadata:ObjectMeta", 2: "spec:SelfSubjectRulesReviewSpec!", 3: "status:SubjectRulesReviewStatus",
    },
    "SelfSubjectRulesReviewSpec": {1: "namespace:string"},
    "SubjectRulesReviewStatus": {
        1: "resourceRules:[ResourceRule]!", 2: "nonResourceRules:[NonResourceRule]!", 3: "incomplete:bool!",
        4: "evaluationError:string",
    },
    "ResourceRule": {
        1: "verbs:[string]!", 2: "apiGroups:[string]", 3: "resources:[string]", 4: "resourceNames:[string]",
    },
    "NonResourceRule": {1: "verbs:[string]!", 2: "nonResourceURLs:[string]"},
    # authentication.k8s.io/v1 (SelfSubjectReview also v1beta1, v1alpha1)
    "SelfSubjectReview": {1: "metadata:ObjectMeta", 2: "status:SelfSubjectReviewStatus"},
    "SelfSubjectReviewStatus": {1: "userInfo:UserInfo"},
    "UserInfo": {1: "username:string", 2: "uid:string", 3: "groups:[string]", 4: "extra:{StringList}"},
    "TokenRequest": {1: "metadata:ObjectMeta", 2: "spec:TokenRequestSpec!", 3: "status:TokenRequestStatus"},
    "TokenRequestSpec": {
        1: "audiences:[string]!", 4: "expirationSeconds:int64?", 3: "boundObjectRef:BoundObjectReference?",
    },
    "BoundObjectReference": {1: "kind:string", 2: "apiVersion:string", 3: "name:string", 4: "uid:string"},
    "TokenRequestStatus": {1: "token:string!", 2: "expirationTimestamp:Time!"},
    # autoscaling/v2 (`kubectl autoscale`; it falls back to v1 on failure)
    "HorizontalPodAutoscalerV2": {
        1: "metadata:ObjectMeta", 2: "spec:HorizontalPodAutoscalerSpecV2", 3: "status:HorizontalPodAutoscalerStatusV2",
    },
    "HorizontalPodAutoscalerSpecV2": {
        1: "scaleTargetRef:CrossVersionObjectReference!", 2: "minReplicas:int32*", 3: "maxReplicas:int32!",
        4: "metrics:[MetricSpec]", 5: "behavior:HorizontalPodAutoscalerBehavior",
    },
    "CrossVersionObjectReference": {1: "kind:string!", 2: "name:string!", 3: "apiVersion:string"},
    "MetricSpec": {
        1: "type:string!", 2: "object:ObjectMetricSource", 3: "pods:PodsMetricSource",
        4: "resource:ResourceMetricSource", 7: "containerResource:ContainerResourceMetricSource",
        5: "external:ExternalMetricSource",
    },
    "ObjectMetricSource": {
        1: "describedObject:CrossVersionObjectReference!", 2: "target:MetricTarget!", 3: "metric:MetricIdentifier!",
    },
    "PodsMetricSource": {1: "metric:MetricIdentifier!", 2: "target:MetricTarget!"},
    "ResourceMetricSource": {1: "name:string!", 2: "target:MetricTarget!"},
    "ContainerResourceMetricSource": {1: "name:string!", 2: "target:MetricTarget!", 3: "container:string!"},
    "ExternalMetricSource": {1: "metric:MetricIdentifier!", 2: "target:MetricTarget!"},
    "MetricIdentifier": {1: "name:string!", 2: "selector:LabelSelector"},
    "MetricTarget": {
        1: "type:string!", 2: "value:Quantity", 3: "averageValue:Quantity", 4: "averageUtilization:int32*",
    },
    "HorizontalPodAutoscalerBehavior": {1: "scaleUp:HPAScalingRules", 2: "scaleDown:HPAScalingRules"},
    "HPAScalingRules": {
        3: "stabilizationWindowSeconds:int32*", 1: "selectPolicy:string*", 2: "policies:[HPAScalingPolicy]",
        4: "tolerance:Quantity",
    },
    "HPAScalingPolicy": {1: "type:string!", 2: "value:int32!", 3: "periodSeconds:int32!"},
    "HorizontalPodAutoscalerStatusV2": {
        1: "observedGeneration:int64*", 2: "lastScaleTime:Time", 3: "currentReplicas:int32",
        4: "desiredReplicas:int32!", 5: "currentMetrics:[MetricStatus]!",
        6: "conditions:[HorizontalPodAutoscalerCondition]",
    },
    "MetricStatus": {
        1: "type:string!", 2: "object:ObjectMetricStatus", 3: "pods:PodsMetricStatus",
        4: "resource:ResourceMetricStatus", 7: "containerResource:ContainerResourceMetricStatus",
        5: "external:ExternalMetricStatus",
    },
    "ObjectMetricStatus": {
        1: "metric:MetricIdentifier!", 2: "current:MetricValueStatus!",
        3: "describedObject:CrossVersionObjectReference!",
    },
    "PodsMetricStatus": {1: "metric:MetricIdentifier!", 2: "current:MetricValueStatus!"},
    "ResourceMetricStatus": {1: "name:string!", 2: "current:MetricValueStatus!"},
    "ContainerResourceMetricStatus": {1: "name:string!", 2: "current:MetricValueStatus!", 3: "container:string!"},
    "ExternalMetricStatus": {1: "metric:MetricIdentifier!", 2: "current:MetricValueStatus!"},
    "MetricValueStatus": {1: "value:Quantity", 2: "averageValue:Quantity", 3: "averageUtilization:int32*"},
    "HorizontalPodAutoscalerCondition": {
        1: "type:string!", 2: "status:string!", 3: "lastTransitionTime:Time", 4: "reason:string", 5: "message:string",
    },
    # autoscaling/v1
    "HorizontalPodAutoscaler": {
        1: "metadata:ObjectMeta", 2: "spec:HorizontalPodAutoscalerSpec", 3: "status:HorizontalPodAutoscalerStatus",
    },
    "HorizontalPodAutoscalerSpec": {
        1: "scaleTargetRef:CrossVersionObjectReference!", 2: "minReplicas:int32*", 3: "maxReplicas:int32!",
        4: "targetCPUUtilizationPercentage:int32*",
    },
    "HorizontalPodAutoscalerStatus": {
        1: "observedGeneration:int64*", 2: "lastScaleTime:Time", 3: "currentReplicas:int32!",
        4: "desiredReplicas:int32!", 5: "currentCPUUtilizationPercentage:int32*",
    },
}
# fmt: on


def _build() -> dict[str, dict[int, Field]]:
    messages: dict[str, dict[int, Field]] = {}
    for table in (_META, _CORE_OBJECTS, POD_MESSAGES, VOLUME_MESSAGES, _APPS_BATCH, _OTHER_GROUPS):
        for message, fields in table.items():
            if message in messages:
                raise ValueError(f"message {message} defined twice")
            messages[message] = {number: parse_field(spec) for number, spec in fields.items()}
    return messages


MESSAGES: Final[dict[str, dict[int, Field]]] = _build()
"""Every known message: name -> {field number: Field}."""

_AUTHN = ("authentication.k8s.io/v1", "authentication.k8s.io/v1beta1", "authentication.k8s.io/v1alpha1")
_AUTHZ = ("authorization.k8s.io/v1", "authorization.k8s.io/v1beta1")

_CORE_KINDS = ("Namespace", "ConfigMap", "Secret", "Service", "ServiceAccount", "ResourceQuota")
_RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
_AUTHZ_KINDS = ("SelfSubjectAccessReview", "SelfSubjectRulesReview")

TOP_LEVEL: Final[dict[tuple[str, str], str]] = {
    **{("v1", kind): kind for kind in _CORE_KINDS},
    ("apps/v1", "Deployment"): "Deployment",
    ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    **{("rbac.authorization.k8s.io/v1", kind): kind for kind in _RBAC_KINDS},
    ("scheduling.k8s.io/v1", "PriorityClass"): "PriorityClass",
    ("certificates.k8s.io/v1", "CertificateSigningRequest"): "CertificateSigningRequest",
    ("policy/v1", "PodDisruptionBudget"): "PodDisruptionBudget",
    ("networking.k8s.io/v1", "Ingress"): "Ingress",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "HorizontalPodAutoscalerV2",
    ("autoscaling/v1", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler",
    **{(gv, kind): kind for gv in _AUTHZ for kind in _AUTHZ_KINDS},
    **{(gv, "SelfSubjectReview"): "SelfSubjectReview" for gv in _AUTHN},
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
}
"""(apiVersion, kind) -> the message of a body decodable from protobuf."""

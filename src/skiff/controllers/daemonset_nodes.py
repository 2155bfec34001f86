"""Which nodes a daemon pod belongs on: node fitness, daemon tolerations, and pinning a pod to its node.

Kubernetes' `NodeShouldRunDaemonPod` and the helpers around it
(pkg/controller/daemon/util), pure. For each node: *should a daemon pod run
here* (the template's `nodeName`, `nodeSelector` and required node affinity
match the node, and the node's NoSchedule/NoExecute taints are tolerated)
and *may an existing one keep running* (only an untolerated NoExecute taint
evicts).

Pods are pinned the way Kubernetes has done since 1.12: the pod's required
node affinity is replaced by one term `matchFields: metadata.name In
[<node>]` and the scheduler binds it, so resources, ports and preemption
are checked like for any pod (`spec.nodeName` is not set by the
controller). Every daemon pod gets the tolerations Kubernetes adds
(`not-ready` and `unreachable` NoExecute without a time limit;
`disk-pressure`, `memory-pressure`, `pid-pressure`, `unschedulable`
NoSchedule; `network-unavailable` for host-network pods), so daemons stay
on nodes in trouble, where they are often what fixes the trouble.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api.tolerations import tolerates
from skiff.controllers.workloads import meta

Obj = dict[str, Any]
OBJECT_NAME_FIELD = "metadata.name"
DAEMON_TOLERATIONS: tuple[tuple[str, str], ...] = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
NETWORK_UNAVAILABLE = ("node.kubernetes.io/network-unavailable", "NoSchedule")


def _requirement_matches(req: Obj, value: str | None) -> bool:
    op = req.get("operator")
    values = [str(v) for v in req.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _term_matches(term: Obj, node: Obj) -> bool:
    """A NodeSelectorTerm: all its expressions and fields match (an empty term matches nothing)."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = meta(node).get("labels") or {}
    if not all(_requirement_matches(r, labels.get(r.get("key", ""))) for r in exprs):
        return False
    return all(r.get("key") == OBJECT_NAME_FIELD and _requirement_matches(r, meta(node).get("name")) for r in fields)


def node_affinity_matches(pod_spec: Obj, node: Obj) -> bool:
    """`nodeSelector` and required node affinity of a pod spec against a node (terms ORed)."""
    labels = meta(node).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    return any(_term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def untolerated(taints: list[Obj], tolerations: list[Obj], effects: tuple[str, ...]) -> Obj | None:
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def with_daemon_tolerations(pod_spec: Obj) -> Obj:
    """The pod spec with the tolerations Kubernetes adds to every daemon pod (a new dict)."""
    spec = copy.deepcopy(pod_spec)
    tolerations: list[Obj] = spec.setdefault("tolerations", [])
    wanted = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append(NETWORK_UNAVAILABLE)
    for key, effect in wanted:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": effect})
    return spec


def should_run(pod_spec: Obj, node: Obj) -> tuple[bool, bool]:
    """(should a daemon pod run on `node`, may a running one stay) — NodeShouldRunDaemonPod."""
    name = pod_spec.get("nodeName")
    if name and name != meta(node).get("name"):
        return False, False
    if not node_affinity_matches(pod_spec, node):
        return False, False
    taints: list[Obj] = (node.get("spec") or {}).get("taints") or []
    tolerations: list[Obj] = pod_spec.get("tolerations") or []
    if untolerated(taints, tolerations, ("NoSchedule", "NoExecute")) is not None:
        return False, untolerated(taints, tolerations, ("NoExecute",)) is None
    return True, True


def pin_to_node(pod_spec: Obj, node_name: str) -> None:
    """Replace the required node affinity with `metadata.name In [node]` (ReplaceDaemonSetPodNodeNameNodeAffinity)."""
    affinity = pod_spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchFields": [{"key": OBJECT_NAME_FIELD, "operator": "In", "values": [node_name]}]}]
    }


def target_node(pod: Obj) -> str | None:
    """The node a daemon pod is for: `spec.nodeName`, or its pinning affinity (GetTargetNodeName)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            values = field.get("values") or []
            if field.get("key") == OBJECT_NAME_FIELD and field.get("operator") == "In" and len(values) == 1:
                return str(values[0])
    return None

"""The bootstrap RBAC policy the API server creates and reconciles at every start.

As kube-apiserver's `rbac/bootstrap-roles` post-start hook
(`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`): the default
ClusterRoles (cluster-admin, the aggregated admin/edit/view and the
`system:aggregate-to-*` roles they collect, discovery, basic-user,
public-info-viewer, node-bootstrapper, the node client CSR role, system:node
and system:node-proxier) and their ClusterRoleBindings. Each carries the annotation
`rbac.authorization.kubernetes.io/autoupdate: "true"`: while it does, a
missing object is created and missing rules, labels and subjects are added
back; an administrator who sets it to "false" keeps their edits.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from skiff.api import errors
from skiff.apiserver.node_authz import NODE_RULES
from skiff.apiserver.options import WriteOptions
from skiff.apiserver.registry import Registry
from skiff.apiserver.store import Store

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
BOOTSTRAPPING_LABEL = {"kubernetes.io/bootstrapping": "rbac-defaults"}
Obj = dict[str, Any]

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> Obj:
    return {"verbs": verbs, "apiGroups": groups, "resources": resources}


def _cluster_role(name: str, rules: list[Obj], *, labels: dict[str, str] | None = None,
                  aggregate_from: str | None = None) -> Obj:  # fmt: skip
    role: Obj = {
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {**BOOTSTRAPPING_LABEL, **(labels or {})},
            "annotations": {AUTOUPDATE: "true"},
        },
        "rules": rules,
    }
    if aggregate_from is not None:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate_from: "true"}}]}
    return role


def _binding(name: str, role: str, groups: list[str]) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(BOOTSTRAPPING_LABEL), "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups],
    }


_VIEW_CORE = ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
              "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
              "services/status", "bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
              "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]  # fmt: skip
_APPS = ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
         "replicasets/scale", "statefulsets", "statefulsets/scale"]  # fmt: skip
_APPS_STATUS = ["daemonsets/status", "deployments/status", "replicasets/status", "statefulsets/status"]


def _view_rules() -> list[Obj]:
    return [
        _rule(READ, [""], _VIEW_CORE),
        _rule(READ, [""], ["namespaces"]),
        _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
        _rule(READ, ["apps"], [r for r in _APPS if r != "deployments/rollback"] + _APPS_STATUS),
        _rule(READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        _rule(READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        _rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        _rule(READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
    ]


def _edit_rules() -> list[Obj]:
    return [
        _rule(["impersonate"], [""], ["serviceaccounts"]),
        _rule(WRITE, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
        _rule(["create"], [""], ["pods/eviction"]),
        _rule(
            WRITE,
            [""],
            [
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        _rule(WRITE, ["apps"], _APPS),
        _rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
        _rule(WRITE, ["batch"], ["cronjobs", "jobs"]),
        _rule(WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
        _rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
        _rule(WRITE, ["discovery.k8s.io"], ["endpointslices"]),
        _rule(READ, [""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
    ]


def _admin_rules() -> list[Obj]:
    return [
        _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
        _rule([*WRITE, *READ], [GROUP], ["rolebindings", "roles"]),
    ]


_PUBLIC_INFO = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def cluster_roles() -> list[Obj]:
    return [
        _cluster_role(
            "cluster-admin",
            [_rule(["*"], ["*"], ["*"]), {"verbs": ["*"], "nonResourceURLs": ["*"]}],
        ),
        _cluster_role("admin", [], labels={}, aggregate_from="admin"),
        _cluster_role("edit", [], labels={AGGREGATE_TO + "admin": "true"}, aggregate_from="edit"),
        _cluster_role("view", [], labels={AGGREGATE_TO + "edit": "true"}, aggregate_from="view"),
        _cluster_role("system:aggregate-to-admin", _admin_rules(), labels={AGGREGATE_TO + "admin": "true"}),
        _cluster_role("system:aggregate-to-edit", _edit_rules(), labels={AGGREGATE_TO + "edit": "true"}),
        _cluster_role("system:aggregate-to-view", _view_rules(), labels={AGGREGATE_TO + "view": "true"}),
        _cluster_role(
            "system:discovery",
            [
                {
                    "verbs": ["get"],
                    "nonResourceURLs": [
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/openapi",
                        "/openapi/*",
                        "/readyz",
                        "/version",
                        "/version/",
                    ],
                }
            ],
        ),
        _cluster_role(
            "system:basic-user",
            [
                _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
                _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            ],
        ),
        _cluster_role("system:public-info-viewer", [{"verbs": ["get"], "nonResourceURLs": _PUBLIC_INFO}]),
        _cluster_role(
            "system:node-bootstrapper",
            [_rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"])],
        ),
        _cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            [_rule(["create"], ["certificates.k8s.io"], ["certificatesigningrequests/nodeclient"])],
        ),
        # what a kubelet may do; bound to nobody: the Node authorizer applies these rules itself
        _cluster_role("system:node", [rule.to_dict() for rule in NODE_RULES]),
        _cluster_role(
            "system:node-proxier",
            [
                _rule(["list", "watch"], [""], ["endpoints", "services"]),
                _rule(READ, [""], ["nodes"]),
                _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
                _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
            ],
        ),
    ]


def cluster_role_bindings() -> list[Obj]:
    return [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _binding(
            "system:public-info-viewer", "system:public-info-viewer", ["system:authenticated", "system:unauthenticated"]
        ),
        # as kubeadm and k3s bind them: join tokens may ask for, and get, node client certificates
        _binding("system:node-bootstrapper", "system:node-bootstrapper", ["system:bootstrappers"]),
        _binding(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            ["system:bootstrappers"],
        ),
        # k3s binds this to its kube-proxy user; skiff's node agent runs the service proxy and the pod
        # network itself, under the node's own identity, so the nodes' group gets what kube-proxy gets
        _binding("system:node-proxier", "system:node-proxier", ["system:nodes"]),
    ]


def reconcile(existing: Obj, wanted: Obj) -> Obj | None:
    """`existing` with what `wanted` adds (rules, labels, subjects); None when nothing is missing or
    the object opted out (autoupdate "false"). As Kubernetes' reconciliation, nothing is removed."""
    meta = existing.get("metadata") or {}
    if (meta.get("annotations") or {}).get(AUTOUPDATE) == "false":
        return None
    out = copy.deepcopy(existing)
    changed = False
    labels = out["metadata"].setdefault("labels", {})
    for k, v in wanted["metadata"].get("labels", {}).items():
        if labels.get(k) != v:
            labels[k], changed = v, True
    annotations = out["metadata"].setdefault("annotations", {})
    if annotations.get(AUTOUPDATE) != "true":
        annotations[AUTOUPDATE], changed = "true", True
    key = "subjects" if wanted["kind"].endswith("Binding") else "rules"
    have = out.get(key) or []
    for item in wanted.get(key) or []:
        if item not in have:
            have.append(item)
            changed = True
    out[key] = have
    if "aggregationRule" in wanted and out.get("aggregationRule") != wanted["aggregationRule"]:
        out["aggregationRule"], changed = wanted["aggregationRule"], True
    return out if changed else None


async def ensure_bootstrap_policy(store: Store, registry: Registry) -> None:
    """Create the bootstrap roles and bindings, or add back what they lack."""
    for resource, objects in (("clusterroles", cluster_roles()), ("clusterrolebindings", cluster_role_bindings())):
        rt = registry.get(GROUP, "v1", resource)
        assert rt is not None
        for wanted in objects:
            name = wanted["metadata"]["name"]
            for _ in range(3):
                try:
                    existing = await store.get(rt, None, name)
                except errors.NotFound:
                    try:
                        await store.create(rt, None, copy.deepcopy(wanted), WriteOptions())
                        log.info("created %s %s", wanted["kind"], name)
                        break
                    except errors.AlreadyExists:
                        continue
                body = reconcile(existing, wanted)
                if body is None:
                    break
                if wanted["kind"] == "ClusterRole" and "aggregationRule" in wanted:
                    body["rules"] = existing.get("rules") or []  # the aggregation controller fills them
                try:
                    await store.update(rt, None, name, body, WriteOptions())
                    log.info("reconciled %s %s", wanted["kind"], name)
                    break
                except errors.Conflict:
                    continue

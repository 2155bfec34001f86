"""Unit tests of RBAC's pure logic: rule matching, the policy index, request-info parsing, validation,
aggregation and bootstrap reconciliation."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.apiserver.auth import UserInfo
from skiff.apiserver.authz import forbidden, request_attributes
from skiff.apiserver.rbac import PolicyIndex, Rule, rule_allows
from skiff.apiserver.rbac_bootstrap import AUTOUPDATE, cluster_roles, reconcile
from skiff.apiserver.rbac_strategy import RoleBindingStrategy, RoleStrategy
from skiff.controllers.clusterroleaggregation import aggregated_rules

SA = UserInfo("system:serviceaccount:ns:op", ("system:serviceaccounts", "system:authenticated"))


def req(method: str, path: str, query: dict[str, str] | None = None, user: UserInfo = SA) -> Any:
    return request_attributes(method, path, query or {}, user)


@pytest.mark.parametrize(
    ("method", "path", "query", "verb", "resource", "subresource", "namespace", "name"),
    [
        ("GET", "/api/v1/namespaces/ns/pods", {}, "list", "pods", "", "ns", ""),
        ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, "watch", "pods", "", "ns", ""),
        ("GET", "/api/v1/watch/namespaces/ns/pods", {}, "watch", "pods", "", "ns", ""),
        ("GET", "/api/v1/namespaces/ns/pods/p", {}, "get", "pods", "", "ns", "p"),
        ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, "get", "pods", "log", "ns", "p"),
        ("POST", "/api/v1/namespaces/ns/pods", {}, "create", "pods", "", "ns", ""),
        ("POST", "/api/v1/namespaces/ns/pods/p/exec", {}, "create", "pods", "exec", "ns", "p"),
        ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {}, "update", "deployments", "scale", "ns", "d"),
        ("PATCH", "/api/v1/nodes/n", {}, "patch", "nodes", "", "", "n"),
        ("DELETE", "/api/v1/namespaces/ns/pods/p", {}, "delete", "pods", "", "ns", "p"),
        ("DELETE", "/api/v1/namespaces/ns/pods", {}, "deletecollection", "pods", "", "ns", ""),
        ("GET", "/api/v1/namespaces/ns", {}, "get", "namespaces", "", "ns", "ns"),
        ("PUT", "/api/v1/namespaces/ns/finalize", {}, "update", "namespaces", "finalize", "ns", "ns"),
        ("GET", "/api/v1/pods", {}, "list", "pods", "", "", ""),
        ("GET", "/api/v1/namespaces/ns/pods", {"fieldSelector": "metadata.name=p"}, "list", "pods", "", "ns", "p"),
    ],
)
def test_request_info(method: str, path: str, query: dict[str, str], verb: str, resource: str, subresource: str,
                      namespace: str, name: str) -> None:  # fmt: skip
    a = req(method, path, query)
    assert (a.resource_request, a.verb, a.resource, a.subresource, a.namespace, a.name) == (
        True, verb, resource, subresource, namespace, name,
    )  # fmt: skip


def test_non_resource_request_info() -> None:
    a = req("GET", "/healthz")
    assert (a.resource_request, a.verb, a.path) == (False, "get", "/healthz")
    assert req("GET", "/apis/apps/v1").resource_request is False


def rule(**kw: Any) -> Rule:
    return Rule.of(kw)


def test_rule_matching() -> None:
    pods = rule(verbs=["get", "list"], apiGroups=[""], resources=["pods"])
    assert rule_allows(pods, req("GET", "/api/v1/namespaces/ns/pods"))
    assert not rule_allows(pods, req("GET", "/api/v1/namespaces/ns/pods", {"watch": "1"}))
    assert not rule_allows(pods, req("GET", "/api/v1/namespaces/ns/pods/p/log"))  # subresources are named
    assert not rule_allows(pods, req("GET", "/apis/apps/v1/namespaces/ns/deployments"))
    logs = rule(verbs=["get"], apiGroups=[""], resources=["pods/log"])
    assert rule_allows(logs, req("GET", "/api/v1/namespaces/ns/pods/p/log"))
    assert not rule_allows(logs, req("GET", "/api/v1/namespaces/ns/pods/p"))
    scale = rule(verbs=["update"], apiGroups=["*"], resources=["*/scale"])
    assert rule_allows(scale, req("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale"))
    assert not rule_allows(scale, req("PUT", "/apis/apps/v1/namespaces/ns/deployments/d"))
    everything = rule(verbs=["*"], apiGroups=["*"], resources=["*"])
    assert rule_allows(everything, req("DELETE", "/apis/batch/v1/namespaces/ns/jobs"))
    assert not rule_allows(everything, req("GET", "/healthz"))  # resource rules grant no URL
    named = rule(verbs=["get", "update"], apiGroups=[""], resources=["configmaps"], resourceNames=["one"])
    assert rule_allows(named, req("GET", "/api/v1/namespaces/ns/configmaps/one"))
    assert not rule_allows(named, req("GET", "/api/v1/namespaces/ns/configmaps/two"))
    assert not rule_allows(named, req("GET", "/api/v1/namespaces/ns/configmaps"))  # a list names nothing
    urls = rule(verbs=["get"], nonResourceURLs=["/healthz", "/apis/*"])
    assert rule_allows(urls, req("GET", "/healthz"))
    assert rule_allows(urls, req("GET", "/apis/apps/v1"))
    assert not rule_allows(urls, req("GET", "/api"))
    assert not rule_allows(urls, req("POST", "/healthz"))


def _binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, Any]],
             namespace: str = "") -> dict[str, Any]:  # fmt: skip
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "roleRef": {"kind": role_kind, "name": role}, "subjects": subjects}


def test_policy_index() -> None:
    reader = {"metadata": {"name": "reader"},
              "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]},
                        {"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]}  # fmt: skip
    local = {"metadata": {"name": "cm", "namespace": "ns"},
             "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["configmaps"]}]}  # fmt: skip
    index = PolicyIndex.build(
        [local],
        [reader],
        [
            _binding("RoleBinding", "a", "ClusterRole", "reader", [{"kind": "ServiceAccount", "name": "op"}], "ns"),
            _binding("RoleBinding", "b", "Role", "cm", [{"kind": "Group", "name": "system:serviceaccounts"}], "ns"),
        ],
        [_binding("ClusterRoleBinding", "c", "ClusterRole", "reader", [{"kind": "User", "name": "alice"}])],
    )
    rules = index.rules_for(SA)
    assert rules.allows(req("GET", "/api/v1/namespaces/ns/pods"))
    assert not rules.allows(req("GET", "/api/v1/namespaces/other/pods"))  # a RoleBinding: its namespace only
    assert not rules.allows(req("GET", "/api/v1/pods"))
    assert not rules.allows(req("GET", "/metrics"))  # a RoleBinding grants no URLs
    assert rules.allows(req("POST", "/api/v1/namespaces/ns/configmaps"))  # by group
    other_sa = UserInfo("system:serviceaccount:other:op", ("system:authenticated",))
    assert not index.rules_for(other_sa).allows(req("GET", "/api/v1/namespaces/ns/pods", user=other_sa))
    alice = UserInfo("alice", ("system:authenticated",))
    assert index.rules_for(alice).allows(req("GET", "/api/v1/pods", user=alice))
    assert index.rules_for(alice).allows(req("GET", "/metrics", user=alice))


def test_forbidden_messages() -> None:
    assert forbidden(req("GET", "/api/v1/namespaces/ns/pods")).message == (
        'pods is forbidden: User "system:serviceaccount:ns:op" cannot list resource "pods" in API group "" '
        'in the namespace "ns"'
    )
    assert forbidden(req("GET", "/api/v1/namespaces/ns/pods/p/log")).message == (
        'pods "p" is forbidden: User "system:serviceaccount:ns:op" cannot get resource "pods/log" in API group "" '
        'in the namespace "ns"'
    )
    assert forbidden(req("GET", "/apis/apps/v1/deployments")).message == (
        'deployments.apps is forbidden: User "system:serviceaccount:ns:op" cannot list resource "deployments" '
        'in API group "apps" at the cluster scope'
    )
    assert forbidden(req("GET", "/metrics")).message == (
        'forbidden: User "system:serviceaccount:ns:op" cannot get path "/metrics"'
    )


def test_validation() -> None:
    roles = RoleStrategy(namespaced=True)
    errs = roles.validate({"rules": [{"verbs": [], "apiGroups": [""], "resources": ["pods"]},
                                     {"verbs": ["get"], "nonResourceURLs": ["/x"]}]})  # fmt: skip
    assert [(e[1], e[2].split(":")[0]) for e in errs] == [
        ("rules[0].verbs", "Required value"), ("rules[1].nonResourceURLs", "Invalid value"),
    ]  # fmt: skip
    assert RoleStrategy(namespaced=False).validate({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}) == []
    bindings = RoleBindingStrategy(namespaced=False)
    good = {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ns"},
                         {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"}]}  # fmt: skip
    assert bindings.validate(good) == []
    bad = {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "view"},
           "subjects": [{"kind": "ServiceAccount", "name": "op"}, {"kind": "Robot", "name": "r"}]}  # fmt: skip
    messages = {e[1]: e[2] for e in bindings.validate(bad)}
    assert messages["roleRef.kind"] == 'Unsupported value: "Role": supported values: "ClusterRole"'
    assert messages["subjects[0].namespace"] == "Required value"
    assert messages["subjects[1].kind"].startswith('Unsupported value: "Robot"')
    changed = {**good, "roleRef": {**good["roleRef"], "name": "edit"}}  # type: ignore[dict-item]
    assert any(e[1] == "roleRef" and "cannot change roleRef" in e[2] for e in bindings.validate_update(changed, good))


def test_aggregation() -> None:
    def role(name: str, labels: dict[str, str], verbs: list[str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": labels},
                "rules": [{"verbs": verbs, "apiGroups": [""], "resources": ["pods"]}]}  # fmt: skip

    target = {"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "1"}}]}}
    roles = [target, role("b", {"x": "1"}, ["get"]), role("a", {"x": "1"}, ["list"]), role("c", {}, ["delete"]),
             role("d", {"x": "1"}, ["get"])]  # fmt: skip
    assert aggregated_rules(target, roles) == [  # name order, no duplicates
        {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
    ]
    assert aggregated_rules(roles[1], roles) is None


def test_bootstrap_reconcile() -> None:
    wanted = next(r for r in cluster_roles() if r["metadata"]["name"] == "system:discovery")
    existing = {**wanted, "metadata": {**wanted["metadata"], "annotations": {AUTOUPDATE: "true"}}, "rules": []}
    fixed = reconcile(existing, wanted)
    assert fixed is not None and fixed["rules"] == wanted["rules"]
    assert reconcile(fixed, wanted) is None
    opted_out = {**existing, "metadata": {**existing["metadata"], "annotations": {AUTOUPDATE: "false"}}}
    assert reconcile(opted_out, wanted) is None


def test_escalation_coverage() -> None:
    from skiff.apiserver.rbac_escalation import _describe, uncovered

    owner = [rule(verbs=["get", "list"], apiGroups=[""], resources=["pods", "*/scale"]),
             rule(verbs=["get"], apiGroups=[""], resources=["configmaps"], resourceNames=["one"]),
             rule(verbs=["get"], nonResourceURLs=["/apis/*"])]  # fmt: skip
    assert uncovered(owner, [rule(verbs=["list"], apiGroups=[""], resources=["pods"])]) == []
    assert uncovered(owner, [rule(verbs=["get"], apiGroups=[""], resources=["deployments/scale"])]) == []
    one = rule(verbs=["get"], apiGroups=[""], resources=["configmaps"], resourceNames=["one"])
    assert uncovered(owner, [one]) == []
    assert uncovered(owner, [rule(verbs=["get"], nonResourceURLs=["/apis/apps"])]) == []
    # a name-limited rule does not cover every name; "*" is only covered by "*"
    missing = uncovered(owner, [rule(verbs=["get"], apiGroups=[""], resources=["configmaps"]),
                                rule(verbs=["*"], apiGroups=[""], resources=["pods"])])  # fmt: skip
    assert [_describe(r) for r in missing] == [
        '{APIGroups:[""], Resources:["configmaps"], Verbs:["get"]}',
        '{APIGroups:[""], Resources:["pods"], Verbs:["*"]}',
    ]
    assert uncovered([rule(verbs=["*"], apiGroups=["*"], resources=["*"])],
                     [rule(verbs=["delete"], apiGroups=["apps"], resources=["deployments"])]) == []  # fmt: skip

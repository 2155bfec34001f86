"""RBAC end to end with real kubectl: a service account gets exactly what its Roles grant.

A service account token (`kubectl create token`) is refused with Kubernetes'
exact message until a Role and RoleBinding allow it, in that namespace only;
a ClusterRole aggregated from labelled roles grants what they hold;
`kubectl auth can-i` (with `--as` impersonation, and `--list`) answers
what the requests would get; the bootstrap policy is served.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.agent_node import wait_for
from tests.e2e.cluster import Server, kubectl_binary


def as_token(cluster: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with nothing but the token (and the CA): no client certificate to fall back on."""
    ca = cluster.data_dir / "tls" / "ca.crt"
    return subprocess.run([kubectl_binary(), "--kubeconfig", "/dev/null", "--server", cluster.url,
                           "--certificate-authority", str(ca), "--token", token, *args],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


@pytest.fixture
def namespaces(server: Server) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    names = (f"rbac-a-{suffix}", f"rbac-b-{suffix}")
    for name in names:
        server.kubectl("create", "namespace", name)
    yield names
    server.kubectl("delete", "namespace", *names, "--wait=false")


def test_service_account_gets_what_its_role_grants(server: Server, namespaces: tuple[str, str]) -> None:
    ns, other = namespaces
    server.kubectl("create", "serviceaccount", "op", "-n", ns)
    token = server.kubectl("create", "token", "op", "-n", ns).stdout.strip()
    user = f"system:serviceaccount:{ns}:op"

    denied = as_token(server, token, "get", "pods", "-n", ns)
    assert denied.returncode != 0
    assert (
        f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list resource "pods" '
        f'in API group "" in the namespace "{ns}"'
    ) in denied.stderr
    named = as_token(server, token, "get", "configmap", "kube-root-ca.crt", "-n", ns)
    assert (
        f'configmaps "kube-root-ca.crt" is forbidden: User "{user}" cannot get resource "configmaps" '
        f'in API group "" in the namespace "{ns}"'
    ) in named.stderr
    cluster_scope = as_token(server, token, "get", "nodes")
    assert f'User "{user}" cannot list resource "nodes" in API group "" at the cluster scope' in cluster_scope.stderr
    # every authenticated user may still review itself and read discovery
    assert as_token(server, token, "auth", "whoami").returncode == 0
    assert as_token(server, token, "auth", "can-i", "list", "pods", "-n", ns).stdout.strip() == "no"

    server.kubectl("create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods,pods/log", "-n", ns)
    server.kubectl("create", "rolebinding", "op-reads", "--role=pod-reader", f"--serviceaccount={ns}:op", "-n", ns)
    listed = wait_for(lambda: (r := as_token(server, token, "get", "pods", "-n", ns)).returncode == 0 and r,
                      timeout=60, what="the RoleBinding to take effect")  # fmt: skip
    assert "Forbidden" not in listed.stderr
    # in that namespace only, and only what the role says
    assert 'in the namespace "' + other + '"' in as_token(server, token, "get", "pods", "-n", other).stderr
    create = as_token(server, token, "create", "configmap", "x", "-n", ns)
    assert f'User "{user}" cannot create resource "configmaps" in API group "" in the namespace "{ns}"' in (
        create.stderr
    )
    assert as_token(server, token, "auth", "can-i", "list", "pods", "-n", ns).stdout.strip() == "yes"
    logs = as_token(server, token, "auth", "can-i", "get", "pods", "--subresource=log", "-n", ns)
    assert logs.stdout.strip() == "yes"
    execs = as_token(server, token, "auth", "can-i", "create", "pods", "--subresource=exec", "-n", ns)
    assert execs.stdout.strip() == "no"

    # the admin asks on the account's behalf (impersonation), and lists what it may do
    can = server.kubectl("auth", "can-i", "list", "pods", "-n", ns, f"--as={user}", check=False)
    assert can.stdout.strip() == "yes"
    cannot = server.kubectl("auth", "can-i", "list", "pods", "-n", other, f"--as={user}", check=False)
    assert cannot.stdout.strip() == "no" and cannot.returncode == 1
    listing = server.kubectl("auth", "can-i", "--list", "-n", ns, f"--as={user}").stdout
    assert any(line.split()[:1] == ["pods"] and "[get list watch]" in line for line in listing.splitlines())
    assert "selfsubjectaccessreviews.authorization.k8s.io" in listing
    # a service account may not impersonate anyone
    impersonating = as_token(server, token, "get", "pods", "-n", ns, "--as=admin")
    assert f'users "admin" is forbidden: User "{user}" cannot impersonate resource "users"' in impersonating.stderr

    # roleRef may not change
    patched = server.kubectl("patch", "rolebinding", "op-reads", "-n", ns, "--type=merge",
                             "-p", '{"roleRef":{"name":"other"}}', check=False)  # fmt: skip
    assert patched.returncode != 0 and "roleRef" in patched.stderr


def test_aggregated_cluster_role(server: Server, namespaces: tuple[str, str]) -> None:
    ns, _ = namespaces
    suffix = ns.rsplit("-", 1)[1]
    aggregated, part = f"monitoring-{suffix}", f"monitoring-endpoints-{suffix}"
    label = f"example.com/aggregate-to-{aggregated}"
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": aggregated},
             "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]}, "rules": []},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": part, "labels": {label: "true"}},
             "rules": [{"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["get", "list"]}]},
        ],
    }  # fmt: skip
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        rules = wait_for(lambda: json.loads(server.kubectl("get", "clusterrole", aggregated, "-o", "json").stdout)
                         .get("rules"), timeout=60, what="the aggregated rules")  # fmt: skip
        assert rules == manifest["items"][1]["rules"]  # type: ignore[index]
        server.kubectl("create", "serviceaccount", "watcher", "-n", ns)
        server.kubectl("create", "clusterrolebinding", aggregated, f"--clusterrole={aggregated}",
                       f"--serviceaccount={ns}:watcher")  # fmt: skip
        user = f"--as=system:serviceaccount:{ns}:watcher"
        wait_for(lambda: server.kubectl("auth", "can-i", "list", "services", "-A", user, check=False)
                 .stdout.strip() == "yes", timeout=60, what="the binding")  # fmt: skip
        assert server.kubectl("auth", "can-i", "delete", "services", "-n", ns, user, check=False).stdout.strip() == "no"
        # the built-in view role aggregates the system:aggregate-to-view rules
        view = json.loads(server.kubectl("get", "clusterrole", "view", "-o", "json").stdout)
        assert any("pods" in r.get("resources", []) for r in view.get("rules", []))
    finally:
        server.kubectl("delete", "clusterrole", aggregated, part, "--ignore-not-found")
        server.kubectl("delete", "clusterrolebinding", aggregated, "--ignore-not-found")


def test_bootstrap_policy_and_admin(server: Server) -> None:
    roles = server.kubectl("get", "clusterroles").stdout
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user",
                 "system:public-info-viewer", "system:node-bootstrapper"):  # fmt: skip
        assert f"\n{name} " in roles
    binding = json.loads(server.kubectl("get", "clusterrolebinding", "cluster-admin", "-o", "json").stdout)
    assert binding["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]
    assert server.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"
    bad = server.kubectl("create", "clusterrolebinding", "bad", "--clusterrole=view", "--user=x", "-o", "json",
                         "--dry-run=client")  # fmt: skip
    body = json.loads(bad.stdout)
    body["roleRef"]["kind"] = "Pod"
    refused = server.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    assert 'roleRef.kind: Unsupported value: "Pod": supported values: "ClusterRole"' in refused.stderr


def test_no_escalation(server: Server, namespaces: tuple[str, str]) -> None:
    ns, _ = namespaces
    server.kubectl("create", "serviceaccount", "lead", "-n", ns)
    server.kubectl("create", "role", "role-admin", "--verb=get,list,create,update,patch,delete",
                   "--resource=roles,rolebindings", "-n", ns)  # fmt: skip
    server.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", ns)
    for role in ("role-admin", "pod-reader"):
        server.kubectl("create", "rolebinding", f"lead-{role}", f"--role={role}", f"--serviceaccount={ns}:lead",
                       "-n", ns)  # fmt: skip
    token = server.kubectl("create", "token", "lead", "-n", ns).stdout.strip()
    user = f"system:serviceaccount:{ns}:lead"
    wait_for(lambda: as_token(server, token, "get", "pods", "-n", ns).returncode == 0, timeout=60, what="the bindings")
    # what it holds it may hand on; more it may not
    assert as_token(server, token, "create", "role", "sub", "--verb=list", "--resource=pods", "-n", ns).returncode == 0
    more = as_token(server, token, "create", "role", "more", "--verb=list,delete", "--resource=pods", "-n", ns)
    assert more.returncode != 0
    assert (
        f'roles.rbac.authorization.k8s.io "more" is forbidden: user "{user}" (groups=["system:serviceaccounts" '
        f'"system:serviceaccounts:{ns}" "system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}'
    ) in more.stderr
    bind_edit = as_token(server, token, "create", "rolebinding", "x", "--clusterrole=edit", "--user=bob", "-n", ns)
    assert "is attempting to grant RBAC permissions not currently held" in bind_edit.stderr
    bind_sub = as_token(server, token, "create", "rolebinding", "y", "--role=sub", "--user=bob", "-n", ns)
    assert bind_sub.returncode == 0, bind_sub.stderr


def test_impersonated_users_and_subject_access_review(server: Server) -> None:
    assert server.kubectl("auth", "can-i", "list", "pods", "--as=bob", check=False).stdout.strip() == "no"
    groups = ("--as=bob", "--as-group=system:masters")
    assert server.kubectl("auth", "can-i", "list", "pods", *groups, check=False).stdout.strip() == "yes"
    whoami = json.loads(server.kubectl("auth", "whoami", "--as=bob", "--as-group=devs", "-o", "json").stdout)
    assert whoami["status"]["userInfo"] == {"username": "bob", "groups": ["devs", "system:authenticated"]}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "bob", "groups": ["system:authenticated"],
                       "nonResourceAttributes": {"path": "/apis/apps/v1", "verb": "get"}}}  # fmt: skip
    answer = json.loads(server.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert answer["status"]["allowed"] is True  # system:discovery
    review["spec"] = {"user": "bob", "resourceAttributes": {"verb": "delete", "resource": "nodes", "name": "n"}}
    answer = json.loads(server.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert answer["status"]["allowed"] is False

"""Namespaces through the real kubectl: deletion empties them, finalizers hold them, each has a `default` account."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.cluster import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REMOVE_FINALIZERS = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])


def eventually(check: Callable[[], Any], what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def get(server: Server, *args: str) -> dict[str, Any] | None:
    proc = server.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def names(server: Server, ns: str, kinds: str) -> list[str]:
    return server.kubectl("get", kinds, "-n", ns, "-o", "name").stdout.split()


def new_namespace(server: Server, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


def held(server: Server, ns: str, kind: str, name: str, extra: dict[str, Any] | None = None) -> None:
    """An object whose deletion a finalizer holds."""
    manifest = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns,
                "finalizers": ["example.com/hold"]}, **(extra or {})}  # fmt: skip
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def conditions(ns_obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (ns_obj.get("status") or {}).get("conditions") or []}


def test_delete_namespace_removes_everything_then_itself(server: Server) -> None:
    ns = new_namespace(server, "ns-full")
    server.kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=a=b")
    server.kubectl("create", "secret", "generic", "token", "-n", ns, "--from-literal=t=x")
    server.kubectl("create", "deployment", "web", "-n", ns, "--image=nginx", "--replicas=2")
    server.kubectl("create", "service", "clusterip", "web", "-n", ns, "--tcp=80:80")
    assert names(server, ns, "deployments") == ["deployment.apps/web"]

    started = time.monotonic()
    out = server.kubectl("delete", "namespace", ns, "--timeout=60s", timeout=90).stdout
    assert out.strip() == f'namespace "{ns}" deleted'
    assert time.monotonic() - started < 30
    assert get(server, "namespace", ns) is None
    for kinds in ("configmaps", "secrets", "deployments", "replicasets", "pods", "services", "serviceaccounts"):
        assert server.kubectl("get", kinds, "-n", ns, "-o", "name").stdout == "", kinds


def test_finalizer_holds_namespace_in_terminating(server: Server) -> None:
    ns = new_namespace(server, "ns-held")
    held(server, ns, "ConfigMap", "held")
    server.kubectl("create", "configmap", "free", "-n", ns)
    out = server.kubectl("delete", "namespace", ns, "--wait=false").stdout
    assert out.strip() == f'namespace "{ns}" deleted'

    def reported() -> dict[str, dict[str, Any]] | None:
        namespace = get(server, "namespace", ns)
        assert namespace is not None, "the namespace went while content remains"
        conds = conditions(namespace)
        remaining = conds.get("NamespaceContentRemaining", {})
        return conds if remaining.get("status") == "True" else None

    conds = eventually(reported, "the namespace to report remaining content")
    assert conds["NamespaceContentRemaining"]["reason"] == "SomeResourcesRemain"
    assert conds["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: configmaps. has 1 resource instances"
    )
    assert conds["NamespaceFinalizersRemaining"]["status"] == "True"
    assert conds["NamespaceFinalizersRemaining"]["reason"] == "SomeFinalizerRemain"
    assert conds["NamespaceFinalizersRemaining"]["message"] == (
        "Some finalizers are remaining: example.com/hold in 1 resource instances"
    )
    for ok in ("NamespaceDeletionDiscoveryFailure", "NamespaceDeletionContentFailure"):
        assert conds[ok]["status"] == "False", conds[ok]
    assert conds["NamespaceDeletionDiscoveryFailure"]["reason"] == "ResourcesDiscovered"

    namespace = get(server, "namespace", ns)
    assert namespace is not None
    assert namespace["status"]["phase"] == "Terminating"
    assert namespace["spec"]["finalizers"] == ["kubernetes"]
    assert names(server, ns, "configmaps") == ["configmap/held"]
    cm = get(server, "configmap", "held", "-n", ns)
    assert cm is not None and cm["metadata"]["deletionTimestamp"]
    described = server.kubectl("describe", "namespace", ns).stdout
    assert "Terminating" in described

    time.sleep(1.0)
    assert get(server, "namespace", ns) is not None, "the namespace went while a finalizer holds its content"
    server.kubectl("patch", "configmap", "held", "-n", ns, "--type=json", "-p", REMOVE_FINALIZERS)
    server.kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=60s", timeout=90)
    assert get(server, "namespace", ns) is None


def test_pods_go_before_the_rest(server: Server) -> None:
    """Ordered namespace deletion: while a pod remains, other content is not deleted yet."""
    ns = new_namespace(server, "ns-order")
    pod = {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    held(server, ns, "Pod", "lingering", pod)
    server.kubectl("create", "configmap", "config", "-n", ns)
    server.kubectl("delete", "namespace", ns, "--wait=false")

    eventually(
        lambda: (p := get(server, "pod", "lingering", "-n", ns)) and p["metadata"].get("deletionTimestamp"),
        "the pod to be deleted",
    )
    time.sleep(1.0)
    config = get(server, "configmap", "config", "-n", ns)
    assert config is not None and not config["metadata"].get("deletionTimestamp")
    # the namespace controller writes its conditions on its own pass, which may come after the pod's deletion
    eventually(
        lambda: (n := get(server, "namespace", ns)) is not None
        and (conditions(n).get("NamespaceContentRemaining") or {}).get("message")
        == "Some resources are remaining: pods. has 1 resource instances",
        "the NamespaceContentRemaining condition naming the pod",
    )

    server.kubectl("patch", "pod", "lingering", "-n", ns, "--type=json", "-p", REMOVE_FINALIZERS)
    server.kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=60s", timeout=90)


def test_new_namespace_gets_a_default_service_account(server: Server) -> None:
    ns = new_namespace(server, "ns-sa")
    first = eventually(lambda: get(server, "serviceaccount", "default", "-n", ns), "the default ServiceAccount")
    # deleted, it comes back (a new object)
    server.kubectl("delete", "serviceaccount", "default", "-n", ns)
    again = eventually(
        lambda: (
            (sa := get(server, "serviceaccount", "default", "-n", ns))
            and sa["metadata"]["uid"] != first["metadata"]["uid"]
            and sa
        ),
        "the default ServiceAccount to be created again",
    )
    assert again["metadata"]["name"] == "default"
    server.kubectl("delete", "namespace", ns, "--wait=false")

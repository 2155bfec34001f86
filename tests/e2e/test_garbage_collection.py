"""Garbage collection through the real kubectl: ownerReferences with background, orphan and foreground deletion.

Owners and dependents are ConfigMaps (no other controller touches them), so
what happens is the garbage collector's doing alone; the last test deletes a
Deployment in the foreground once the Deployment and ReplicaSet controllers
exist.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.cluster import Server, kubectl_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REMOVE_FINALIZERS = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"gc-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


def eventually(check: Callable[[], Any], what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def get(server: Server, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = server.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def owner(server: Server, ns: str, name: str) -> dict[str, Any]:
    server.kubectl("create", "configmap", name, "-n", ns)
    obj = get(server, ns, "configmap", name)
    assert obj is not None
    return obj


def ref(obj: dict[str, Any], *, block: bool = True) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "ConfigMap"), "name": meta["name"],
            "uid": meta["uid"], "blockOwnerDeletion": block}  # fmt: skip


def dependent(server: Server, ns: str, name: str, *refs: dict[str, Any], finalizers: tuple[str, ...] = ()) -> None:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "ownerReferences": list(refs)}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def gone(server: Server, ns: str, *names: str, kind: str = "configmap") -> bool:
    return all(get(server, ns, kind, n) is None for n in names)


def test_background_deletion_collects_dependents(server: Server, ns: str) -> None:
    parent = owner(server, ns, "bg-owner")
    keeper = owner(server, ns, "bg-keeper")
    dependent(server, ns, "bg-a", ref(parent))
    dependent(server, ns, "bg-b", ref(parent, block=False))
    dependent(server, ns, "bg-shared", ref(parent), ref(keeper))

    out = server.kubectl("delete", "configmap", "bg-owner", "-n", ns).stdout
    assert out.strip() == f'configmap "bg-owner" deleted from {ns} namespace'
    eventually(lambda: gone(server, ns, "bg-a", "bg-b"), "the dependents to be collected")

    # a dependent with a live owner stays; only its dangling reference goes
    def shared_refs() -> list[str] | None:
        shared = get(server, ns, "configmap", "bg-shared")
        assert shared is not None, "a dependent with a live owner was deleted"
        names = [r["name"] for r in shared["metadata"].get("ownerReferences") or []]
        return names if names == ["bg-keeper"] else None

    eventually(shared_refs, "the dangling reference to be removed")


def test_dangling_reference_from_the_start(server: Server, ns: str) -> None:
    """An owner that never existed, and one with the right name but another uid, count as absent."""
    real = owner(server, ns, "dangle-real")
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "never-there", "uid": str(uuid.uuid4())}
    impostor = {**ref(real), "uid": str(uuid.uuid4())}
    dependent(server, ns, "dangle-ghost", ghost)
    dependent(server, ns, "dangle-impostor", impostor)
    eventually(lambda: gone(server, ns, "dangle-ghost", "dangle-impostor"), "dangling dependents to be collected")
    assert get(server, ns, "configmap", "dangle-real") is not None


def test_owner_that_cannot_be_verified_is_not_assumed_gone(server: Server, ns: str) -> None:
    """An owner of a kind the server does not serve (yet) is never taken for absent."""
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": str(uuid.uuid4())}
    dependent(server, ns, "unverified", unknown)
    time.sleep(2.0)
    kept = get(server, ns, "configmap", "unverified")
    assert kept is not None and kept["metadata"]["ownerReferences"][0]["kind"] == "Widget"


def test_orphan_keeps_dependents_without_the_reference(server: Server, ns: str) -> None:
    parent = owner(server, ns, "orphan-owner")
    other = owner(server, ns, "orphan-other")
    dependent(server, ns, "orphan-a", ref(parent))
    dependent(server, ns, "orphan-b", ref(parent), ref(other))

    out = server.kubectl("delete", "configmap", "orphan-owner", "-n", ns, "--cascade=orphan", timeout=30).stdout
    assert out.strip() == f'configmap "orphan-owner" deleted from {ns} namespace'
    assert get(server, ns, "configmap", "orphan-owner") is None
    a = get(server, ns, "configmap", "orphan-a")
    b = get(server, ns, "configmap", "orphan-b")
    assert a is not None and "ownerReferences" not in a["metadata"]
    assert b is not None and [r["name"] for r in b["metadata"]["ownerReferences"]] == ["orphan-other"]
    time.sleep(0.5)  # and they stay
    assert not gone(server, ns, "orphan-a") and not gone(server, ns, "orphan-b")


def test_foreground_waits_for_blocking_dependents(server: Server, ns: str) -> None:
    parent = owner(server, ns, "fg-owner")
    dependent(server, ns, "fg-blocker", ref(parent), finalizers=("example.com/hold",))
    dependent(server, ns, "fg-loose", ref(parent, block=False))
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.data_dir / "home")}
    deleter = subprocess.Popen(
        [kubectl_binary(), "delete", "configmap", "fg-owner", "-n", ns, "--cascade=foreground", "--timeout=60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        # the owner stays, marked, while its dependents are deleted
        eventually(lambda: gone(server, ns, "fg-loose"), "the non-blocking dependent to be deleted")
        blocker = eventually(
            lambda: (b := get(server, ns, "configmap", "fg-blocker")) and b["metadata"].get("deletionTimestamp") and b,
            "the blocking dependent to be deleted",
        )
        assert blocker["metadata"]["finalizers"] == ["example.com/hold"]
        held = get(server, ns, "configmap", "fg-owner")
        assert held is not None, "the owner went while a blocking dependent remains"
        assert held["metadata"]["deletionTimestamp"]
        assert held["metadata"]["finalizers"] == ["foregroundDeletion"]
        time.sleep(0.5)
        assert get(server, ns, "configmap", "fg-owner") is not None
        assert deleter.poll() is None, "kubectl delete --cascade=foreground returned while the owner remains"

        server.kubectl("patch", "configmap", "fg-blocker", "-n", ns, "--type=json", "-p", REMOVE_FINALIZERS)
        out, err = deleter.communicate(timeout=90)
    finally:
        deleter.kill()
    assert deleter.returncode == 0, err
    assert out.strip() == f'configmap "fg-owner" deleted from {ns} namespace'
    assert gone(server, ns, "fg-owner", "fg-blocker", "fg-loose")


def test_cross_namespace_owner_is_invalid(server: Server, ns: str) -> None:
    other_ns = f"{ns}-other"
    server.kubectl("create", "namespace", other_ns)
    parent = owner(server, other_ns, "xns-owner")
    dependent(server, ns, "xns-dependent", ref(parent))
    eventually(lambda: gone(server, ns, "xns-dependent"), "the dependent with a cross-namespace owner to go")
    assert get(server, other_ns, "configmap", "xns-owner") is not None

    def warning() -> list[dict[str, Any]]:
        out = server.kubectl("get", "events", "-n", ns, "--field-selector=reason=OwnerRefInvalidNamespace",
                             "-o", "json").stdout  # fmt: skip
        return [e for e in json.loads(out)["items"] if e["involvedObject"]["name"] == "xns-dependent"]

    event = eventually(warning, "an OwnerRefInvalidNamespace event")[0]
    assert event["type"] == "Warning"
    assert event["source"]["component"] == "garbage-collector-controller"
    uid = parent["metadata"]["uid"]
    assert event["message"] == (
        f'ownerRef [v1/ConfigMap, namespace: {ns}, name: xns-owner, uid: {uid}] does not exist in namespace "{ns}"'
    )
    server.kubectl("delete", "namespace", other_ns, "--wait=false")


@pytest.mark.skipif(
    importlib.util.find_spec("skiff.controllers.deployment") is None,
    reason="needs the Deployment controller",
)
def test_foreground_deletion_of_a_deployment_removes_replicasets_and_pods(server: Server, ns: str) -> None:
    server.kubectl("create", "deployment", "fg-web", "-n", ns, "--image=nginx", "--replicas=2")

    def pods() -> list[dict[str, Any]]:
        out = server.kubectl("get", "pods", "-n", ns, "-l", "app=fg-web", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def replicasets() -> list[dict[str, Any]]:
        out = server.kubectl("get", "rs", "-n", ns, "-l", "app=fg-web", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    eventually(lambda: len(pods()) == 2 and replicasets(), "the deployment's ReplicaSet and pods", within=60)
    out = server.kubectl("delete", "deployment", "fg-web", "-n", ns, "--cascade=foreground", timeout=90).stdout
    assert out.strip() == f'deployment.apps "fg-web" deleted from {ns} namespace'
    # kubectl waited for the Deployment itself: by then what it owned is gone (pods may still be terminating)
    assert replicasets() == []
    assert all(p["metadata"].get("deletionTimestamp") for p in pods())
    eventually(lambda: pods() == [], "the pods to be gone", within=60)

"""The real kubectl against skiff: `delete`, with and without waiting, and finalizers holding it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Server, kubectl_binary

pytestmark = pytest.mark.e2e

MANIFESTS = Path(__file__).parent / "manifests"
REMOVE_FINALIZERS = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"kc-delete-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


def get_json(server: Server, *args: str) -> Any:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def assert_gone(server: Server, ns: str, kind: str, name: str, plural: str) -> None:
    proc = server.kubectl("get", kind, name, "-n", ns, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f'Error from server (NotFound): {plural} "{name}" not found'


def held_configmap(server: Server, ns: str, name: str) -> None:
    manifest = (MANIFESTS / "held-configmap.yaml").read_text().replace("name: held", f"name: {name}")
    server.kubectl("apply", "-n", ns, "-f", "-", input=manifest)


def test_delete(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "doomed", "-n", ns)
    server.kubectl("create", "deployment", "doomed", "-n", ns, "--image=nginx")
    out = server.kubectl("delete", "configmap", "doomed", "-n", ns).stdout
    assert out.strip() == f'configmap "doomed" deleted from {ns} namespace'
    assert_gone(server, ns, "configmap", "doomed", "configmaps")
    out = server.kubectl("delete", "deploy/doomed", "-n", ns).stdout
    assert out.strip() == f'deployment.apps "doomed" deleted from {ns} namespace'
    assert_gone(server, ns, "deployment", "doomed", "deployments.apps")

    proc = server.kubectl("delete", "configmap", "doomed", "-n", ns, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == 'Error from server (NotFound): configmaps "doomed" not found'
    proc = server.kubectl("delete", "configmap", "doomed", "-n", ns, "--ignore-not-found")
    assert proc.stdout == ""


def test_delete_by_selector_and_file(server: Server, ns: str) -> None:
    for name in ("batch-a", "batch-b", "keep"):
        server.kubectl("create", "configmap", name, "-n", ns)
    server.kubectl("label", "cm", "batch-a", "batch-b", "-n", ns, "batch=yes")
    out = server.kubectl("delete", "cm", "-n", ns, "-l", "batch=yes").stdout
    assert sorted(out.splitlines()) == [
        f'configmap "batch-a" deleted from {ns} namespace',
        f'configmap "batch-b" deleted from {ns} namespace',
    ]
    assert server.kubectl("get", "cm", "-n", ns, "-l", "batch", "-o", "name").stdout == ""
    assert server.kubectl("get", "cm", "keep", "-n", ns, "-o", "name").stdout.strip() == "configmap/keep"

    web = str(MANIFESTS / "web-v1.yaml")
    server.kubectl("apply", "-n", ns, "-f", web)
    out = server.kubectl("delete", "-n", ns, "-f", web).stdout
    assert out.splitlines() == [
        f'deployment.apps "web" deleted from {ns} namespace',
        f'service "web" deleted from {ns} namespace',
    ]
    assert_gone(server, ns, "service", "web", "services")


def test_finalizer_holds_deletion(server: Server, ns: str) -> None:
    held_configmap(server, ns, "held")
    started = time.monotonic()
    out = server.kubectl("delete", "configmap", "held", "-n", ns, "--wait=false").stdout
    assert out.strip() == f'configmap "held" deleted from {ns} namespace'
    assert time.monotonic() - started < 10

    # still there, marked for deletion
    cm = get_json(server, "configmap", "held", "-n", ns)
    assert cm["metadata"]["deletionTimestamp"]
    assert cm["metadata"]["finalizers"] == ["example.com/hold"]
    assert cm["metadata"]["deletionGracePeriodSeconds"] == 0
    assert server.kubectl("get", "cm", "held", "-n", ns, "--no-headers").stdout.split()[0] == "held"

    # a marked object takes no new finalizers, but other changes are fine
    proc = server.kubectl(
        "patch", "cm", "held", "-n", ns, "--type=merge", "-p",
        '{"metadata":{"finalizers":["example.com/hold","example.com/another"]}}', check=False,
    )
    assert proc.returncode == 1
    assert "no new finalizers can be added if the object is being deleted" in proc.stderr
    server.kubectl("label", "cm", "held", "-n", ns, "still=here")

    # deleting again is accepted and changes nothing
    server.kubectl("delete", "configmap", "held", "-n", ns, "--wait=false")
    again = get_json(server, "configmap", "held", "-n", ns)
    assert again["metadata"]["deletionTimestamp"] == cm["metadata"]["deletionTimestamp"]

    out = server.kubectl("patch", "cm", "held", "-n", ns, "--type=json", "-p", REMOVE_FINALIZERS).stdout
    assert out.strip() == "configmap/held patched"
    assert_gone(server, ns, "configmap", "held", "configmaps")


def test_delete_waits_for_finalizers(server: Server, ns: str) -> None:
    held_configmap(server, ns, "held-wait")
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.data_dir / "home")}
    deleter = subprocess.Popen(
        [kubectl_binary(), "delete", "configmap", "held-wait", "-n", ns, "--timeout=60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        # kubectl waits (default --wait=true) until the object is really gone
        deadline = time.monotonic() + 60
        while not get_json(server, "cm", "held-wait", "-n", ns)["metadata"].get("deletionTimestamp"):
            assert time.monotonic() < deadline, "the delete never reached the server"
            time.sleep(0.1)
        time.sleep(1.0)
        assert deleter.poll() is None, "kubectl delete returned while a finalizer still holds the object"

        server.kubectl("patch", "cm", "held-wait", "-n", ns, "--type=json", "-p", REMOVE_FINALIZERS)
        out, err = deleter.communicate(timeout=90)
    finally:
        deleter.kill()
    assert deleter.returncode == 0, err
    assert out.strip() == f'configmap "held-wait" deleted from {ns} namespace'
    assert_gone(server, ns, "configmap", "held-wait", "configmaps")


def test_delete_wait_times_out_while_held(server: Server, ns: str) -> None:
    held_configmap(server, ns, "held-timeout")
    proc = server.kubectl("delete", "configmap", "held-timeout", "-n", ns, "--timeout=1s", check=False)
    assert proc.returncode == 1
    assert "timed out waiting for the condition" in proc.stderr
    server.kubectl("patch", "cm", "held-timeout", "-n", ns, "--type=json", "-p", REMOVE_FINALIZERS)
    assert_gone(server, ns, "configmap", "held-timeout", "configmaps")


def test_delete_dry_run_keeps_object(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "kept", "-n", ns)
    out = server.kubectl("delete", "configmap", "kept", "-n", ns, "--dry-run=server").stdout
    assert out.strip() == f'configmap "kept" deleted from {ns} namespace (server dry run)'
    assert "deletionTimestamp" not in get_json(server, "configmap", "kept", "-n", ns)["metadata"]


def test_namespace_terminating(server: Server) -> None:
    """A deleted namespace stays Terminating while content held by a finalizer remains (the namespace
    controller empties it and waits); it takes no new content, and finalizing it by hand (the usual
    "stuck namespace" fix, PUT .../finalize) removes it at once."""
    name = f"kc-doomed-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    held_configmap(server, name, "inside")
    out = server.kubectl("delete", "namespace", name, "--wait=false").stdout
    assert out.strip() == f'namespace "{name}" deleted'
    namespace = get_json(server, "namespace", name)
    assert namespace["status"]["phase"] == "Terminating"
    assert namespace["metadata"]["deletionTimestamp"]
    assert namespace["spec"]["finalizers"] == ["kubernetes"]
    assert server.kubectl("get", "ns", name, "--no-headers").stdout.split()[1] == "Terminating"

    proc = server.kubectl("create", "configmap", "late", "-n", name, check=False)
    assert proc.returncode == 1
    assert (
        f'configmaps "late" is forbidden: unable to create new content in namespace {name} because it is being '
        "terminated"
    ) in proc.stderr
    # existing content can still be changed
    server.kubectl("label", "configmap", "inside", "-n", name, "x=y")

    namespace = get_json(server, "namespace", name)
    namespace["spec"]["finalizers"] = []
    server.kubectl("replace", "--raw", f"/api/v1/namespaces/{name}/finalize", "-f", "-", input=json.dumps(namespace))
    proc = server.kubectl("get", "namespace", name, check=False)
    assert proc.returncode == 1
    assert f'namespaces "{name}" not found' in proc.stderr
    # what the finalizer held is left behind, as in Kubernetes; release it
    server.kubectl("patch", "cm", "inside", "-n", name, "--type=json", "-p", REMOVE_FINALIZERS)
    left = server.kubectl("get", "cm", "-A", "--field-selector", f"metadata.namespace={name}", "-o", "name")
    assert left.stdout == ""

"""The real kubectl against skiff: `apply`, `replace` and what bad input looks like to a user.

Every test works in this module's own namespace on the shared session server.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Server

pytestmark = pytest.mark.e2e

MANIFESTS = Path(__file__).parent / "manifests"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"kc-apply-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


def deployment_named(name: str) -> str:
    """The Deployment of web-v1.yaml (without its Service), renamed."""
    deployment = (MANIFESTS / "web-v1.yaml").read_text().split("---")[0]
    return deployment.replace("  name: web\n", f"  name: {name}\n", 1)


def get_json(server: Server, *args: str) -> Any:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def settled(server: Server, *args: str) -> Any:
    """The object once the controllers stopped writing to it: its controller has observed its generation and
    its resourceVersion stayed still for a second (a loaded machine can pause a controller for longer than
    that: the observed generation keeps an early pause from passing for quiet)."""
    last = get_json(server, *args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = get_json(server, *args)
        observed = (now.get("status") or {}).get("observedGeneration") == now["metadata"].get("generation")
        if observed and now["metadata"]["resourceVersion"] == last["metadata"]["resourceVersion"]:
            return now
        last = now
    raise AssertionError(f"{args} still changing after 60 s")


def test_apply_creates_updates_and_reports_unchanged(server: Server, ns: str) -> None:
    v1, v2 = str(MANIFESTS / "web-v1.yaml"), str(MANIFESTS / "web-v2.yaml")

    out = server.kubectl("apply", "-n", ns, "-f", v1).stdout
    assert "deployment.apps/web created" in out
    assert "service/web created" in out

    deploy = get_json(server, "-n", ns, "deployment", "web")
    assert deploy["spec"]["replicas"] == 2
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.25"), ("sidecar", "busybox:1.36")]
    applied = json.loads(deploy["metadata"]["annotations"][LAST_APPLIED])
    assert applied["spec"]["replicas"] == 2
    assert applied["metadata"]["namespace"] == ns
    svc = get_json(server, "-n", ns, "service", "web")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 80)]
    assert LAST_APPLIED in svc["metadata"]["annotations"]

    # the same file again changes nothing (once the Deployment controller has written its status)
    deploy = settled(server, "-n", ns, "deployment", "web")
    out = server.kubectl("apply", "-n", ns, "-f", v1).stdout
    assert "deployment.apps/web unchanged" in out
    assert "service/web unchanged" in out
    assert get_json(server, "-n", ns, "deployment", "web")["metadata"]["resourceVersion"] == (
        deploy["metadata"]["resourceVersion"]
    )

    out = server.kubectl("apply", "-n", ns, "-f", v2).stdout
    assert "deployment.apps/web configured" in out
    assert "service/web configured" in out

    deploy = get_json(server, "-n", ns, "deployment", "web")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["metadata"]["labels"] == {"app": "web", "tier": "back"}
    assert deploy["metadata"]["generation"] == 2
    containers = deploy["spec"]["template"]["spec"]["containers"]
    # the sidecar, gone from the file, is gone from the object
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.27")]
    applied = json.loads(deploy["metadata"]["annotations"][LAST_APPLIED])
    assert applied["spec"]["replicas"] == 3
    assert [c["name"] for c in applied["spec"]["template"]["spec"]["containers"]] == ["web"]

    svc = get_json(server, "-n", ns, "service", "web")
    assert svc["metadata"]["labels"] == {"app": "web", "version": "v2"}
    ports = [(p["name"], p["port"], p["targetPort"], p["protocol"]) for p in svc["spec"]["ports"]]
    assert ports == [("http", 8080, 80, "TCP"), ("https", 443, 443, "TCP")]

    out = server.kubectl("apply", "-n", ns, "-f", v2).stdout
    assert "deployment.apps/web unchanged" in out
    assert "service/web unchanged" in out

    # what `get` shows follows the second apply
    wide = server.kubectl("get", "-n", ns, "deployment", "web", "-o", "wide").stdout
    assert "nginx:1.27" in wide
    assert "sidecar" not in wide
    assert "8080/TCP,443/TCP" in server.kubectl("get", "-n", ns, "svc", "web").stdout


def test_apply_server_side(server: Server, ns: str) -> None:
    manifest = deployment_named("ssa")
    out = server.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=manifest).stdout
    assert "deployment.apps/ssa serverside-applied" in out
    deploy = get_json(server, "-n", ns, "deployment", "ssa")
    assert deploy["spec"]["replicas"] == 2
    assert LAST_APPLIED not in (deploy["metadata"].get("annotations") or {})
    scaled = manifest.replace("replicas: 2", "replicas: 4")
    out = server.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=scaled).stdout
    assert "deployment.apps/ssa serverside-applied" in out
    assert get_json(server, "-n", ns, "deployment", "ssa")["spec"]["replicas"] == 4


def test_unknown_field_is_rejected_and_nothing_created(server: Server, ns: str) -> None:
    proc = server.kubectl("apply", "-n", ns, "-f", str(MANIFESTS / "unknown-field.yaml"), check=False)
    assert proc.returncode != 0
    assert "Error from server (BadRequest)" in proc.stderr
    assert 'Deployment in version "v1" cannot be handled as a Deployment' in proc.stderr
    assert 'unknown field "spec.replicasx"' in proc.stderr
    missing = server.kubectl("get", "-n", ns, "deployment", "typo", check=False)
    assert missing.returncode == 1
    assert 'deployments.apps "typo" not found' in missing.stderr

    # --validate=false drops the unknown field and creates the object
    out = server.kubectl("apply", "--validate=false", "-n", ns, "-f", str(MANIFESTS / "unknown-field.yaml")).stdout
    assert "deployment.apps/typo created" in out
    deploy = get_json(server, "-n", ns, "deployment", "typo")
    assert "replicasx" not in deploy["spec"]
    assert deploy["spec"]["replicas"] == 1  # defaulted


def test_unknown_field_on_update_is_rejected(server: Server, ns: str) -> None:
    manifest = deployment_named("upd")
    server.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    proc = server.kubectl("apply", "-n", ns, "-f", "-", input=manifest.replace("replicas: 2", "replicasx: 5"),
                          check=False)
    assert proc.returncode != 0
    assert 'strict decoding error: unknown field "spec.replicasx"' in proc.stderr
    assert get_json(server, "-n", ns, "deployment", "upd")["spec"]["replicas"] == 2


def test_malformed_yaml(server: Server, ns: str) -> None:
    proc = server.kubectl("apply", "-n", ns, "-f", str(MANIFESTS / "malformed.yaml"), check=False)
    assert proc.returncode != 0
    assert "error converting YAML to JSON" in proc.stderr
    assert server.kubectl("get", "-n", ns, "cm", "malformed", check=False).returncode == 1


def test_kind_of_no_installed_crd(server: Server, ns: str) -> None:
    """kubectl looks a kind missing from OpenAPI v3 up in v2, then reports the missing CRD."""
    manifest = "apiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: g\n"
    proc = server.kubectl("apply", "-n", ns, "-f", "-", input=manifest, check=False)
    assert proc.returncode == 1
    assert 'no matches for kind "Gizmo" in version "example.com/v1"' in proc.stderr
    assert "ensure CRDs are installed first" in proc.stderr
    doc = server.raw("GET", "/openapi/v2")[1]
    assert doc["swagger"] == "2.0" and doc["info"]["title"] == "Kubernetes"


def test_missing_namespace_is_not_found(server: Server) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: orphan\ndata:\n  a: '1'\n"
    proc = server.kubectl("apply", "-n", "no-such-ns", "-f", "-", input=manifest, check=False)
    assert proc.returncode == 1
    assert 'Error from server (NotFound): error when creating "STDIN": namespaces "no-such-ns" not found' in (
        proc.stderr
    )
    proc = server.kubectl("create", "configmap", "orphan", "-n", "no-such-ns", "--from-literal=a=1", check=False)
    assert proc.returncode == 1
    assert 'namespaces "no-such-ns" not found' in proc.stderr
    # the namespace is checked (admission) before the object is validated
    proc = server.kubectl("create", "configmap", "Bad_Name", "-n", "no-such-ns", check=False)
    assert proc.returncode == 1
    assert 'namespaces "no-such-ns" not found' in proc.stderr


def test_generate_name(server: Server, ns: str) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\ndata:\n  a: '1'\n"
    names = set()
    for _ in range(2):
        out = server.kubectl("create", "-n", ns, "-f", "-", input=manifest).stdout.strip()
        assert out.startswith("configmap/gen-")
        assert out.endswith(" created")
        names.add(out.split()[0].removeprefix("configmap/"))
    assert len(names) == 2
    for name in names:
        assert len(name) == len("gen-") + 5
        assert get_json(server, "configmap", name, "-n", ns)["metadata"]["generateName"] == "gen-"


def test_invalid_name(server: Server, ns: str) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n"
    proc = server.kubectl("apply", "-n", ns, "-f", "-", input=manifest, check=False)
    assert proc.returncode == 1
    assert (
        'The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 '
        "subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with "
        "an alphanumeric character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ) in proc.stderr
    proc = server.kubectl("create", "deployment", "Bad_Name", "--image=nginx", "-n", ns, check=False)
    assert proc.returncode == 1
    assert 'Deployment.apps "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in proc.stderr


def test_replace_with_stale_resource_version_conflicts(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "stale", "-n", ns, "--from-literal=a=1")
    old = server.kubectl("get", "configmap", "stale", "-n", ns, "-o", "yaml").stdout
    assert "resourceVersion:" in old
    server.kubectl("label", "configmap", "stale", "-n", ns, "moved=yes")
    proc = server.kubectl("replace", "-f", "-", input=old.replace('a: "1"', 'a: "2"'), check=False)
    assert proc.returncode == 1
    assert (
        'Error from server (Conflict): error when replacing "STDIN": Operation cannot be fulfilled on '
        'configmaps "stale": the object has been modified; please apply your changes to the latest version '
        "and try again"
    ) in proc.stderr
    assert get_json(server, "configmap", "stale", "-n", ns)["data"] == {"a": "1"}

    # replace from the current version succeeds
    current = server.kubectl("get", "configmap", "stale", "-n", ns, "-o", "yaml").stdout
    out = server.kubectl("replace", "-f", "-", input=current.replace('a: "1"', 'a: "2"')).stdout
    assert "configmap/stale replaced" in out
    assert get_json(server, "configmap", "stale", "-n", ns)["data"] == {"a": "2"}


def test_create_existing_is_already_exists(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "twice", "-n", ns)
    proc = server.kubectl("create", "configmap", "twice", "-n", ns, check=False)
    assert proc.returncode == 1
    assert 'configmaps "twice" already exists' in proc.stderr

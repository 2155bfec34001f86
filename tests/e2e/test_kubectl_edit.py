"""The real kubectl against skiff: changing live objects with `label`, `annotate`, `patch`,
`scale`, `set image` and waiting on them with `wait`."""

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


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"kc-edit-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


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


def deployment(server: Server, ns: str, name: str) -> Any:
    """web-v1.yaml's two-container Deployment, applied under `name`; returns it as JSON."""
    manifest = (MANIFESTS / "web-v1.yaml").read_text().split("---")[0]
    server.kubectl("apply", "-n", ns, "-f", "-", input=manifest.replace("  name: web\n", f"  name: {name}\n", 1))
    return get_json(server, "deployment", name, "-n", ns)


# ----------------------------------------------------------------------------- label / annotate


def test_label(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "labelled", "-n", ns)
    assert server.kubectl("label", "cm", "labelled", "-n", ns, "env=prod", "team=a").stdout.strip() == (
        "configmap/labelled labeled"
    )
    assert get_json(server, "cm", "labelled", "-n", ns)["metadata"]["labels"] == {"env": "prod", "team": "a"}

    proc = server.kubectl("label", "cm", "labelled", "-n", ns, "env=dev", check=False)
    assert proc.returncode == 1
    assert "error: 'env' already has a value (prod), and --overwrite is false" in proc.stderr
    assert get_json(server, "cm", "labelled", "-n", ns)["metadata"]["labels"]["env"] == "prod"

    server.kubectl("label", "cm", "labelled", "-n", ns, "env=dev", "--overwrite")
    assert get_json(server, "cm", "labelled", "-n", ns)["metadata"]["labels"] == {"env": "dev", "team": "a"}

    assert server.kubectl("label", "cm", "labelled", "-n", ns, "env-").stdout.strip() == (
        "configmap/labelled unlabeled"
    )
    assert get_json(server, "cm", "labelled", "-n", ns)["metadata"]["labels"] == {"team": "a"}
    server.kubectl("label", "cm", "labelled", "-n", ns, "team-")
    # the last label gone, no empty map is left behind (Go's omitempty)
    assert "labels" not in get_json(server, "cm", "labelled", "-n", ns)["metadata"]

    proc = server.kubectl("label", "cm", "labelled", "-n", ns, "bad key=x", check=False)
    assert proc.returncode != 0


def test_label_invalid_value_is_rejected_by_server(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "badlabel", "-n", ns)
    # kubectl label checks values itself; a patch gets past it to the server's validation
    value = "x" * 64
    patch = json.dumps({"metadata": {"labels": {"long": value}}})
    proc = server.kubectl("patch", "cm", "badlabel", "-n", ns, "--type=merge", "-p", patch, check=False)
    assert proc.returncode == 1
    assert (
        f'The ConfigMap "badlabel" is invalid: metadata.labels: Invalid value: "{value}": '
        "must be no more than 63 bytes"
    ) in proc.stderr
    assert "labels" not in get_json(server, "cm", "badlabel", "-n", ns)["metadata"]


def test_annotate(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "annotated", "-n", ns)
    out = server.kubectl("annotate", "cm", "annotated", "-n", ns, "note=hello", "owner=team-a").stdout
    assert out.strip() == "configmap/annotated annotated"
    annotations = get_json(server, "cm", "annotated", "-n", ns)["metadata"]["annotations"]
    assert annotations == {"note": "hello", "owner": "team-a"}

    proc = server.kubectl("annotate", "cm", "annotated", "-n", ns, "note=bye", check=False)
    assert proc.returncode == 1
    assert "--overwrite is false but found the following declared annotation(s): " in proc.stderr
    assert "'note' already has a value (hello)" in proc.stderr

    server.kubectl("annotate", "cm", "annotated", "-n", ns, "note=bye", "--overwrite")
    assert get_json(server, "cm", "annotated", "-n", ns)["metadata"]["annotations"]["note"] == "bye"

    server.kubectl("annotate", "cm", "annotated", "-n", ns, "note-")
    assert get_json(server, "cm", "annotated", "-n", ns)["metadata"]["annotations"] == {"owner": "team-a"}
    server.kubectl("annotate", "cm", "annotated", "-n", ns, "owner-")
    assert "annotations" not in get_json(server, "cm", "annotated", "-n", ns)["metadata"]


def test_label_many_by_selector(server: Server, ns: str) -> None:
    for name in ("sel-a", "sel-b"):
        server.kubectl("create", "configmap", name, "-n", ns)
        server.kubectl("label", "cm", name, "-n", ns, "group=sel")
    out = server.kubectl("label", "cm", "-n", ns, "-l", "group=sel", "stage=two").stdout
    assert sorted(out.splitlines()) == ["configmap/sel-a labeled", "configmap/sel-b labeled"]
    out = server.kubectl("get", "cm", "-n", ns, "-l", "stage=two", "-o", "name").stdout
    assert sorted(out.split()) == ["configmap/sel-a", "configmap/sel-b"]


# ----------------------------------------------------------------------------------------- patch


def test_patch_merge(server: Server, ns: str) -> None:
    deployment(server, ns, "merge")
    out = server.kubectl(
        "patch", "deployment", "merge", "-n", ns, "--type=merge",
        "-p", '{"metadata":{"labels":{"patched":"yes","tier":null}},"spec":{"replicas":4}}',
    ).stdout
    assert out.strip() == "deployment.apps/merge patched"
    deploy = get_json(server, "deployment", "merge", "-n", ns)
    assert deploy["metadata"]["labels"] == {"app": "web", "patched": "yes"}
    assert deploy["spec"]["replicas"] == 4
    assert deploy["metadata"]["generation"] == 2

    # a merge patch replaces lists whole
    server.kubectl(
        "patch", "deployment", "merge", "-n", ns, "--type=merge",
        "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"only","image":"alpine:3"}]}}}}',
    )
    containers = get_json(server, "deployment", "merge", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("only", "alpine:3")]

    settled(server, "deployment", "merge", "-n", ns)  # kubectl compares with what it read: no status write between
    out = server.kubectl("patch", "deployment", "merge", "-n", ns, "--type=merge", "-p", '{"spec":{"replicas":4}}')
    assert out.stdout.strip() == "deployment.apps/merge patched (no change)"


def test_patch_json(server: Server, ns: str) -> None:
    deployment(server, ns, "jsonpatch")
    ops = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.26"},
        {"op": "add", "path": "/metadata/labels/added", "value": "by-json-patch"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "test", "path": "/spec/replicas", "value": 2},
    ]
    out = server.kubectl("patch", "deploy", "jsonpatch", "-n", ns, "--type=json", "-p", json.dumps(ops)).stdout
    assert out.strip() == "deployment.apps/jsonpatch patched"
    deploy = get_json(server, "deploy", "jsonpatch", "-n", ns)
    assert deploy["metadata"]["labels"]["added"] == "by-json-patch"
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.26")]

    failing = json.dumps([{"op": "test", "path": "/spec/replicas", "value": 99}])
    proc = server.kubectl("patch", "deploy", "jsonpatch", "-n", ns, "--type=json", "-p", failing, check=False)
    assert proc.returncode == 1
    missing = json.dumps([{"op": "replace", "path": "/spec/nothing/here", "value": 1}])
    proc = server.kubectl("patch", "deploy", "jsonpatch", "-n", ns, "--type=json", "-p", missing, check=False)
    assert proc.returncode == 1


def test_patch_strategic_merges_containers_by_name(server: Server, ns: str) -> None:
    before = deployment(server, ns, "strategic")
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "env": [{"name": "MODE", "value": "debug"}]},
    ]}}}}
    out = server.kubectl("patch", "deploy", "strategic", "-n", ns, "--type=strategic", "-p", json.dumps(patch)).stdout
    assert out.strip() == "deployment.apps/strategic patched"
    containers = get_json(server, "deploy", "strategic", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar"]
    assert containers[0] == before["spec"]["template"]["spec"]["containers"][0]  # untouched
    assert containers[1]["env"] == [{"name": "MODE", "value": "debug"}]
    assert containers[1]["image"] == "busybox:1.36"

    # strategic is kubectl's default type; env merges by name too
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "env": [{"name": "LEVEL", "value": "3"}]},
    ]}}}}
    server.kubectl("patch", "deploy", "strategic", "-n", ns, "-p", json.dumps(patch))
    containers = get_json(server, "deploy", "strategic", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert containers[1]["env"] == [{"name": "LEVEL", "value": "3"}, {"name": "MODE", "value": "debug"}]

    # $patch: delete removes one container by name
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    server.kubectl("patch", "deploy", "strategic", "-n", ns, "-p", json.dumps(patch))
    containers = get_json(server, "deploy", "strategic", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web"]


def test_patch_from_file_and_unknown_field(server: Server, ns: str, tmp_path: Path) -> None:
    server.kubectl("create", "configmap", "patched-from-file", "-n", ns, "--from-literal=a=1")
    patch_file = tmp_path / "patch.yaml"
    patch_file.write_text("data:\n  b: '2'\n")
    server.kubectl("patch", "cm", "patched-from-file", "-n", ns, "--patch-file", str(patch_file))
    assert get_json(server, "cm", "patched-from-file", "-n", ns)["data"] == {"a": "1", "b": "2"}

    proc = server.kubectl("patch", "deploy", "nope", "-n", ns, "-p", '{"spec":{"replicas":1}}', check=False)
    assert proc.returncode == 1
    assert 'Error from server (NotFound): deployments.apps "nope" not found' in proc.stderr


def test_edit(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "edited", "-n", ns, "--from-literal=color=red")
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.data_dir / "home")}

    def edit(sed: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), "edit", "configmap", "edited", "-n", ns],
            capture_output=True, text=True, timeout=60, env={**env, "KUBE_EDITOR": f"sed -i -e '{sed}'"},
        )

    proc = edit("s/color: red/color: green/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "configmap/edited edited"
    assert get_json(server, "configmap", "edited", "-n", ns)["data"] == {"color": "green"}

    proc = edit("s/^  name: edited/  name: renamed/")
    assert proc.returncode == 1
    assert "At least one of apiVersion, kind and name was changed" in proc.stderr

    proc = edit("1i bogus: 1")
    assert proc.returncode == 1
    assert 'unknown field "bogus"' in proc.stderr
    assert get_json(server, "configmap", "edited", "-n", ns)["data"] == {"color": "green"}


# ------------------------------------------------------------------------------ scale / set / wait


def test_scale(server: Server, ns: str) -> None:
    deployment(server, ns, "scaled")
    out = server.kubectl("scale", "deployment", "scaled", "-n", ns, "--replicas=5").stdout
    assert out.strip() == "deployment.apps/scaled scaled"
    deploy = get_json(server, "deployment", "scaled", "-n", ns)
    assert deploy["spec"]["replicas"] == 5
    assert server.kubectl("get", "deploy", "scaled", "-n", ns, "--no-headers").stdout.split()[1] == "0/5"

    # kubectl checks --current-replicas against the live object
    proc = server.kubectl("scale", "deploy", "scaled", "-n", ns, "--current-replicas=2", "--replicas=1", check=False)
    assert proc.returncode == 1
    assert "Expected replicas to be 2, was 5" in proc.stderr
    server.kubectl("scale", "deploy", "scaled", "-n", ns, "--current-replicas=5", "--replicas=1")
    assert get_json(server, "deployment", "scaled", "-n", ns)["spec"]["replicas"] == 1

    # the scale subresource, as kubectl reads it
    scale = get_json(server, "deployment", "scaled", "-n", ns, "--subresource=scale")
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1}


def test_set_image(server: Server, ns: str) -> None:
    deployment(server, ns, "imaged")
    out = server.kubectl("set", "image", "deployment/imaged", "-n", ns, "sidecar=busybox:1.37").stdout
    assert out.strip() == "deployment.apps/imaged image updated"
    containers = get_json(server, "deployment", "imaged", "-n", ns)["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "nginx:1.25"), ("sidecar", "busybox:1.37")]


def test_wait_for_jsonpath_after_scale(server: Server, ns: str) -> None:
    deployment(server, ns, "waited")
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.data_dir / "home")}
    # started before the change: kubectl must see it arrive on its watch
    waiter = subprocess.Popen(
        [kubectl_binary(), "wait", "--for=jsonpath={.spec.replicas}=3", "deployment/waited", "-n", ns,
         "--timeout=60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        server.kubectl("scale", "deployment", "waited", "-n", ns, "--replicas=3")
        out, err = waiter.communicate(timeout=90)
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert out.strip() == "deployment.apps/waited condition met"

    # already true: returns at once
    out = server.kubectl("wait", "--for=jsonpath={.spec.replicas}=3", "deployment/waited", "-n", ns, "--timeout=60s")
    assert out.stdout.strip() == "deployment.apps/waited condition met"

    proc = server.kubectl(
        "wait", "--for=jsonpath={.spec.replicas}=7", "deployment/waited", "-n", ns, "--timeout=1s", check=False
    )
    assert proc.returncode == 1
    assert "timed out waiting for the condition on deployments/waited" in proc.stderr

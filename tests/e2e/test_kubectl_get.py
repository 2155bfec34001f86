"""The real kubectl against skiff: reading. `get` in its output formats, selectors, `-A`,
`--show-labels`, `-w`, `get all`, short names; `describe`, `explain`, `api-resources`.

The module's namespace holds a Deployment and Service (web-v1.yaml) and a few ConfigMaps.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Server, kubectl_binary

pytestmark = pytest.mark.e2e

MANIFESTS = Path(__file__).parent / "manifests"


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"kc-get-{uuid.uuid4().hex[:6]}"
    server.create_namespace(name)  # with its kube-root-ca.crt, so listings of ConfigMaps are stable
    server.kubectl("apply", "-n", name, "-f", str(MANIFESTS / "web-v1.yaml"))
    server.kubectl("create", "configmap", "red", "-n", name, "--from-literal=color=red")
    server.kubectl("label", "configmap", "red", "-n", name, "app=x", "tier=front")
    server.kubectl("create", "configmap", "blue", "-n", name, "--from-literal=color=blue", "--from-literal=b=2")
    server.kubectl("label", "configmap", "blue", "-n", name, "app=y")
    return name


def rows(output: str) -> list[list[str]]:
    """A printed table as rows of cells (header included), split on runs of spaces."""
    return [line.split() for line in output.splitlines() if line.strip()]


def row_of(output: str, name: str, column: int = 0) -> list[str]:
    found = [r for r in rows(output) if len(r) > column and r[column] == name]
    assert len(found) == 1, f"no single row {name!r} in:\n{output}"
    return found[0]


# --------------------------------------------------------------------------------------- formats


def test_get_default_table(server: Server, ns: str) -> None:
    out = server.kubectl("get", "deployments", "-n", ns).stdout
    assert rows(out)[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    row = row_of(out, "web")
    assert row[1] == "0/2" and row[3] == "0"  # no node runs its pods; UP-TO-DATE is the controller's

    out = server.kubectl("get", "configmaps", "-n", ns).stdout
    assert rows(out)[0] == ["NAME", "DATA", "AGE"]
    assert row_of(out, "blue")[1] == "2"
    assert row_of(out, "red")[1] == "1"

    # paged lists (limit/continue) print the same single table
    paged = server.kubectl("get", "configmaps", "-n", ns, "--chunk-size=1").stdout
    assert [r[0] for r in rows(paged)] == [r[0] for r in rows(out)]


def test_get_wide(server: Server, ns: str) -> None:
    out = server.kubectl("get", "deploy", "web", "-n", ns, "-o", "wide").stdout
    header = rows(out)[0]
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert row_of(out, "web")[-3:] == ["web,sidecar", "nginx:1.25,busybox:1.36", "app=web"]

    out = server.kubectl("get", "svc", "web", "-n", ns, "-o", "wide").stdout
    assert rows(out)[0][-1] == "SELECTOR"
    row = row_of(out, "web")
    assert row[1] == "ClusterIP"
    assert "80/TCP" in row
    assert row[-1] == "app=web"


def test_get_yaml_and_json(server: Server, ns: str) -> None:
    one = yaml.safe_load(server.kubectl("get", "deployment", "web", "-n", ns, "-o", "yaml").stdout)
    assert one["kind"] == "Deployment"
    assert one["apiVersion"] == "apps/v1"
    assert one["metadata"]["name"] == "web"
    assert one["metadata"]["namespace"] == ns
    assert one["metadata"]["uid"]
    assert one["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"

    listed: Any = json.loads(server.kubectl("get", "configmaps", "-n", ns, "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert {i["metadata"]["name"] for i in listed["items"]} >= {"red", "blue"}
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in listed["items"])
    red = next(i for i in listed["items"] if i["metadata"]["name"] == "red")
    assert red["data"] == {"color": "red"}
    assert red["metadata"]["labels"] == {"app": "x", "tier": "front"}

    as_yaml = yaml.safe_load(server.kubectl("get", "cm", "red", "blue", "-n", ns, "-o", "yaml").stdout)
    assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["red", "blue"]


def test_get_jsonpath_and_custom_columns(server: Server, ns: str) -> None:
    out = server.kubectl("get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.replicas}").stdout
    assert out == "2"
    each = "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image};{end}"
    out = server.kubectl("get", "deploy", "web", "-n", ns, "-o", each).stdout
    assert out == "web=nginx:1.25;sidecar=busybox:1.36;"
    out = server.kubectl("get", "cm", "-n", ns, "-l", "app", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert sorted(out.split()) == ["blue", "red"]
    out = server.kubectl("get", "cm", "red", "-n", ns, "-o", "jsonpath={.data.color}").stdout
    assert out == "red"

    out = server.kubectl(
        "get", "cm", "-n", ns, "-l", "app", "--sort-by=.metadata.name",
        "-o", "custom-columns=NAME:.metadata.name,COLOR:.data.color,APP:.metadata.labels.app",
    ).stdout
    assert rows(out) == [["NAME", "COLOR", "APP"], ["blue", "blue", "y"], ["red", "red", "x"]]

    out = server.kubectl("get", "deploy,svc", "-n", ns, "-o", "name").stdout
    assert out.split() == ["deployment.apps/web", "service/web"]


def test_get_label_and_field_selectors(server: Server, ns: str) -> None:
    out = server.kubectl("get", "cm", "-n", ns, "-l", "app=x").stdout
    assert [r[0] for r in rows(out)[1:]] == ["red"]
    out = server.kubectl("get", "cm", "-n", ns, "-l", "app in (x,y)", "-o", "name").stdout
    assert sorted(out.split()) == ["configmap/blue", "configmap/red"]
    out = server.kubectl("get", "cm", "-n", ns, "-l", "app,tier!=front", "-o", "name").stdout
    assert out.split() == ["configmap/blue"]
    out = server.kubectl("get", "cm", "-n", ns, "--field-selector", "metadata.name=blue", "-o", "name").stdout
    assert out.split() == ["configmap/blue"]

    nothing = server.kubectl("get", "cm", "-n", ns, "-l", "app=nope")
    assert nothing.stdout == ""
    assert nothing.stderr.strip() == f"No resources found in {ns} namespace."

    bad = server.kubectl("get", "cm", "-n", ns, "-l", "app==x==y", check=False)
    assert bad.returncode != 0


def test_get_all_namespaces(server: Server, ns: str) -> None:
    out = server.kubectl("get", "configmaps", "-A", "-l", "app").stdout
    assert rows(out)[0] == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert row_of(out, "red", column=1)[0] == ns
    assert row_of(out, "blue", column=1)[0] == ns

    out = server.kubectl("get", "deployments", "--all-namespaces").stdout
    assert rows(out)[0][0] == "NAMESPACE"
    assert [ns, "web"] in [r[:2] for r in rows(out)]


def test_get_show_labels(server: Server, ns: str) -> None:
    out = server.kubectl("get", "cm", "-n", ns, "-l", "app", "--show-labels").stdout
    assert rows(out)[0] == ["NAME", "DATA", "AGE", "LABELS"]
    assert row_of(out, "red")[-1] == "app=x,tier=front"
    assert row_of(out, "blue")[-1] == "app=y"

    out = server.kubectl("get", "deploy", "web", "-n", ns, "--show-labels").stdout
    assert row_of(out, "web")[-1] == "app=web,tier=front"

    out = server.kubectl("get", "cm", "-n", ns, "-l", "app", "-L", "tier").stdout
    assert rows(out)[0] == ["NAME", "DATA", "AGE", "TIER"]
    assert row_of(out, "red")[-1] == "front"


def test_get_all_and_short_names(server: Server, ns: str) -> None:
    out = server.kubectl("get", "all", "-n", ns).stdout
    assert "service/web" in out
    assert "deployment.apps/web" in out
    assert "configmap" not in out  # configmaps are not in the `all` category

    for short, long in (("deploy", "deployments"), ("svc", "services"), ("cm", "configmaps")):
        by_short = server.kubectl("get", short, "-n", ns, "-o", "name").stdout.split()
        assert by_short == server.kubectl("get", long, "-n", ns, "-o", "name").stdout.split()
        assert by_short
    out = server.kubectl("get", "ns", ns).stdout
    assert row_of(out, ns)[1] == "Active"
    assert server.kubectl("get", "deployment.apps", "web", "-n", ns, "-o", "name").stdout.strip() == (
        "deployment.apps/web"
    )


def test_get_not_found(server: Server, ns: str) -> None:
    proc = server.kubectl("get", "cm", "nope", "-n", ns, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == 'Error from server (NotFound): configmaps "nope" not found'
    proc = server.kubectl("get", "cm", "nope", "-n", ns, "--ignore-not-found")
    assert proc.stdout == ""
    proc = server.kubectl("get", "frobnicators", check=False)
    assert proc.returncode == 1
    assert 'the server doesn\'t have a resource type "frobnicators"' in proc.stderr


# ------------------------------------------------------------------------------------------ watch


class LineReader:
    """The lines a long-running process prints, read on a thread so tests can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True).start()

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            cells = line.split()
            if predicate(cells):
                return cells
        raise AssertionError(f"no matching line within {timeout}s; seen:\n{''.join(self.seen)}")


def popen_kubectl(server: Server, *args: str) -> subprocess.Popen[str]:
    """kubectl started in the background, as `Server.kubectl` would run it."""
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(server.data_dir / "home")}
    return subprocess.Popen(
        [kubectl_binary(), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )


@pytest.fixture
def watch_cm(server: Server, ns: str) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    proc = popen_kubectl(server, "get", "cm", "-w", "-n", ns, "-l", "watched")
    try:
        yield proc, LineReader(proc)
    finally:
        proc.kill()
        proc.wait(10)


def test_get_watch_shows_new_and_changed_rows(server: Server, ns: str,
                                              watch_cm: tuple[subprocess.Popen[str], LineReader]) -> None:
    proc, reader = watch_cm
    # with nothing to list, kubectl prints no header until the first row arrives
    server.kubectl("create", "configmap", "watched", "-n", ns, "--from-literal=a=1")
    server.kubectl("label", "configmap", "watched", "-n", ns, "watched=yes")
    assert reader.wait_for(lambda c: c[:1] == ["NAME"]) == ["NAME", "DATA", "AGE"]
    assert reader.wait_for(lambda c: c[:1] == ["watched"])[1] == "1"

    server.kubectl("patch", "configmap", "watched", "-n", ns, "--type=merge", "-p", '{"data":{"b":"2","c":"3"}}')
    assert reader.wait_for(lambda c: c[:2] == ["watched", "3"])

    server.kubectl("create", "configmap", "watched-too", "-n", ns)
    server.kubectl("label", "configmap", "watched-too", "-n", ns, "watched=yes")
    assert reader.wait_for(lambda c: c[:1] == ["watched-too"])[1] == "0"
    assert proc.poll() is None, "kubectl get -w must keep watching"


def test_get_watch_output_watch_events(server: Server, ns: str) -> None:
    server.kubectl("create", "configmap", "evented", "-n", ns)
    proc = popen_kubectl(server, "get", "cm", "evented", "-w", "--output-watch-events", "-n", ns)
    try:
        reader = LineReader(proc)
        assert reader.wait_for(lambda c: c[:1] == ["EVENT"]) == ["EVENT", "NAME", "DATA", "AGE"]
        assert reader.wait_for(lambda c: c[:2] == ["ADDED", "evented"])
        server.kubectl("label", "configmap", "evented", "-n", ns, "x=y")
        assert reader.wait_for(lambda c: c[:2] == ["MODIFIED", "evented"])
        server.kubectl("delete", "configmap", "evented", "-n", ns)
        assert reader.wait_for(lambda c: c[:2] == ["DELETED", "evented"])
    finally:
        proc.kill()
        proc.wait(10)


# -------------------------------------------------------------------- describe / explain / discovery


def test_describe_deployment(server: Server, ns: str) -> None:
    out = server.kubectl("describe", "deployment", "web", "-n", ns).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["Name:", "web"]
    assert lines[1].split() == ["Namespace:", ns]
    assert "Labels:                 app=web" in out
    assert "                        tier=front" in out
    assert "Selector:               app=web" in out
    # no node runs its pods; how many the controller has created yet varies
    assert re.search(r"Replicas:\s+2 desired \| \d updated \| \d total \| 0 available \| \d unavailable", out), out
    assert "StrategyType:           RollingUpdate" in out
    images = [line.split()[1] for line in lines if line.strip().startswith("Image:")]
    assert images == ["nginx:1.25", "busybox:1.36"]


def test_describe_configmap(server: Server, ns: str) -> None:
    out = server.kubectl("describe", "configmap", "blue", "-n", ns).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["Name:", "blue"]
    assert lines[1].split() == ["Namespace:", ns]
    assert lines[2].split() == ["Labels:", "app=y"]
    assert lines[3].split() == ["Annotations:", "<none>"]
    assert "Data\n====\nb:\n----\n2\n" in out
    assert "color:\n----\nblue\n" in out
    # several at once, by label
    out = server.kubectl("describe", "cm", "-n", ns, "-l", "app").stdout
    assert out.count("Name:") == 2


def test_explain(server: Server) -> None:
    out = server.kubectl("explain", "deployment.spec.replicas").stdout
    assert "GROUP:      apps" in out
    assert "KIND:       Deployment" in out
    assert "VERSION:    v1" in out
    assert "FIELD: replicas <integer>" in out
    assert "Number of desired pods." in out

    out = server.kubectl("explain", "pods.spec.containers").stdout
    assert "KIND:       Pod" in out
    assert "FIELD: containers <[]Container>" in out
    assert "List of containers belonging to the pod." in out
    assert "FIELDS:" in out
    for field in ("image\t<string>", "name\t<string> -required-", "env\t<[]EnvVar>"):
        assert f"  {field}" in out

    proc = server.kubectl("explain", "deployment.spec.nosuchfield", check=False)
    assert proc.returncode == 1
    assert 'field "nosuchfield" does not exist' in proc.stderr


def test_api_resources(server: Server) -> None:
    out = server.kubectl("api-resources").stdout
    assert rows(out)[0] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert row_of(out, "deployments") == ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    assert row_of(out, "configmaps") == ["configmaps", "cm", "v1", "true", "ConfigMap"]
    assert row_of(out, "namespaces") == ["namespaces", "ns", "v1", "false", "Namespace"]
    assert row_of(out, "services") == ["services", "svc", "v1", "true", "Service"]

    out = server.kubectl("api-resources", "--api-group=apps", "-o", "name").stdout
    assert "deployments.apps" in out.split()
    assert "configmaps" not in out.split()
    out = server.kubectl("api-resources", "--namespaced=false", "-o", "name").stdout
    assert "namespaces" in out.split()
    assert "deployments.apps" not in out.split()

    versions = server.kubectl("api-versions").stdout.split()
    assert {"v1", "apps/v1"} <= set(versions)

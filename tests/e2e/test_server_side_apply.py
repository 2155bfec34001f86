"""Server-side apply with managedFields, driven by the real kubectl: ownership, conflicts, force, pruning.

What a user sees: `kubectl apply --server-side` by two managers that disagree on a field gets a
409 naming the field and the other manager; `--force-conflicts` takes it over; a field a
manager stops applying disappears; `kubectl get -o yaml --show-managed-fields` shows who owns
what; a client-side applied object moves to server-side apply as kubectl migrates it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import Server


@pytest.fixture(scope="module")
def ns(server: Server) -> str:
    name = f"ssa-{uuid.uuid4().hex[:6]}"
    server.kubectl("create", "namespace", name)
    return name


def configmap(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> str:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def managed(server: Server, ns: str, *what: str) -> list[dict[str, Any]]:
    out = server.kubectl("get", "-n", ns, *what, "-o", "json", "--show-managed-fields").stdout
    return list(json.loads(out)["metadata"].get("managedFields") or [])


def by_manager(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["manager"]: e for e in entries}


def apply(server: Server, ns: str, manifest: str, *flags: str, check: bool = True) -> Any:
    return server.kubectl("apply", "--server-side", "-n", ns, *flags, "-f", "-", input=manifest, check=check)


def test_two_managers_conflict_force_takes_over_and_dropped_fields_go(server: Server, ns: str) -> None:
    apply(server, ns, configmap("shared", {"a": "1", "b": "2"}, {"team": "x"}), "--field-manager", "alice")
    entries = by_manager(managed(server, ns, "configmap", "shared"))
    assert entries["alice"]["operation"] == "Apply" and entries["alice"]["fieldsType"] == "FieldsV1"
    assert entries["alice"]["apiVersion"] == "v1" and entries["alice"]["time"].endswith("Z")
    owned = entries["alice"]["fieldsV1"]
    assert owned == {"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:team": {}}}}

    # bob applies the same value: shared ownership, no conflict
    apply(server, ns, configmap("shared", {"a": "1"}), "--field-manager", "bob")
    # bob wants another value for a field alice owns: 409 naming the field and the manager
    proc = apply(server, ns, configmap("shared", {"b": "3"}), "--field-manager", "bob", check=False)
    assert proc.returncode != 0
    assert "Apply failed with 1 conflict: conflict with \"alice\": .data.b" in proc.stderr
    assert "--force-conflicts" in proc.stderr  # kubectl's advice on a Conflict
    cm = json.loads(server.kubectl("get", "-n", ns, "configmap", "shared", "-o", "json").stdout)
    assert cm["data"] == {"a": "1", "b": "2"}
    assert "managedFields" not in cm["metadata"]  # kubectl hides them unless asked

    # forced: bob takes .data.b over
    apply(server, ns, configmap("shared", {"b": "3"}), "--field-manager", "bob", "--force-conflicts")
    entries = by_manager(managed(server, ns, "configmap", "shared"))
    assert entries["bob"]["fieldsV1"] == {"f:data": {"f:b": {}}}
    assert entries["alice"]["fieldsV1"] == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:team": {}}}}

    # alice stops applying her label and .data.a: the label goes (hers alone), .data.a went with bob's
    # re-apply that dropped it, so it goes too; .data.b stays (bob's)
    apply(server, ns, configmap("shared", {"c": "4"}), "--field-manager", "alice")
    cm = json.loads(server.kubectl("get", "-n", ns, "configmap", "shared", "-o", "json").stdout)
    assert cm["data"] == {"b": "3", "c": "4"}
    assert not cm["metadata"].get("labels")


def test_dropped_list_item_is_removed_unless_someone_else_owns_it(server: Server, ns: str) -> None:
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "main", "image": "busybox", "ports": [{"containerPort": 80}]},
                     {"name": "side", "image": "busybox"}]}}},
    }  # fmt: skip
    apply(server, ns, yaml.safe_dump(deploy))
    entries = by_manager(managed(server, ns, "deployment", "web"))
    containers = entries["kubectl"]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(containers) == {'k:{"name":"main"}', 'k:{"name":"side"}'}
    assert containers['k:{"name":"main"}']["."] == {}
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in containers['k:{"name":"main"}']["f:ports"]

    # another manager changes replicas through a plain patch (an Update): it owns .spec.replicas now
    server.kubectl("patch", "-n", ns, "deployment", "web", "-p", '{"spec": {"replicas": 3}}', "--field-manager",
                   "scaler")  # fmt: skip
    entries = by_manager(managed(server, ns, "deployment", "web"))
    assert entries["kubectl"]["operation"] == "Apply"
    assert entries["scaler"]["operation"] == "Update"
    assert entries["scaler"]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in entries["kubectl"]["fieldsV1"]["f:spec"]

    # dropping the sidecar removes it; applying replicas again conflicts with the scaler
    del deploy["spec"]["template"]["spec"]["containers"][1]  # type: ignore[index]
    proc = apply(server, ns, yaml.safe_dump(deploy), check=False)
    assert proc.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "scaler" using apps/v1: .spec.replicas' in proc.stderr
    apply(server, ns, yaml.safe_dump(deploy), "--force-conflicts")
    got = json.loads(server.kubectl("get", "-n", ns, "deployment", "web", "-o", "json").stdout)
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["main"]
    assert got["spec"]["replicas"] == 1

    # kubectl scale writes through /scale: its entry names the subresource
    server.kubectl("scale", "-n", ns, "deployment", "web", "--replicas", "2")
    scaled = [e for e in managed(server, ns, "deployment", "web") if e.get("subresource") == "scale"]
    assert [(e["manager"], e["operation"], e["fieldsV1"]) for e in scaled] == [
        ("kubectl", "Update", {"f:spec": {"f:replicas": {}}})]  # fmt: skip


def test_updates_record_their_manager_and_yaml_shows_them(server: Server, ns: str) -> None:
    server.kubectl("create", "-n", ns, "configmap", "plain", "--from-literal=k=v")
    server.kubectl("label", "-n", ns, "configmap", "plain", "tier=web")
    entries = by_manager(managed(server, ns, "configmap", "plain"))
    assert entries["kubectl-create"]["operation"] == "Update"
    assert entries["kubectl-create"]["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}
    assert entries["kubectl-label"]["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}}
    shown = server.kubectl("get", "-n", ns, "configmap", "plain", "-o", "yaml", "--show-managed-fields").stdout
    assert "managedFields:" in shown and "manager: kubectl-label" in shown and "f:tier: {}" in shown
    assert "managedFields" not in server.kubectl("get", "-n", ns, "configmap", "plain", "-o", "yaml").stdout


def test_client_side_apply_migrates_to_server_side(server: Server, ns: str) -> None:
    server.kubectl("apply", "-n", ns, "-f", "-", input=configmap("migrated", {"a": "1", "b": "2"}))
    assert "kubectl-client-side-apply" in by_manager(managed(server, ns, "configmap", "migrated"))
    # the first server-side apply: kubectl moves the client-side manager's fields to its own Apply entry,
    # so that dropping b now removes it instead of leaving it to the old manager
    apply(server, ns, configmap("migrated", {"a": "1"}))
    entries = by_manager(managed(server, ns, "configmap", "migrated"))
    assert entries["kubectl"]["operation"] == "Apply"
    cm = json.loads(server.kubectl("get", "-n", ns, "configmap", "migrated", "-o", "json").stdout)
    assert cm["data"] == {"a": "1"}


def test_apply_to_the_status_subresource_is_recorded_as_such(server: Server, ns: str) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
           "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}  # fmt: skip
    apply(server, ns, yaml.safe_dump(svc))
    status = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
              "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}  # fmt: skip
    apply(server, ns, yaml.safe_dump(status), "--subresource=status", "--field-manager", "lb-controller")
    got = json.loads(server.kubectl("get", "-n", ns, "service", "lb", "-o", "json").stdout)
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.10"}]
    entries = [e for e in managed(server, ns, "service", "lb") if e["manager"] == "lb-controller"]
    assert [(e["operation"], e.get("subresource")) for e in entries] == [("Apply", "status")]
    assert "f:loadBalancer" in entries[0]["fieldsV1"]["f:status"]


def pod_manifest(name: str, container: str) -> str:
    spec = {"containers": [{"name": container, "image": "registry.k8s.io/pause:3.9"}]}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def test_a_created_pod_is_owned_as_sent_not_as_admission_completed_it(server: Server, ns: str) -> None:
    """As Kubernetes' create handler: the creator owns what it sent (with defaults), and not what admission
    adds afterwards (the service account volume, default tolerations, priority); pods sent alike own alike."""
    for name, container in (("owned-a", "app"), ("owned-b", "app"), ("owned-c", "other")):
        server.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest(name, container))
    sets = {n: by_manager(managed(server, ns, "pod", n))["kubectl-create"]["fieldsV1"]
            for n in ("owned-a", "owned-b", "owned-c")}  # fmt: skip
    spec = sets["owned-a"]["f:spec"]
    assert 'k:{"name":"app"}' in spec["f:containers"] and "f:image" in spec["f:containers"]['k:{"name":"app"}']
    assert "f:restartPolicy" in spec  # a default the API server filled in before admission
    assert not {"f:volumes", "f:tolerations", "f:priority", "f:serviceAccountName"} & set(spec)
    pod = json.loads(server.kubectl("get", "-n", ns, "pod", "owned-a", "-o", "json").stdout)
    assert pod["spec"]["volumes"][0]["name"].startswith("kube-api-access-")  # admission did add them
    assert sets["owned-b"] == sets["owned-a"]
    assert 'k:{"name":"other"}' in sets["owned-c"]["f:spec"]["f:containers"]
    assert 'k:{"name":"app"}' not in sets["owned-c"]["f:spec"]["f:containers"]

"""PersistentVolume, PersistentVolumeClaim and StorageClass rules, and which volume a claim binds to."""

from __future__ import annotations

import copy
from typing import Any

from skiff.api import pvbinding as pb
from skiff.apiserver.admission_plugins.default_storage_class import default_class
from skiff.apiserver.storage_strategy import (
    StorageClassStrategy,
    local_path_class,
    validate_claim,
    validate_claim_update,
    validate_volume,
    validate_volume_update,
)
from skiff.controllers.localpath import helper_pod, volume_for, volume_node
from skiff.node.agent.podinputs import master_service_env

Obj = dict[str, Any]


def claim(size: str = "1Gi", modes: tuple[str, ...] = ("ReadWriteOnce",), **spec: Any) -> Obj:
    return {"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": size}},
                     "storageClassName": "fast", **spec}, "status": {"phase": "Pending"}}  # fmt: skip


def volume(name: str, size: str, modes: tuple[str, ...] = ("ReadWriteOnce",), **spec: Any) -> Obj:
    return {"metadata": {"name": name, "labels": {"tier": "gold"}},
            "spec": {"capacity": {"storage": size}, "accessModes": list(modes), "storageClassName": "fast",
                     "hostPath": {"path": f"/srv/{name}"}, **spec}, "status": {"phase": "Available"}}  # fmt: skip


def paths(errors: list[tuple[str, str, str]]) -> list[str]:
    return [p for _, p, _ in errors]


def test_claim_validation() -> None:
    assert validate_claim(claim()) == []
    bad = claim("0", modes=())
    bad["spec"]["volumeMode"] = "Disk"
    assert paths(validate_claim(bad)) == ["spec.accessModes", "spec.resources[storage]", "spec.volumeMode"]
    no_size = claim()
    no_size["spec"]["resources"] = {}
    assert validate_claim(no_size) == [("FieldValueRequired", "spec.resources[storage]", "Required value")]


def test_claim_spec_is_immutable_but_binding_and_growth() -> None:
    old = claim()
    assert validate_claim_update(copy.deepcopy(old), old) == []
    bound = copy.deepcopy(old)
    bound["spec"]["volumeName"] = "pv1"
    assert validate_claim_update(bound, old) == []  # the binder sets volumeName once
    moved = copy.deepcopy(bound)
    moved["spec"]["volumeName"] = "pv2"
    assert paths(validate_claim_update(moved, bound)) == ["spec"]
    bound["status"]["phase"] = "Bound"
    grown = copy.deepcopy(bound)
    grown["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert validate_claim_update(grown, bound) == []
    assert paths(validate_claim_update(bound, grown | {"status": {"phase": "Bound"}})) == [
        "spec.resources.requests.storage"
    ]
    unbound_growth = claim("2Gi")
    assert paths(validate_claim_update(unbound_growth, claim())) == ["spec"]


def test_volume_validation() -> None:
    assert validate_volume(volume("a", "1Gi")) == []
    sourceless = volume("a", "1Gi")
    del sourceless["spec"]["hostPath"]
    assert paths(validate_volume(sourceless)) == ["spec"]
    local = volume("a", "1Gi")
    local["spec"]["local"] = {"path": "/mnt"}
    del local["spec"]["hostPath"]
    assert paths(validate_volume(local)) == ["spec.nodeAffinity"]
    moved = volume("a", "1Gi")
    moved["spec"]["hostPath"] = {"path": "/elsewhere"}
    assert paths(validate_volume_update(moved, volume("a", "1Gi"))) == ["spec.persistentvolumesource"]


def test_storage_class_rules_and_default() -> None:
    strategy = StorageClassStrategy()
    sc = local_path_class()
    assert strategy.validate(sc) == []
    changed = copy.deepcopy(sc) | {"provisioner": "other", "volumeBindingMode": "Immediate"}
    assert paths(strategy.validate_update(changed, sc)) == ["provisioner", "volumeBindingMode"]
    plain = {"metadata": {"name": "plain", "creationTimestamp": "2026-01-01T00:00:00Z"}, "provisioner": "x"}
    assert default_class([plain, sc])["metadata"]["name"] == "local-path"
    assert default_class([plain]) is None


def test_find_volume_takes_the_smallest_fit_or_a_prebound_one() -> None:
    pvs = [volume("big", "10Gi"), volume("small", "2Gi"), volume("tiny", "512Mi"),
           volume("rwx", "1Gi", modes=("ReadWriteMany",)), volume("other", "1Gi", storageClassName="slow")]  # fmt: skip
    assert pb.find_volume(pvs, claim())["metadata"]["name"] == "small"
    assert pb.find_volume(pvs, claim(modes=("ReadWriteMany",)))["metadata"]["name"] == "rwx"
    assert pb.find_volume(pvs, claim("20Gi")) is None
    taken = volume("taken", "1Gi", claimRef={"namespace": "ns", "name": "someone-else"})
    prebound = volume("mine", "50Gi", claimRef={"namespace": "ns", "name": "c"})
    assert pb.find_volume([taken, *pvs, prebound], claim())["metadata"]["name"] == "mine"
    assert pb.find_volume(pvs, claim(selector={"matchLabels": {"tier": "silver"}})) is None
    released = volume("released", "1Gi")
    released["status"]["phase"] = "Released"
    assert pb.find_volume([released], claim()) is None


def test_node_affinity_of_local_volumes() -> None:
    affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": pb.HOSTNAME_LABEL, "operator": "In", "values": ["n1"]}]}]}}  # fmt: skip
    pv = volume("local", "1Gi", nodeAffinity=affinity)
    assert pb.node_affinity_allows(pv, pb.node_labels_for("n1"))
    assert not pb.node_affinity_allows(pv, pb.node_labels_for("n2"))
    assert pb.find_volume([pv], claim(), node_labels=pb.node_labels_for("n2")) is None
    assert pb.node_affinity_allows(volume("anywhere", "1Gi"), {})


def test_local_path_volume_and_its_teardown_helper() -> None:
    pvc = claim("2Gi")
    pvc["metadata"]["resourceVersion"] = "7"
    pv = volume_for(pvc, local_path_class(), "node-a", "/srv/local")
    assert pv["metadata"]["name"] == "pvc-u1"
    assert pv["spec"]["hostPath"] == {"path": "/srv/local/ns_c_pvc-u1", "type": "DirectoryOrCreate"}
    assert pv["spec"]["capacity"] == {"storage": "2Gi"} and pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["claimRef"]["uid"] == "u1"
    assert pb.node_affinity_allows(pv, pb.node_labels_for("node-a"))
    assert not pb.node_affinity_allows(pv, pb.node_labels_for("node-b"))
    assert validate_volume(pv) == []
    assert volume_node(pv) == "node-a"
    helper = helper_pod(pv, "node-a")
    assert helper["spec"]["nodeName"] == "node-a" and helper["spec"]["automountServiceAccountToken"] is False
    assert helper["spec"]["volumes"][0]["hostPath"]["path"] == "/srv/local"
    assert {"name": "VOL_DIR", "value": "/srv/local/ns_c_pvc-u1"} in helper["spec"]["containers"][0]["env"]


def test_kubernetes_service_variables() -> None:
    svc = {"spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}
    env = master_service_env(svc)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == env["KUBERNETES_PORT_443_TCP"] == "tcp://10.43.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.43.0.1"
    assert master_service_env(None) == {}

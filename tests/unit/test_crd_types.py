"""From a CRD to served resource types: versions, shared storage, apiVersion rewriting, what `extra` carries."""

from __future__ import annotations

from typing import Any

from skiff.apiserver.crd_types import resource_types

SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}


def crd(**status: Any) -> dict[str, Any]:
    version = {"served": True, "schema": {"openAPIV3Schema": SCHEMA}}
    return {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetCollection",
                      "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {**version, "name": "v1", "storage": True,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                          "statusReplicasPath": ".status.replicas"}},
                 "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]},
                {**version, "name": "v1beta1", "storage": False},
                {**version, "name": "v1alpha1", "storage": False, "served": False},
            ],
        },
        "status": status,
    }  # fmt: skip


def test_one_type_per_served_version_sharing_the_storage_version() -> None:
    v1, beta = resource_types(crd())
    assert (v1.version, beta.version) == ("v1", "v1beta1")
    assert v1.storage_prefix == beta.storage_prefix == "/registry/example.com/widgets/"
    assert not v1.namespaced and v1.key(None, "a") == "/registry/example.com/widgets/a"
    assert v1.short_names == ("wd",) and v1.categories == ("all",) and v1.list_kind == "WidgetCollection"
    assert v1.subresources == ("status", "scale") and beta.subresources == ()
    assert v1.extra["scale"] == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    assert v1.extra["printer_columns"][0]["name"] == "Size" and beta.extra["printer_columns"] == []
    assert v1.extra["custom"] and v1.extra["openapi_schema"] is SCHEMA
    stored = {"apiVersion": "example.com/v1beta1", "kind": "Widget", "metadata": {"name": "a"}}
    assert beta.to_storage is not None and beta.to_storage(stored)["apiVersion"] == "example.com/v1"
    assert stored["apiVersion"] == "example.com/v1beta1"  # a copy, not the caller's object
    assert beta.from_storage is not None
    assert beta.from_storage({"apiVersion": "example.com/v1"})["apiVersion"] == "example.com/v1beta1"


def test_accepted_names_win_over_the_spec_and_no_storage_version_serves_nothing() -> None:
    accepted = {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["w"]}
    v1, _ = resource_types(crd(acceptedNames=accepted))
    assert v1.short_names == ("w",)
    broken = crd()
    for version in broken["spec"]["versions"]:
        version["storage"] = False
    assert resource_types(broken) == []


def test_a_terminating_crd_refuses_new_objects() -> None:
    v1, _ = resource_types(crd(), terminating=True)
    assert getattr(v1.strategy, "terminating", False) is True

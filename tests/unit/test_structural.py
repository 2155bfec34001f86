"""Structural schemas: what makes a CRD schema acceptable, and checking, pruning and defaulting custom objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from skiff.api import crd_validation
from skiff.api.structural import validate
from skiff.api.structural_defaults import apply_defaults, prune
from skiff.api.structural_schema import check_structural

ROOT = "spec.versions[0].schema.openAPIV3Schema"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2,
                         "x-kubernetes-list-type": "set"},
                "ports": {
                    "type": "array",
                    "minItems": 1,
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                               "port": {"type": "integer", "default": 80}}},
                },
                "target": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}  # fmt: skip


def errors_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}
    return [(path, message) for _t, path, message in validate(obj, SCHEMA)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"size": "3"},
         ("spec.size", 'Invalid value: "string": spec.size in body must be of type integer: "string"')),
        ({}, ("spec.size", "Required value")),
        ({"size": 0},
         ("spec.size", "Invalid value: 0: spec.size in body should be greater than or equal to 1")),
        ({"size": 11}, ("spec.size", "Invalid value: 11: spec.size in body should be less than or equal to 10")),
        ({"size": 1, "color": "pink"},
         ("spec.color", 'Unsupported value: "pink": supported values: "red", "blue"')),
        ({"size": 1, "name": "ABC"},
         ("spec.name", "Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'")),
        ({"size": 1, "name": "a"},
         ("spec.name", 'Invalid value: "a": spec.name in body should be at least 2 chars long')),
        ({"size": 1, "name": "abcdef"}, ("spec.name", "Too long: may not be more than 5 bytes")),
        ({"size": 1, "tags": ["a", "b", "c"]}, ("spec.tags", "Too many: 3: must have at most 2 items")),
        ({"size": 1, "tags": ["a", "a"]}, ("spec.tags[1]", 'Duplicate value: "a"')),
        ({"size": 1, "ports": []}, ("spec.ports", "Invalid value: 0: spec.ports in body should have at least 1 items")),
        ({"size": 1, "ports": [{"name": "a"}, {"name": "a"}]},
         ("spec.ports[1]", 'Duplicate value: map[string]interface {}{"name":"a"}')),
        ({"size": 1, "target": True},
         ("spec.target", 'Invalid value: "boolean": spec.target in body must be of type integer,string: "boolean"')),
        ({"size": 1, "labels": {"a": 1}},
         ("spec.labels[a]", 'Invalid value: "integer": spec.labels[a] in body must be of type string: "integer"')),
        ({"size": 1, "template": {"kind": "Pod"}},
         ("spec.template.apiVersion", "Required value: apiVersion is required")),
    ],
    ids=["type", "required", "minimum", "maximum", "enum", "pattern", "minLength", "maxLength", "maxItems",
         "set", "minItems", "map-keys", "int-or-string", "additionalProperties", "embedded"],
)  # fmt: skip
def test_validation_errors_name_the_field(spec: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in errors_of(spec)


def test_valid_objects_pass() -> None:
    spec = {"size": 3, "color": "blue", "name": "abc", "tags": ["a"], "ports": [{"name": "a"}, {"name": "b"}],
            "target": "50%", "note": None, "extra": {"anything": [1]}, "labels": {"a": "b"},
            "template": {"apiVersion": "v1", "kind": "Pod", "spec": {}}}  # fmt: skip
    assert errors_of(spec) == []
    assert errors_of({"size": 1, "target": 3}) == []


def test_null_of_a_non_nullable_field_is_an_error() -> None:
    assert ("spec.name", 'Invalid value: "null": spec.name in body must be of type string: "null"') in errors_of(
        {"size": 1, "name": None}
    )


def test_pruning_drops_unknown_fields_and_reports_their_paths() -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": {"size": 1, "junk": 1, "ports": [{"name": "a", "x": 1}], "extra": {"kept": 1}},
        "top": True,
    }
    unknown = prune(obj, SCHEMA)
    assert sorted(unknown) == ["spec.junk", "spec.ports[0].x", "top"]
    assert obj["spec"] == {"size": 1, "ports": [{"name": "a"}], "extra": {"kept": 1}}
    assert obj["metadata"] == {"name": "w", "labels": {"a": "b"}}


def test_defaulting_fills_absent_fields_and_nulls_of_non_nullable_fields() -> None:
    obj: dict[str, Any] = {"spec": {"size": 1, "ports": [{"name": "a"}, {"name": "b", "port": 8080}], "name": None}}
    apply_defaults(obj, SCHEMA)
    assert obj["spec"]["color"] == "red"
    assert [p["port"] for p in obj["spec"]["ports"]] == [80, 8080]
    assert "name" not in obj["spec"]  # a null without default is pruned
    obj = {"spec": {"size": 1, "color": None}}
    apply_defaults(obj, SCHEMA)
    assert obj["spec"]["color"] == "red"
    defaults_do_not_leak = copy.deepcopy(SCHEMA)
    assert defaults_do_not_leak == SCHEMA


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"properties": {}}, f"{ROOT}.type: Required value: must not be empty at the root"),
        ({"type": "string"}, f'{ROOT}.type: Invalid value: "string": must be object at the root'),
        ({"type": "object", "properties": {"spec": {"properties": {}}}},
         f"{ROOT}.properties[spec].type: Required value: must not be empty for specified object fields"),
        ({"type": "object", "properties": {"a": {"type": "array"}}},
         f"{ROOT}.properties[a].items: Required value: must be specified"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": {}}}},
         f"{ROOT}.properties[a].items.type: Required value: must not be empty for specified array items"),
        ({"type": "object", "additionalProperties": {"type": "string"}},
         f"{ROOT}.additionalProperties: Forbidden: must not be used at the root"),
        ({"type": "object",
          "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}},
         f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, "
         "but metadata is implicitly specified"),
        ({"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "string"}]}}},
         f"{ROOT}.properties[a].anyOf[0].type: Forbidden: must be empty to be structural"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"},
                                                 "x-kubernetes-list-type": "map"}}},
         f"{ROOT}.properties[a].x-kubernetes-list-map-keys: Required value: "
         "must not be empty if x-kubernetes-list-type is map"),
        ({"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}},
         f'{ROOT}.properties[a].default: Invalid value: "string": '
         f'{ROOT}.properties[a].default in body must be of type integer: "string"'),
        ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}},
         f"{ROOT}.properties[a].uniqueItems: Forbidden: "
         "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"),
        ({"type": "object", "properties": {"a": {"type": "object", "additionalProperties": False}}},
         f"{ROOT}.properties[a].additionalProperties: Forbidden: additionalProperties cannot be set to false"),
    ],
    ids=["root-type", "root-object", "field-type", "items", "item-type", "root-additional", "metadata",
         "nested-type", "map-keys", "default", "uniqueItems", "additionalProperties-false"],
)  # fmt: skip
def test_non_structural_schemas_are_refused(schema: dict[str, Any], expected: str) -> None:
    found = [f"{path}: {message}" for _t, path, message in check_structural(schema, ROOT)]
    assert expected in found


def test_a_structural_schema_passes() -> None:
    assert check_structural(SCHEMA, ROOT) == []
    int_or_string = {"type": "object", "properties": {"a": {"x-kubernetes-int-or-string": True,
                     "anyOf": [{"type": "integer"}, {"type": "string"}]}}}  # fmt: skip
    assert check_structural(int_or_string, ROOT) == []


def _crd(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": SCHEMA}}],
    }
    base.update(spec)
    crd = {"metadata": {"name": "widgets.example.com"}, "spec": base}
    crd_validation.set_defaults(crd)
    return crd


def crd_errors(crd: dict[str, Any]) -> list[str]:
    return [f"{path}: {message}" for _t, path, message in crd_validation.validate(crd)]


def test_crd_defaults_and_a_valid_crd() -> None:
    crd = _crd()
    assert crd["spec"]["names"]["singular"] == "widget" and crd["spec"]["names"]["listKind"] == "WidgetList"
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    assert crd_errors(crd) == []


def test_crd_rules() -> None:
    bad_name = _crd()
    bad_name["metadata"]["name"] = "gadgets.example.com"
    assert crd_errors(bad_name) == [
        'metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group'
    ]
    two = _crd(versions=[{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": SCHEMA}},
                         {"name": "v2", "served": True, "storage": True, "schema": {"openAPIV3Schema": SCHEMA}}])
    assert any(e.startswith("spec.versions: Invalid value: ") and
               e.endswith("must have exactly one version marked as storage version") for e in crd_errors(two))
    no_schema = _crd(versions=[{"name": "v1", "served": True, "storage": True}])
    assert f"{ROOT}: Required value: schemas are required" in crd_errors(no_schema)
    assert 'spec.group: Invalid value: "example": should be a domain with at least one dot' in crd_errors(
        {**_crd(group="example"), "metadata": {"name": "widgets.example"}}
    )
    assert 'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"' in crd_errors(
        _crd(scope="Global")
    )  # fmt: skip


def test_protected_groups_need_the_approval_annotation() -> None:
    crd = _crd(group="widgets.k8s.io")
    crd["metadata"]["name"] = "widgets.widgets.k8s.io"
    assert crd_errors(crd) == [
        "metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval "
        'annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111'
    ]
    crd["metadata"]["annotations"] = {"api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/1"}
    assert crd_errors(crd) == []

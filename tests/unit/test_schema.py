"""Decoding checks against the Kubernetes schemas: types, required fields, unknown fields, pruning."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.schema import compile_schema, prune_unknown, validate

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"


def deployment(**spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "env": [
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                            ],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": 0.25},
                            },
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                },
            },
        },
    }
    obj["spec"].update(spec)
    return obj


def container(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return result


def test_a_valid_deployment_passes_quickly() -> None:
    obj = deployment()
    assert validate(obj, DEPLOYMENT).ok
    start = time.perf_counter()
    for _ in range(200):
        validate(obj, DEPLOYMENT)
    assert (time.perf_counter() - start) / 200 < 0.001


def test_a_wrong_type_is_a_decode_error_worded_like_go() -> None:
    result = validate(deployment(replicas="3"), DEPLOYMENT)
    assert result.decode_errors == [
        (
            "FieldValueTypeInvalid",
            "spec.replicas",
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
        )
    ]
    assert result.invalid == [] and not result.ok
    assert result.decode_message("Deployment", "v1") == (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string '
        "into Go struct field DeploymentSpec.spec.replicas of type int32"
    )


def go(got: str, field: str, go_type: str) -> str:
    return f"json: cannot unmarshal {got} into Go struct field {field} of type {go_type}"


CONTAINERS = "spec.template.spec.containers"


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (lambda o: container(o).update(image=5), f"{CONTAINERS}[0].image",
         go("number", f"Container.{CONTAINERS}.image", "string")),
        (lambda o: o["spec"]["template"]["spec"]["containers"].append("sidecar"), f"{CONTAINERS}[1]",
         go("string", f"PodSpec.{CONTAINERS}", "v1.Container")),
        (lambda o: o["spec"]["template"]["spec"].update(containers={}), CONTAINERS,
         go("object", f"PodSpec.{CONTAINERS}", "[]v1.Container")),
        (lambda o: o["metadata"]["labels"].update(app=1), "metadata.labels[app]",
         go("number", "ObjectMeta.metadata.labels", "string")),
        (lambda o: o["metadata"].update(generation="1"), "metadata.generation",
         go("string", "ObjectMeta.metadata.generation", "int64")),
        (lambda o: o["spec"].update(replicas=2**31), "spec.replicas",
         go("number 2147483648", "DeploymentSpec.spec.replicas", "int32")),
        (lambda o: o["spec"].update(replicas=1.5), "spec.replicas",
         go("number 1.5", "DeploymentSpec.spec.replicas", "int32")),
        (lambda o: o["spec"].update(replicas=True), "spec.replicas",
         go("bool", "DeploymentSpec.spec.replicas", "int32")),
        (lambda o: o["spec"].update(paused="yes"), "spec.paused",
         go("string", "DeploymentSpec.spec.paused", "bool")),
        (lambda o: o["spec"].update(template=[]), "spec.template",
         go("array", "DeploymentSpec.spec.template", "v1.PodTemplateSpec")),
    ],
)  # fmt: skip
def test_type_mismatches(mutate: Any, path: str, message: str) -> None:
    obj = deployment()
    mutate(obj)
    assert validate(obj, DEPLOYMENT).decode_errors == [("FieldValueTypeInvalid", path, message)]


def test_a_wrong_top_level_value_names_the_go_value() -> None:
    result = validate({"apiVersion": "v1", "kind": "ConfigMap", "data": "x"}, "io.k8s.api.core.v1.ConfigMap")
    assert result.decode_errors[0][2] == (
        "json: cannot unmarshal string into Go struct field ConfigMap.data of type map[string]string"
    )


def test_int_or_string() -> None:
    for ok in (1, "25%", "http"):
        obj = deployment(strategy={"rollingUpdate": {"maxSurge": ok}})
        assert validate(obj, DEPLOYMENT).ok, ok
    for bad in (True, 1.5, ["1"], {"a": 1}):
        result = validate(deployment(strategy={"rollingUpdate": {"maxSurge": bad}}), DEPLOYMENT)
        assert [e[1] for e in result.decode_errors] == ["spec.strategy.rollingUpdate.maxSurge"], bad
        assert "of type intstr.IntOrString" in result.decode_errors[0][2]


def test_quantity() -> None:
    for ok in ("500m", "1Gi", "1e3", 2, 0.5, "+1.5"):
        obj = deployment()
        container(obj)["resources"] = {"limits": {"cpu": ok}}
        assert validate(obj, DEPLOYMENT).ok, ok
    obj = deployment()
    container(obj)["resources"] = {"limits": {"cpu": "lots"}, "requests": {"memory": [1]}}
    result = validate(obj, DEPLOYMENT)
    assert [e[1] for e in result.decode_errors] == [
        "spec.template.spec.containers[0].resources.limits[cpu]",
        "spec.template.spec.containers[0].resources.requests[memory]",
    ]
    assert result.decode_errors[0][2].startswith("quantities must match the regular expression")


def test_null_is_accepted_anywhere() -> None:
    obj = deployment(replicas=None, strategy=None)
    container(obj)["image"] = None
    obj["metadata"]["labels"]["app"] = None
    assert validate(obj, DEPLOYMENT).ok


def test_bytes_and_times() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "data": {"ok": "aGVsbG8=", "wrapped": "aGVs\nbG8=", "bad": "a!"},
    }
    result = validate(secret, "io.k8s.api.core.v1.Secret")
    assert result.decode_errors == [
        ("FieldValueTypeInvalid", "data[bad]", "illegal base64 data at input byte 1")
    ]
    obj = deployment()
    obj["metadata"]["creationTimestamp"] = "2024-05-01T10:00:00Z"
    assert validate(obj, DEPLOYMENT).ok
    obj["metadata"]["creationTimestamp"] = "yesterday"
    assert [e[1] for e in validate(obj, DEPLOYMENT).decode_errors] == ["metadata.creationTimestamp"]


def test_free_form_fields_take_anything() -> None:
    obj = deployment()
    obj["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    assert validate(obj, DEPLOYMENT).ok
    revision = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "revision": 1,
        "data": {"any": [1, "x"]},
    }
    assert validate(revision, "io.k8s.api.apps.v1.ControllerRevision").ok


def test_missing_required_fields_are_invalid() -> None:
    obj = deployment()
    del obj["spec"]["selector"]
    container(obj).pop("name")
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = None
    result = validate(obj, DEPLOYMENT)
    assert result.decode_errors == []
    assert result.invalid == [
        ("FieldValueRequired", "spec.template.spec.containers[0].ports[0].containerPort", "Required value"),
        ("FieldValueRequired", "spec.template.spec.containers[0].name", "Required value"),
        ("FieldValueRequired", "spec.selector", "Required value"),
    ]
    err = errors.field_error("Deployment", "web", result.invalid[2:], group="apps")
    assert err.message == 'Deployment.apps "web" is invalid: spec.selector: Required value'
    assert validate(obj, DEPLOYMENT, check_required=False).invalid == []


def test_required_fields_are_not_checked_in_status() -> None:
    daemon_set = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "spec": {"selector": {}, "template": {}},
        "status": {},
    }
    assert validate(daemon_set, "io.k8s.api.apps.v1.DaemonSet").ok


def test_unknown_fields_are_reported_by_path() -> None:
    obj = deployment()
    obj["spec"]["foo"] = 1
    obj["metadata"]["bogus"] = "x"
    container(obj)["imagePullPolcy"] = "Always"
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPortt"] = 1
    result = validate(obj, DEPLOYMENT)
    assert result.decode_errors == [] and result.invalid == []
    assert result.unknown == [
        "metadata.bogus",
        "spec.template.spec.containers[0].ports[0].hostPortt",
        "spec.template.spec.containers[0].imagePullPolcy",
        "spec.foo",
    ]
    assert result.strict_message() == (
        'strict decoding error: unknown field "metadata.bogus", '
        'unknown field "spec.template.spec.containers[0].ports[0].hostPortt", '
        'unknown field "spec.template.spec.containers[0].imagePullPolcy", unknown field "spec.foo"'
    )
    assert result.warnings()[-1] == '299 - "unknown field \\"spec.foo\\""'
    assert "foo" in obj["spec"]  # validate alone never changes the object


def test_prune_unknown() -> None:
    obj = deployment()
    expected = copy.deepcopy(obj)
    obj["spec"]["foo"] = {"bar": 1}
    container(obj)["imagePullPolcy"] = "Always"
    obj["metadata"]["annotations"] = {"any.key/name": "kept"}
    expected["metadata"]["annotations"] = {"any.key/name": "kept"}
    assert prune_unknown(obj, DEPLOYMENT) is obj
    assert obj == expected
    obj["status"] = {"weird": 1}
    result = validate(obj, DEPLOYMENT, prune=True)
    assert result.unknown == ["status.weird"] and obj["status"] == {}


def test_custom_resource_schema() -> None:
    schema = compile_schema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer"},
                        "port": {"x-kubernetes-int-or-string": True},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                }
            },
        }
    )
    good = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1, "port": "http", "tags": ["a"], "extra": {"anything": [1]}},
    }
    assert validate(good, schema).ok
    bad = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "nope": 1},
        "spec": {"size": "big", "tags": [1], "other": True},
    }
    result = validate(bad, schema)
    assert result.decode_errors == []  # custom resources are unstructured: type errors are 422s
    assert result.invalid == [
        (
            "FieldValueTypeInvalid",
            "spec.size",
            'Invalid value: "string": spec.size in body must be of type integer: "string"',
        ),
        (
            "FieldValueTypeInvalid",
            "spec.tags[0]",
            'Invalid value: "number": spec.tags[0] in body must be of type string: "number"',
        ),
    ]
    assert result.unknown == ["metadata.nope", "spec.other"]
    assert validate({"spec": {}}, schema).invalid == [("FieldValueRequired", "spec.size", "Required value")]


def test_a_preserve_unknown_root_keeps_everything_but_checks_metadata() -> None:
    schema = compile_schema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    result = validate({"metadata": {"name": 1}, "spec": {"x": 1}, "data": 2}, schema)
    assert result.unknown == []
    assert [e[1] for e in result.invalid] == ["metadata.name"]


def _variants(value: Any) -> Any:
    """Every copy of `value` with one leaf or map changed: another type, a bad format, an unknown field, a
    required field dropped."""
    if isinstance(value, dict):
        yield {**value, "bogusField": 1}
        for key, child in value.items():
            yield {k: v for k, v in value.items() if k != key}
            for changed in _variants(child):
                yield {**value, key: changed}
    elif isinstance(value, list):
        for i, child in enumerate(value):
            for changed in _variants(child):
                yield [*value[:i], changed, *value[i + 1 :]]
    else:
        yield from ({"a": 1}, [1], "not-a-time", 2**40, 1.5, True, "12 cores")


def test_the_quick_check_of_a_clean_object_never_hides_what_the_full_walk_finds() -> None:
    # bodies with nothing to report skip the walk that names every field's path; whatever one changed leaf or
    # map makes the walk find (a type, a format, a range, an unknown or missing field), validate still reports
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "labels": {"a": "b"}, "creationTimestamp": "2026-01-01T00:00:00Z",
                        "managedFields": [{"manager": "m", "operation": "Update", "time": "2026-01-01T00:00:00Z",
                                           "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
           "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                    "resources": {"requests": {"cpu": "100m", "memory": 5}}}],
                    "priority": 0, "hostNetwork": False},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip
    for obj, schema in ((pod, "io.k8s.api.core.v1.Pod"), (deployment(), DEPLOYMENT)):
        assert validate(copy.deepcopy(obj), schema).errors == [] and not validate(obj, schema).unknown
        found = 0
        for variant in _variants(obj):
            quick = validate(copy.deepcopy(variant), schema)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("skiff.api.schema._clean", lambda *_a, **_k: False)
                full = validate(variant, schema)
            assert (quick.errors, quick.unknown) == (full.errors, full.unknown)
            found += bool(full.errors or full.unknown)
        assert found > 50

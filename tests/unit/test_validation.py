"""Name, label and object-metadata rules with Kubernetes' exact messages."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api import validation as v
from skiff.api.errors import field_error

SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param("example.com", [], id="valid"),
        pytest.param("a", [], id="one-char"),
        pytest.param("a-b.c-d", [], id="dashes-and-dots"),
        pytest.param("a" * 253, [], id="max-length"),
        pytest.param("Example.com", [SUBDOMAIN], id="uppercase"),
        pytest.param("-a", [SUBDOMAIN], id="leading-dash"),
        pytest.param("a.", [SUBDOMAIN], id="trailing-dot"),
        pytest.param("a_b", [SUBDOMAIN], id="underscore"),
        pytest.param("", [SUBDOMAIN], id="empty"),
        pytest.param("a" * 254, ["must be no more than 253 characters"], id="too-long"),
    ],
)
def test_dns1123_subdomain(value: str, errors: list[str]) -> None:
    assert v.is_dns1123_subdomain(value) == errors
    assert v.dns1123_subdomain(value) == errors


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param("my-name", [], id="valid"),
        pytest.param("123-abc", [], id="digits"),
        pytest.param("a.b", ["must not contain dots"], id="dots"),
        pytest.param("My-Name", [LABEL], id="uppercase"),
        pytest.param("a-", [LABEL], id="trailing-dash"),
        pytest.param("a" * 64, ["must be no more than 63 characters"], id="too-long"),
    ],
)
def test_dns1123_label(value: str, errors: list[str]) -> None:
    assert v.is_dns1123_label(value) == errors


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param("app", [], id="plain"),
        pytest.param("app.kubernetes.io/name", [], id="prefixed"),
        pytest.param("My_Key.1", [], id="mixed-case"),
        pytest.param("a b", [NAME_PART], id="space"),
        pytest.param("/name", ["prefix part must be non-empty"], id="empty-prefix"),
        pytest.param("example.com/", ["name part must be non-empty", NAME_PART], id="empty-name"),
        pytest.param("Example.com/name", ["prefix part " + SUBDOMAIN], id="bad-prefix"),
        pytest.param("a" * 64, ["name part must be no more than 63 bytes"], id="name-too-long"),
        pytest.param(
            "a/b/c",
            [
                "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
                "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
                "subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ],
            id="two-slashes",
        ),
    ],
)
def test_qualified_name(value: str, errors: list[str]) -> None:
    assert v.is_qualified_name(value) == errors


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param("", [], id="empty-is-valid"),
        pytest.param("v1.2_3-x", [], id="valid"),
        pytest.param("-x", [LABEL_VALUE], id="leading-dash"),
        pytest.param("a/b", [LABEL_VALUE], id="slash"),
        pytest.param("a" * 64, ["must be no more than 63 bytes"], id="too-long"),
        pytest.param("é" * 32, ["must be no more than 63 bytes", LABEL_VALUE], id="bytes-not-chars"),
    ],
)
def test_label_value(value: str, errors: list[str]) -> None:
    assert v.is_valid_label_value(value) == errors


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param("Any Name:1", [], id="anything-url-safe"),
        pytest.param(".", ["may not be '.'"], id="dot"),
        pytest.param("..", ["may not be '..'"], id="dotdot"),
        pytest.param("a/b%c", ["may not contain '/'", "may not contain '%'"], id="slash-and-percent"),
    ],
)
def test_path_segment_name(value: str, errors: list[str]) -> None:
    assert v.is_valid_path_segment_name(value) == errors
    assert v.path_segment_name(value) == errors


@pytest.mark.parametrize(
    ("prefix", "kept"),
    [
        pytest.param("web-", "web-", id="short"),
        pytest.param("x" * 70, "x" * 58, id="cut-to-58"),
    ],
)
def test_generate_name(prefix: str, kept: str) -> None:
    name = v.generate_name(prefix)
    assert name.startswith(kept)
    suffix = name[len(kept) :]
    assert len(suffix) == 5
    assert set(suffix) <= set(v.GENERATE_NAME_ALPHABET)
    assert len(name) <= 63


def test_mask_trailing_dash() -> None:
    assert v.mask_trailing_dash("web-") == "wea"  # Kubernetes' quirk: the last two characters go
    assert v.mask_trailing_dash("-") == "-"
    assert v.mask_trailing_dash("web") == "web"


def _meta(**kw: Any) -> dict[str, Any]:
    return {"name": "web", "namespace": "default", **kw}


@pytest.mark.parametrize(
    ("meta", "namespaced", "errors"),
    [
        pytest.param(_meta(), True, [], id="valid"),
        pytest.param({"name": "node-1"}, False, [], id="cluster-scoped"),
        pytest.param(
            {"namespace": "default"},
            True,
            [("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")],
            id="name-required",
        ),
        pytest.param(
            _meta(name="Web"),
            True,
            [("FieldValueInvalid", "metadata.name", f'Invalid value: "Web": {SUBDOMAIN}')],
            id="bad-name",
        ),
        pytest.param(
            _meta(name="web-abcde", generateName="web-"), True, [], id="generate-name-trailing-dash-ok"
        ),
        pytest.param(
            _meta(generateName="Web-"),
            True,
            [("FieldValueInvalid", "metadata.generateName", f'Invalid value: "Web-": {SUBDOMAIN}')],
            id="bad-generate-name",
        ),
        pytest.param(
            {"name": "web"},
            True,
            [("FieldValueRequired", "metadata.namespace", "Required value")],
            id="no-ns",
        ),
        pytest.param(
            {"name": "n", "namespace": "x"},
            False,
            [("FieldValueForbidden", "metadata.namespace", "Forbidden: not allowed on this type")],
            id="ns-on-cluster-kind",
        ),
        pytest.param(
            _meta(namespace="a.b"),
            True,
            [("FieldValueInvalid", "metadata.namespace", 'Invalid value: "a.b": must not contain dots')],
            id="bad-namespace",
        ),
        pytest.param(
            _meta(labels={"app": "web", "a b": "x", "ok": "-bad"}),
            True,
            [
                ("FieldValueInvalid", "metadata.labels", f'Invalid value: "a b": {NAME_PART}'),
                ("FieldValueInvalid", "metadata.labels", f'Invalid value: "-bad": {LABEL_VALUE}'),
            ],
            id="labels",
        ),
        pytest.param(
            _meta(annotations={"Example.COM/Key": "any value at all", "a b": ""}),
            True,
            [("FieldValueInvalid", "metadata.annotations", f'Invalid value: "a b": {NAME_PART}')],
            id="annotation-keys-case-insensitive",
        ),
        pytest.param(
            _meta(annotations={"big": "x" * (256 * 1024)}),
            True,
            [("FieldValueTooLong", "metadata.annotations", "Too long: may not be more than 262144 bytes")],
            id="annotations-too-big",
        ),
        pytest.param(
            _meta(finalizers=["kubernetes.io/pv-protection", "foregroundDeletion", "bad finalizer"]),
            True,
            [("FieldValueInvalid", "metadata.finalizers", f'Invalid value: "bad finalizer": {NAME_PART}')],
            id="finalizers",
        ),
        pytest.param(
            _meta(finalizers=["orphan", "foregroundDeletion"]),
            True,
            [
                (
                    "FieldValueInvalid",
                    "metadata.finalizers",
                    'Invalid value: []string{"orphan", "foregroundDeletion"}: '
                    "finalizer orphan and foregroundDeletion cannot be both set",
                )
            ],
            id="orphan-and-foreground",
        ),
        pytest.param(
            _meta(generation=-1),
            True,
            [
                (
                    "FieldValueInvalid",
                    "metadata.generation",
                    "Invalid value: -1: must be greater than or equal to 0",
                )
            ],
            id="negative-generation",
        ),
    ],
)
def test_validate_object_meta(
    meta: dict[str, Any], namespaced: bool, errors: list[tuple[str, str, str]]
) -> None:
    assert v.validate_object_meta(meta, namespaced=namespaced, name_validator=v.dns1123_subdomain) == errors


OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1"}


@pytest.mark.parametrize(
    ("refs", "errors"),
    [
        pytest.param([OWNER], [], id="valid"),
        pytest.param([{**OWNER, "controller": True}, {**OWNER, "uid": "u2"}], [], id="one-controller"),
        pytest.param(
            [{"apiVersion": "", "kind": "", "name": "", "uid": ""}],
            [
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences.apiVersion",
                    'Invalid value: "": version must not be empty',
                ),
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences.kind",
                    'Invalid value: "": must not be empty',
                ),
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences.name",
                    'Invalid value: "": must not be empty',
                ),
                ("FieldValueInvalid", "metadata.ownerReferences.uid", 'Invalid value: "": must not be empty'),
            ],
            id="fields-required",
        ),
        pytest.param(
            [{**OWNER, "apiVersion": "apps/"}],
            [
                (
                    "FieldValueInvalid",
                    "metadata.ownerReferences.apiVersion",
                    'Invalid value: "apps/": version must not be empty',
                )
            ],
            id="group-without-version",
        ),
    ],
)
def test_owner_references(refs: list[dict[str, Any]], errors: list[tuple[str, str, str]]) -> None:
    assert v.validate_owner_references(refs) == errors


def test_two_controllers() -> None:
    refs = [{**OWNER, "controller": True}, {**OWNER, "kind": "StatefulSet", "name": "db", "controller": True}]
    (error,) = v.validate_owner_references(refs)
    assert error[:2] == ("FieldValueInvalid", "metadata.ownerReferences")
    assert error[2].endswith(
        'Only one reference can have Controller set to true. Found "true" in references for ReplicaSet/web-1 '
        "and StatefulSet/db"
    )


def test_event_cannot_own() -> None:
    (error,) = v.validate_owner_references([{**OWNER, "apiVersion": "v1", "kind": "Event"}])
    assert error[2].endswith("/v1, Kind=Event is disallowed from being an owner")


@pytest.mark.parametrize(
    ("selector", "errors"),
    [
        pytest.param({"matchLabels": {"app": "web"}}, [], id="valid"),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "In"}]},
            [
                (
                    "FieldValueRequired",
                    "spec.selector.matchExpressions[0].values",
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                )
            ],
            id="in-needs-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            [
                (
                    "FieldValueForbidden",
                    "spec.selector.matchExpressions[0].values",
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            ],
            id="exists-forbids-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "Equals"}]},
            [
                (
                    "FieldValueNotSupported",
                    "spec.selector.matchExpressions[0].operator",
                    'Unsupported value: "Equals": supported values: "In", "NotIn", "Exists", "DoesNotExist"',
                )
            ],
            id="bad-operator",
        ),
        pytest.param(
            {"matchLabels": {"app": "a b"}},
            [("FieldValueInvalid", "spec.selector.matchLabels", f'Invalid value: "a b": {LABEL_VALUE}')],
            id="bad-match-label",
        ),
    ],
)
def test_validate_label_selector(selector: dict[str, Any], errors: list[tuple[str, str, str]]) -> None:
    assert v.validate_label_selector(selector, "spec.selector") == errors


def test_errors_feed_field_error() -> None:
    errs = v.validate_object_meta({"name": "Bad_Name"}, namespaced=False, name_validator=v.dns1123_label)
    err = field_error("Namespace", "Bad_Name", errs)
    assert err.code == 422
    assert (
        err.message == f'Namespace "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": {LABEL}'
    )

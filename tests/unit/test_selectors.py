"""Label and field selectors: grammar, matching and Kubernetes' error messages."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api.errors import BadRequest
from skiff.api.selectors import (
    FieldSelector,
    LabelSelector,
    exact_name,
    label_selector_from_dict,
    new_requirement,
    object_fields,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "frontend", "env": "prod", "version": "3"}

QNAME_NAME_PART = (
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
    ("selector", "expected"),
    [
        pytest.param("", True, id="empty-selects-everything"),
        pytest.param("app=web", True, id="equals"),
        pytest.param("app==web", True, id="double-equals"),
        pytest.param("app=api", False, id="equals-other-value"),
        pytest.param("app!=api", True, id="not-equals"),
        pytest.param("missing!=x", True, id="not-equals-absent-key"),
        pytest.param("app in (web,api)", True, id="in"),
        pytest.param("app in (api)", False, id="in-miss"),
        pytest.param("app notin (api,db)", True, id="notin"),
        pytest.param("missing notin (x)", True, id="notin-absent-key"),
        pytest.param("app", True, id="exists"),
        pytest.param("missing", False, id="exists-miss"),
        pytest.param("!missing", True, id="does-not-exist"),
        pytest.param("!app", False, id="does-not-exist-miss"),
        pytest.param("app=web,tier=frontend,!legacy", True, id="conjunction"),
        pytest.param("app=web,tier=backend", False, id="conjunction-one-fails"),
        pytest.param("  app = web ,  tier in ( frontend , x )  ", True, id="whitespace-tolerant"),
        pytest.param("version>2", True, id="greater-than"),
        pytest.param("version<3", False, id="less-than"),
        pytest.param("missing>1", False, id="greater-than-absent"),
        pytest.param("app=", False, id="equals-empty-value"),
        pytest.param("tier in (in,frontend)", True, id="keyword-as-value"),
        pytest.param("example.com/role", False, id="prefixed-key"),
    ],
)
def test_label_selector_matches(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param("app=", {"app": ""}, True, id="empty-value-matches-empty"),
        pytest.param("app in ()", {"app": ""}, True, id="empty-set-is-empty-string"),
        pytest.param("app", None, False, id="no-labels"),
        pytest.param("!app", None, True, id="no-labels-not-exists"),
    ],
)
def test_label_selector_edge_values(selector: str, labels: dict[str, str] | None, expected: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        pytest.param("b=1,a=2", "a=2,b=1", id="sorted-by-key"),
        pytest.param("x in (c, a,b)", "x in (a,b,c)", id="values-sorted"),
        pytest.param("!x,y,z!=1,w==2", "w==2,!x,y,z!=1", id="all-forms"),
        pytest.param("v > 5", "v>5", id="gt"),
    ],
)
def test_label_selector_string_form(selector: str, text: str) -> None:
    assert str(parse_label_selector(selector)) == text


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param(
            "app:web",
            f'unable to parse requirement: <nil>: Invalid value: "app:web": {QNAME_NAME_PART}',
            id="invalid-key",
        ),
        pytest.param(
            "app=a b",
            "found 'b', expected: ',' or 'end of string'",
            id="junk-after-value",
        ),
        pytest.param(
            "app=web$",
            f'unable to parse requirement: values[0][app]: Invalid value: "web$": {LABEL_VALUE}',
            id="invalid-value",
        ),
        pytest.param(
            "app b",
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            id="missing-operator",
        ),
        pytest.param(
            "app in a", "unable to parse requirement: found 'a' expected: '('", id="in-without-paren"
        ),
        pytest.param(
            "app in (a",
            "unable to parse requirement: found '', expected: ',' or ')'",
            id="unclosed-paren",
        ),
        pytest.param("a,", "found '', expected: identifier after ','", id="trailing-comma"),
        pytest.param(",a", "found ',', expected: !, identifier, or 'end of string'", id="leading-comma"),
        pytest.param("!a=b", "found '=', expected: ',' or 'end of string'", id="negated-with-operator"),
        pytest.param(
            "v>x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
            id="gt-not-integer",
        ),
        pytest.param(
            "a=(", "unable to parse requirement: found '(', expected: identifier", id="paren-as-value"
        ),
    ],
)
def test_label_selector_errors(selector: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_label_selector(selector)
    assert info.value.message == message
    assert info.value.code == 400


def test_label_selector_key_too_long_counts_bytes() -> None:
    with pytest.raises(BadRequest, match="name part must be no more than 63 bytes"):
        parse_label_selector("a" * 64)


def test_requires_exact_match() -> None:
    sel = parse_label_selector("app=web,tier in (a),env in (a,b),x!=y")
    assert sel.requires_exact_match("app") == "web"
    assert sel.requires_exact_match("tier") == "a"
    assert sel.requires_exact_match("env") is None
    assert sel.requires_exact_match("x") is None
    assert sel.requires_exact_match("nope") is None


def test_empty_and_nothing() -> None:
    assert parse_label_selector("").empty()
    assert not parse_label_selector("a").empty()
    nothing = LabelSelector.match_nothing()
    assert not nothing.empty()
    assert not nothing.matches({})


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param({"matchLabels": {"app": "web"}}, LABELS, True, id="match-labels"),
        pytest.param({"matchLabels": {"app": "api"}}, LABELS, False, id="match-labels-miss"),
        pytest.param(
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["frontend", "cache"]},
                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                    {"key": "version", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            },
            LABELS,
            True,
            id="all-operators",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["frontend"]}]},
            LABELS,
            False,
            id="notin-miss",
        ),
        pytest.param({}, LABELS, True, id="empty-selects-everything"),
        pytest.param({"matchLabels": {}}, {}, True, id="empty-match-labels"),
        pytest.param(None, LABELS, False, id="none-selects-nothing"),
    ],
)
def test_label_selector_from_dict(
    selector: dict[str, Any] | None, labels: dict[str, str], expected: bool
) -> None:
    assert label_selector_from_dict(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            '"Equals" is not a valid label selector operator',
            id="bad-operator",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty",
            id="in-without-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist',
            id="exists-with-values",
        ),
        pytest.param(
            {"matchLabels": {"a b": "x"}},
            f'key: Invalid value: "a b": {QNAME_NAME_PART}',
            id="bad-key",
        ),
        pytest.param(
            {"matchLabels": {"app": "-x"}},
            f'values[0][app]: Invalid value: "-x": {LABEL_VALUE}',
            id="bad-value",
        ),
    ],
)
def test_label_selector_from_dict_errors(selector: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        label_selector_from_dict(selector)
    assert info.value.message == message


def test_new_requirement_aggregates_errors() -> None:
    with pytest.raises(BadRequest) as info:
        new_requirement("a b", "=", ["x", "y"])
    assert info.value.message.startswith('[key: Invalid value: "a b": ')
    assert "exact-match compatibility requires one single value" in info.value.message


# -- field selectors -----------------------------------------------------------------------------

FIELDS = {
    "metadata.name": "web-1",
    "metadata.namespace": "default",
    "status.phase": "Running",
    "spec.nodeName": "",
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("", True, id="empty"),
        pytest.param("metadata.name=web-1", True, id="equals"),
        pytest.param("metadata.name==web-1", True, id="double-equals"),
        pytest.param("metadata.name=web-2", False, id="equals-miss"),
        pytest.param("status.phase!=Pending", True, id="not-equals"),
        pytest.param("status.phase!=Running", False, id="not-equals-miss"),
        pytest.param("metadata.name=web-1,status.phase=Running", True, id="conjunction"),
        pytest.param("metadata.name=web-1,status.phase=Failed", False, id="conjunction-miss"),
        pytest.param("spec.nodeName=", True, id="empty-value"),
        pytest.param("spec.unknown=", True, id="absent-field-reads-empty"),
        pytest.param("metadata.name=web-1,", True, id="trailing-comma-ignored"),
    ],
)
def test_field_selector_matches(selector: str, expected: bool) -> None:
    assert parse_field_selector(selector).matches(FIELDS) is expected


@pytest.mark.parametrize(
    ("selector", "value"),
    [
        pytest.param(r"metadata.name=a\,b", "a,b", id="escaped-comma"),
        pytest.param(r"metadata.name=a\=b", "a=b", id="escaped-equals"),
        pytest.param(r"metadata.name=a\\b", "a\\b", id="escaped-backslash"),
    ],
)
def test_field_selector_escaping(selector: str, value: str) -> None:
    sel = parse_field_selector(selector)
    assert sel.requirements[0].value == value
    assert str(sel) == selector
    assert sel.matches({"metadata.name": value})


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param("foo", "invalid selector: 'foo'; can't understand 'foo'", id="no-operator"),
        pytest.param(
            "a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'", id="second-term-without-operator"
        ),
        pytest.param(
            "a=b=c", "invalid field selector: unescaped character in value: 61", id="unescaped-equals"
        ),
        pytest.param(r"a=b\x", r"invalid field selector: invalid escape sequence: \x", id="bad-escape"),
        pytest.param("a=b\\", "invalid field selector: invalid escape sequence: \\", id="trailing-backslash"),
    ],
)
def test_field_selector_errors(selector: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_field_selector(selector)
    assert info.value.message == message


def test_field_selector_unsupported_field() -> None:
    supported = ("metadata.name", "metadata.namespace")
    parse_field_selector("metadata.name=x", supported)
    with pytest.raises(BadRequest) as info:
        parse_field_selector("metadata.name=x,spec.foo=y", supported)
    assert info.value.message == "field label not supported: spec.foo"


def test_field_selector_helpers() -> None:
    sel = parse_field_selector("status.phase!=Failed,metadata.name=web,metadata.name=web")
    assert sel.fields() == ["metadata.name", "status.phase"]
    assert exact_name(sel) == "web"
    assert exact_name(parse_field_selector("metadata.name!=web")) is None
    assert exact_name(parse_field_selector("metadata.name==web")) == "web"
    assert exact_name(FieldSelector()) is None
    assert FieldSelector().empty()
    assert not sel.empty()


def test_object_fields() -> None:
    obj = {"metadata": {"name": "n", "namespace": "ns"}}
    assert object_fields(obj) == {"metadata.name": "n", "metadata.namespace": "ns"}
    assert object_fields(obj, namespaced=False) == {"metadata.name": "n"}


def test_new_requirement_unsupported_operator() -> None:
    with pytest.raises(BadRequest) as info:
        new_requirement("a", "~")
    assert info.value.message == (
        'operator: Unsupported value: "~": supported values: "in", "notin", "=", "==", "!=", "exists", "!", '
        '"gt", "lt"'
    )

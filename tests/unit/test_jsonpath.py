"""The JSONPath subset CRD additionalPrinterColumns use, evaluated like client-go's util/jsonpath."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api.jsonpath import JSONPath, JSONPathError, find, format_float, to_text

OBJ: dict[str, Any] = {
    "metadata": {
        "name": "db",
        "labels": {"app.kubernetes.io/name": "postgres", "tier": "data"},
    },
    "spec": {
        "replicas": 3,
        "ratio": 0.5,
        "paused": False,
        "nothing": None,
        "containers": [
            {"name": "main", "image": "postgres:16", "ports": [{"containerPort": 5432}]},
            {
                "name": "exporter",
                "image": "exporter:1",
                "ports": [{"containerPort": 9187}, {"containerPort": 80}],
            },
        ],
    },
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "observedGeneration": 4},
            {"type": "Progressing", "status": "False", "observedGeneration": 2},
        ]
    },
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (".metadata.name", ["db"]),
        ("{.metadata.name}", ["db"]),
        ("{ .metadata.name }", ["db"]),
        ("$.metadata.name", ["db"]),
        ("metadata.name", ["db"]),
        (".spec.replicas", [3]),
        (".spec.paused", [False]),
        (".spec.nothing", [None]),
        (".spec.containers[0].name", ["main"]),
        (".spec.containers[1].image", ["exporter:1"]),
        (".spec.containers[-1].name", ["exporter"]),
        (".spec.containers[*].name", ["main", "exporter"]),
        (".spec.containers.*.name", ["main", "exporter"]),
        (".spec.containers[*].ports[*].containerPort", [5432, 9187, 80]),
        (".spec.containers[0:1].name", ["main"]),
        (".spec.containers[1:].name", ["exporter"]),
        (".spec.containers[::2].name", ["main"]),
        (".metadata.labels['app.kubernetes.io/name']", ["postgres"]),
        ('.metadata.labels["tier"]', ["data"]),
        (".metadata.labels.app\\.kubernetes\\.io/name", ["postgres"]),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[?(@.type == 'Progressing')].status", ["False"]),
        ('.status.conditions[?(@.type!="Ready")].type', ["Progressing"]),
        (".status.conditions[?(@.observedGeneration > 3)].type", ["Ready"]),
        (".status.conditions[?(@.observedGeneration <= 2)].type", ["Progressing"]),
        (".status.conditions[?(@.observedGeneration >= 2)].type", ["Ready", "Progressing"]),
        (".status.conditions[?(@.observedGeneration < 2)].type", []),
        (".status.conditions[?(@.status)].type", ["Ready", "Progressing"]),
        (".status.conditions[?(@.reason)].type", []),
        ('.status.conditions[?(@.observedGeneration == "4")].type', []),  # no cross-type equality
        ("..containerPort", [5432, 9187, 80]),
        (".metadata.*", [OBJ["metadata"]["name"], OBJ["metadata"]["labels"]]),
    ],
)
def test_find(expr: str, expected: list[Any]) -> None:
    assert find(expr, OBJ) == expected


@pytest.mark.parametrize(
    "expr",
    [
        ".metadata.missing",
        ".missing.deeper.still",
        ".spec.containers[5].name",
        ".spec.containers[-5].name",
        ".spec.replicas.value",  # a field of a number
        ".spec.replicas[0]",  # an index of a number
        ".metadata[0]",  # an index of a map
        ".spec.nothing.deeper",  # a field of null
        '.metadata[?(@.a=="b")]',  # a filter over a map
    ],
)
def test_missing_paths_yield_nothing(expr: str) -> None:
    assert find(expr, OBJ) == []


def test_first_reports_whether_anything_matched() -> None:
    assert JSONPath(".spec.containers[*].name").first(OBJ) == (True, "main")
    assert JSONPath(".spec.nothing").first(OBJ) == (True, None)
    assert JSONPath(".spec.absent").first(OBJ) == (False, None)


def test_root_path_is_the_whole_object() -> None:
    assert find("{.}", OBJ) == [OBJ]


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "{}",
        ".spec[",
        ".spec[abc]",
        ".spec[1:2:3:4]",
        ".a[?(@.x ~ 1)]",
        ".a[?(.x==1)]",
        ".a b",
        ".a[?(@.x==y)]",
    ],
)
def test_invalid_expressions_are_rejected(expr: str) -> None:
    with pytest.raises(JSONPathError):
        JSONPath(expr)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (1.5, "1.5"),
        (100.0, "100"),
        (1e21, "1e+21"),
        ({"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
        (["a", "b"], '["a","b"]'),
        (None, ""),
    ],
)
def test_to_text_prints_like_kubectl(value: Any, text: str) -> None:
    assert to_text(value) == text


def test_format_float_keeps_fractions() -> None:
    assert format_float(0.25) == "0.25"
    assert format_float(-3.0) == "-3"

"""A CRD version's selectableFields: apiextensions-apiserver's checks and the field-selector names."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api import crd_selectable

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
        "spec": {
            "type": "object",
            "properties": {
                "color": {"type": "string", "enum": ["red", "blue"]},
                "size": {"type": "integer"},
                "branded": {"type": "boolean"},
                "weight": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}
PATH = "spec.versions[0].selectableFields"


def check(*paths: str) -> list[tuple[str, str, str]]:
    return crd_selectable.validate([{"jsonPath": p} for p in paths], SCHEMA, PATH)


def test_strings_integers_booleans_and_map_values_are_selectable() -> None:
    assert check(".spec.color", ".spec.size", ".spec.branded", ".spec.labels.team") == []
    assert crd_selectable.validate(None, SCHEMA, PATH) == []


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        (".spec.nothing", "is an invalid path: does not refer to a valid field"),
        (".spec.tags[0]", "is an invalid path: array notation is not allowed"),
        ("spec.color", "is an invalid path: expected [ or . or end of JSON path"),
        (".spec.", "is an invalid path: unexpected end of JSON path"),
        (".metadata.name", "must not point to fields in metadata"),
        (".spec.weight", crd_selectable.TYPE_MESSAGE),
        (".spec", crd_selectable.TYPE_MESSAGE),
    ],
    ids=["unknown", "array", "no-dot", "trailing-dot", "metadata", "number", "object"],
)
def test_bad_paths_are_refused_with_apiextensions_messages(path: str, detail: str) -> None:
    assert check(path) == [("FieldValueInvalid", f"{PATH}[0].jsonPath", f'Invalid value: "{path}": {detail}')]


def test_missing_duplicate_and_too_many() -> None:
    missing = crd_selectable.validate([{}], SCHEMA, PATH)
    assert missing == [("FieldValueRequired", f"{PATH}[0].jsonPath", "Required value")]
    assert check(".spec.size", ".spec.size") == [
        ("FieldValueDuplicate", f"{PATH}[1].jsonPath", 'Duplicate value: ".spec.size"')
    ]
    many = [f".spec.labels.k{i}" for i in range(9)]
    assert check(*many) == [("FieldValueTooMany", PATH, "Too many: 9: must have at most 8 items")]


def test_field_names_drop_the_leading_dot() -> None:
    fields = [{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.size"}]
    assert crd_selectable.field_names(fields) == ("spec.color", "spec.size")
    assert crd_selectable.field_names(None) == ()

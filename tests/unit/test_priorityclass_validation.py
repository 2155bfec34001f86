"""PriorityClass validation, defaults and strategy as Kubernetes has them."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api import defaults
from skiff.apiserver.priorityclass import (
    PriorityClassStrategy,
    validate_priority_class,
    validate_priority_class_update,
)

Obj = dict[str, Any]
RESERVED = "Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: "


def pc(name: str, value: Any = 100, **fields: Any) -> Obj:
    return {"metadata": {"name": name}, "value": value, **fields}


@pytest.mark.parametrize(
    ("obj", "errs"),
    [
        (pc("high", 1_000_000_000), []),
        (
            pc("too-high", 1_000_000_001),
            [("FieldValueForbidden", "value",
              "Forbidden: maximum allowed value of a user defined priority is 1000000000")],
        ),
        (pc("system-node-critical", 2_000_001_000), []),
        (pc("system-cluster-critical", 2_000_000_000), []),
        (
            pc("system-mine", 5),
            [("FieldValueForbidden", "metadata.name", RESERVED + "system-mine is not a known system priority class")],
        ),
        (
            pc("system-node-critical", 5),
            [("FieldValueForbidden", "metadata.name",
              RESERVED + "value of system-node-critical PriorityClass must be 2000001000")],
        ),
        (
            pc("system-cluster-critical", 2_000_000_000, globalDefault=True),
            [("FieldValueForbidden", "metadata.name",
              RESERVED + "globalDefault of system-cluster-critical PriorityClass must be false")],
        ),
        (pc("p", preemptionPolicy="Never"), []),
        (
            pc("p", preemptionPolicy="Sometimes"),
            [("FieldValueNotSupported", "preemptionPolicy",
              'Unsupported value: "Sometimes": supported values: "PreemptLowerPriority", "Never"')],
        ),
        (pc("p", preemptionPolicy=""), [("FieldValueRequired", "preemptionPolicy", "Required value")]),
    ],
    ids=["max", "over-max", "node-critical", "cluster-critical", "reserved", "system-value", "system-default",
         "never", "bad-policy", "empty-policy"],
)  # fmt: skip
def test_validate(obj: Obj, errs: list[tuple[str, str, str]]) -> None:
    assert validate_priority_class(obj) == errs


def test_value_and_policy_never_change() -> None:
    old = pc("p", 10, preemptionPolicy="PreemptLowerPriority")
    assert (
        validate_priority_class_update(pc("p", 10, preemptionPolicy="PreemptLowerPriority", description="x"), old) == []
    )
    assert validate_priority_class_update(pc("p", 11, preemptionPolicy="Never"), old) == [
        ("FieldValueForbidden", "value", "Forbidden: may not be changed in an update."),
        ("FieldValueInvalid", "preemptionPolicy", 'Invalid value: "Never": field is immutable'),
    ]


def test_strategy_generation_is_one_and_stays() -> None:
    strategy = PriorityClassStrategy()
    obj: Obj = {"metadata": {"name": "p"}}
    strategy.prepare_for_create(obj)
    assert obj == {"metadata": {"name": "p", "generation": 1}, "value": 0}
    new: Obj = {"metadata": {"name": "p"}, "value": 0, "description": "changed"}
    strategy.prepare_for_update(new, obj)
    assert new["metadata"]["generation"] == 1
    assert strategy.refuse_delete("system-node-critical") == "this is a system priority class and cannot be deleted"
    assert strategy.refuse_delete("high") is None


def test_preemption_policy_defaults_to_preempt_lower_priority() -> None:
    obj = pc("p")
    defaults.apply_defaults("scheduling.k8s.io/v1", "PriorityClass", obj)
    assert obj["preemptionPolicy"] == "PreemptLowerPriority"
    kept = pc("p", preemptionPolicy="Never")
    defaults.apply_defaults("scheduling.k8s.io/v1", "PriorityClass", kept)
    assert kept["preemptionPolicy"] == "Never"

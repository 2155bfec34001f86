"""DefaultTolerationSeconds: which pods get the not-ready / unreachable tolerations, and the server flags."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.apiserver.admission_plugins.default_toleration_seconds import (
    NOT_READY,
    UNREACHABLE,
    add_default_tolerations,
)

Obj = dict[str, Any]


def tol(key: str | None, effect: str | None, **more: Any) -> Obj:
    t: Obj = {"operator": "Exists", **more}
    if key is not None:
        t["key"] = key
    if effect is not None:
        t["effect"] = effect
    return t


@pytest.mark.parametrize(
    ("tolerations", "added"),
    [
        ([], [NOT_READY, UNREACHABLE]),
        ([tol(NOT_READY, "NoExecute", tolerationSeconds=10)], [UNREACHABLE]),
        ([tol(UNREACHABLE, "NoExecute")], [NOT_READY]),
        ([tol(NOT_READY, None)], [UNREACHABLE]),  # an empty effect tolerates every effect
        ([tol(None, "NoExecute")], []),  # an empty key tolerates every taint
        ([tol(None, None)], []),
        ([tol(None, "NoSchedule")], [NOT_READY, UNREACHABLE]),
        ([tol(NOT_READY, "NoSchedule")], [NOT_READY, UNREACHABLE]),
        ([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}], [NOT_READY, UNREACHABLE]),
    ],
    ids=["none", "not-ready", "unreachable", "any-effect", "any-key", "anything", "other-effect",
         "not-ready-noschedule", "unrelated"],
)  # fmt: skip
def test_default_tolerations_only_where_missing(tolerations: list[Obj], added: list[str]) -> None:
    spec: Obj = {"tolerations": [dict(t) for t in tolerations]} if tolerations else {}
    add_default_tolerations(spec, not_ready_seconds=300, unreachable_seconds=60)
    assert spec.get("tolerations", [])[: len(tolerations)] == tolerations
    seconds = {NOT_READY: 300, UNREACHABLE: 60}
    assert spec.get("tolerations", [])[len(tolerations) :] == [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds[key]} for key in added
    ]

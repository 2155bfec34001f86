"""Node lifecycle decisions without a server: tolerations, eviction delays, zones, rate limits."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.controllers.nodelifecycle import (
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TokenBucket,
    effective_tolerations,
    ready_status,
    tolerates,
    toleration_time,
    zone_key,
)

UNREACHABLE = {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}
NOT_READY = {"key": TAINT_NOT_READY, "effect": "NoExecute"}


@pytest.mark.parametrize(
    ("toleration", "taint", "ok"),
    [
        ({"key": TAINT_UNREACHABLE, "operator": "Exists"}, UNREACHABLE, True),
        ({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}, UNREACHABLE, False),
        ({"operator": "Exists"}, UNREACHABLE, True),
        ({"key": "a", "value": "1"}, {"key": "a", "value": "1", "effect": "NoExecute"}, True),
        ({"key": "a", "value": "2"}, {"key": "a", "value": "1", "effect": "NoExecute"}, False),
        ({"key": "b", "operator": "Exists"}, UNREACHABLE, False),
    ],
    ids=["exists", "other-effect", "wildcard", "equal", "unequal", "other-key"],
)
def test_tolerates(toleration: dict[str, Any], taint: dict[str, Any], ok: bool) -> None:
    assert tolerates(toleration, taint) is ok


def test_default_tolerations_are_added_only_where_missing() -> None:
    pod = {"spec": {"tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]}}
    tols = effective_tolerations(pod, 300)
    assert len(tols) == 2
    assert tols[1] == {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    assert len(effective_tolerations({"spec": {"tolerations": [{"operator": "Exists"}]}}, 300)) == 1


def test_toleration_time() -> None:
    defaults = effective_tolerations({"spec": {}}, 5)
    assert toleration_time([UNREACHABLE], defaults) == 5.0
    assert toleration_time([UNREACHABLE, {"key": "x", "effect": "NoExecute"}], defaults) == 0.0  # not tolerated
    forever = [{"key": TAINT_UNREACHABLE, "operator": "Exists"}]
    assert toleration_time([UNREACHABLE], forever) is None
    mixed = [{"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 30},
             {"key": TAINT_NOT_READY, "operator": "Exists", "tolerationSeconds": 10}]
    assert toleration_time([UNREACHABLE, NOT_READY], mixed) == 10.0
    assert toleration_time([UNREACHABLE], [{"operator": "Exists", "tolerationSeconds": -5}]) == 0.0


def test_ready_status_and_zone() -> None:
    assert ready_status({"status": {}}) == "Unknown"
    assert ready_status({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}) == "False"
    assert zone_key({"metadata": {}}) == ""
    labels = {"topology.kubernetes.io/region": "r", "topology.kubernetes.io/zone": "z"}
    assert zone_key({"metadata": {"labels": labels}}) == "r:\x00:z"


def test_token_bucket() -> None:
    bucket = TokenBucket(0.1)
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert 9.0 < wait <= 10.0
    bucket.swap(0.0)
    assert bucket.take() == float("inf")

"""When the node agent patches a pod's status: only when the API's copy lacks what it computed."""

from __future__ import annotations

from skiff.node.agent.sync import _differs


def test_nulls_and_empty_objects_the_api_drops_are_no_difference() -> None:
    computed = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
                "containerStatuses": [{"name": "c", "lastState": {}, "ready": True}]}  # fmt: skip
    stored = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
              "containerStatuses": [{"name": "c", "ready": True}], "qosClass": "BestEffort"}  # fmt: skip
    assert not _differs(computed, stored)


def test_a_stale_reason_or_another_value_is_a_difference() -> None:
    computed = {"conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}]}
    stale = {"conditions": [{"type": "Ready", "status": "True", "reason": "ContainersNotReady"}]}
    assert _differs(computed, stale)
    assert _differs({"phase": "Running"}, {"phase": "Pending"})
    assert _differs({"containerStatuses": [{"lastState": {}}]},
                    {"containerStatuses": [{"lastState": {"terminated": {"exitCode": 1}}}]})  # fmt: skip

"""The HPA's arithmetic (skiff.controllers.hpa_math) against Kubernetes' rules, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from skiff.controllers import hpa_math as hm

Obj = dict[str, Any]
T0 = 1_700_000_000.0  # the fake clock's epoch: every time below is T0 + seconds


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    cpu: str | None = "100m",
    memory: str | None = None,
    phase: str = "Running",
    ready: str = "True",
    started: float = -3600.0,
    ready_since: float = -3600.0,
    deleting: bool = False,
    containers: int = 1,
) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    meta: Obj = {"name": name, "namespace": "ns", "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = stamp(0)
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": f"c{i}", "resources": {"requests": requests}} for i in range(containers)]},
        "status": {
            "phase": phase,
            "startTime": stamp(started),
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": stamp(ready_since)}],
        },
    }


def usage(**values: int) -> dict[str, hm.PodMetric]:
    """Pod name → millicores, sampled just now over a 10 s window."""
    return {name: hm.PodMetric(v, T0 - 1, 10.0) for name, v in values.items()}


def replicas(current: int, target: int, pods: list[Obj], metrics: dict[str, hm.PodMetric], **kw: Any) -> int:
    return hm.resource_replicas(current, target, "cpu", pods, metrics, now=T0, **kw)[0]


# --- replica calculation ----------------------------------------------------------------------


def test_scale_up_is_ceil_of_ready_pods_times_ratio() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    got, utilization, raw = hm.resource_replicas(3, 50, "cpu", pods, usage(a=200, b=200, c=100), now=T0)
    assert utilization == 166 and raw == 166  # 500m of 300m requested; 166m on average
    assert got == 10  # ceil(3 * 166 / 50)


def test_scale_down() -> None:
    pods = [pod(n) for n in "abcd"]
    assert replicas(4, 50, pods, usage(a=10, b=10, c=10, d=10)) == 1  # ceil(4 * 10/50)


@pytest.mark.parametrize(("used", "expected"), [(54, 4), (46, 4), (56, 5), (30, 3)], ids=str)
def test_tolerance_keeps_the_current_count(used: int, expected: int) -> None:
    """Target 50%: within 45%..55% nothing changes; 56% is ceil(4 * 1.12) = 5, 30% is ceil(4 * 0.6) = 3."""
    pods = [pod(n) for n in "abcd"]
    assert replicas(4, 50, pods, usage(a=used, b=used, c=used, d=used)) == expected


def test_configurable_tolerances_each_way() -> None:
    pods = [pod(n) for n in "abcd"]
    metrics = usage(a=56, b=56, c=56, d=56)
    assert replicas(4, 50, pods, metrics, tolerances=hm.Tolerances(scale_up=0.2)) == 4
    assert replicas(4, 50, pods, metrics, tolerances=hm.Tolerances(scale_up=0.05)) == 5


def test_missing_metrics_count_as_full_request_on_scale_down() -> None:
    pods = [pod("a", cpu="1"), pod("b", cpu="1"), pod("c", cpu="1")]
    # a and b idle; c has no metrics: counted as using 100% of its request, so no big drop
    assert replicas(3, 50, pods, usage(a=100, b=100)) == 3
    assert replicas(3, 50, pods, usage(a=0, b=0)) == 2  # (0+0+1000)/3000 = 33% -> ceil(0.67*3)


def test_missing_metrics_fallback_is_the_target_when_above_100_percent() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    # target 200%, a and b at 150%: c (missing) counts as 200%, (150+150+200)/300 = 166% -> ratio 0.83 -> 3
    assert replicas(3, 200, pods, usage(a=150, b=150)) == 3  # (as 100% it would have been 2)


def test_missing_metrics_count_as_zero_on_scale_up() -> None:
    pods = [pod("a"), pod("b"), pod("c"), pod("d")]
    # a and b at 200% of a 50% target; c and d missing count as 0: (200+200+0+0)/400 = 100% -> ratio 2
    assert replicas(4, 50, pods, usage(a=200, b=200)) == 8


def test_unready_pods_count_as_zero_on_scale_up() -> None:
    pods = [pod("a"), pod("b"), pod("c", ready="False", started=-10, ready_since=-10)]
    # c is initializing and unready: ignored, then counted as 0% because the others ask to scale up
    assert replicas(3, 50, pods, usage(a=100, b=100, c=500)) == 4  # (100+100+0)/300 = 66% -> ceil(1.32 * 3)


def test_pending_pods_are_unready_and_failed_or_deleting_pods_ignored() -> None:
    pods = [pod("a"), pod("b", phase="Pending"), pod("c", phase="Failed"), pod("d", deleting=True)]
    groups = hm.group_pods(pods, usage(a=50, c=50, d=50), "cpu", now=T0)
    assert groups.ready_count == 1
    assert groups.unready == {"b"} and groups.ignored == {"c", "d"} and not groups.missing


def test_cpu_of_a_pod_still_initializing_waits_for_a_full_window_after_ready() -> None:
    young = pod("a", started=-20, ready_since=-5)  # ready 5 s ago; the 10 s window began before that
    groups = hm.group_pods([young], usage(a=50), "cpu", now=T0)
    assert groups.unready == {"a"}
    settled = pod("a", started=-60, ready_since=-30)
    assert hm.group_pods([settled], usage(a=50), "cpu", now=T0).ready_count == 1
    # memory is never held back by readiness
    assert hm.group_pods([young], usage(a=50), "memory", now=T0).ready_count == 1


def test_a_pod_past_initialization_that_never_became_ready_is_unready() -> None:
    never = pod("a", ready="False", started=-600, ready_since=-590)  # went unready 10 s after start
    assert hm.group_pods([never], usage(a=50), "cpu", now=T0).unready == {"a"}
    flapped = pod("a", ready="False", started=-600, ready_since=-60)  # unready later in life: counted
    assert hm.group_pods([flapped], usage(a=50), "cpu", now=T0).ready_count == 1


def test_direction_flip_after_recount_keeps_the_current_count() -> None:
    pods = [pod("a", cpu="1"), pod("b", cpu="1"), pod("c", cpu="1")]
    # a and b below target (ratio 0.8), c missing: filling c with 100% pushes the ratio above 1 -> stay
    assert replicas(3, 50, pods, usage(a=400, b=400)) == 3


def test_missing_request_is_an_error_naming_the_container() -> None:
    pods = [pod("a"), pod("b", cpu=None)]
    with pytest.raises(hm.CalculationError, match="missing request for cpu in container c0 of Pod b"):
        replicas(2, 50, pods, usage(a=50, b=50))


def test_no_pods_and_no_usable_metrics_are_errors() -> None:
    with pytest.raises(hm.CalculationError, match="no pods returned by selector"):
        replicas(1, 50, [], usage(a=50))
    with pytest.raises(
        hm.CalculationError, match=r"did not receive metrics for targeted pods \(pods might be unready\)"
    ):
        replicas(1, 50, [pod("a", phase="Pending")], usage(a=50))


def test_metrics_of_unknown_pods_are_ignored() -> None:
    ratio, utilization, raw = hm.utilization_ratio(usage(a=100, zzz=900), {"a": 100}, 50)
    assert (ratio, utilization, raw) == (2.0, 100, 100)
    with pytest.raises(hm.CalculationError, match="no metrics returned matched known pods"):
        hm.utilization_ratio(usage(zzz=900), {"a": 100}, 50)


def test_average_value_target() -> None:
    pods = [pod("a", cpu=None), pod("b", cpu=None)]  # no requests needed for AverageValue
    got, average = hm.raw_resource_replicas(2, 100, "cpu", pods, usage(a=300, b=100), now=T0)
    assert (got, average) == (4, 200)
    # a missing pod counts as exactly the target on a scale-down
    got, average = hm.raw_resource_replicas(3, 100, "cpu", [*pods, pod("c", cpu=None)], usage(a=10, b=10), now=T0)
    assert average == 10 and got == 2  # (10+10+100)/3 = 40 -> ratio 0.4 -> ceil(1.2)


def test_requests_sum_over_containers_and_restartable_init_containers() -> None:
    p = pod("a", cpu="250m", containers=2)
    p["spec"]["initContainers"] = [
        {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "init", "resources": {"requests": {"cpu": "5"}}},
    ]
    assert hm.pod_requests([p], "cpu") == {"a": 600}
    assert hm.pod_requests([p], "cpu", container="c1") == {"a": 250}


def test_pod_metrics_from_the_metrics_api() -> None:
    items = [
        {
            "metadata": {"name": "a", "namespace": "ns"},
            "timestamp": stamp(-2),
            "window": "10s",
            "containers": [
                {"name": "app", "usage": {"cpu": "250m", "memory": "64Mi"}},
                {"name": "log", "usage": {"cpu": "12345678n", "memory": "1Ki"}},
            ],
        },
        {
            "metadata": {"name": "b"},
            "timestamp": stamp(-2),
            "window": "10s",
            "containers": [{"name": "app", "usage": {}}],
        },
        {"metadata": {"name": "c"}, "timestamp": stamp(-2), "window": "10s", "containers": []},
    ]
    got = hm.pod_metrics(items, "cpu")
    assert set(got) == {"a"}  # b lacks cpu, c has no containers
    assert got["a"] == hm.PodMetric(263, T0 - 2, 10.0)
    assert hm.pod_metrics(items[:1], "memory", container="app")["a"].value == 64 * 2**20 * 1000
    with pytest.raises(hm.CalculationError, match="container nope not present in metrics for pod ns/a"):
        hm.pod_metrics(items[:1], "cpu", container="nope")


# --- normalization without behavior -------------------------------------------------------------


def test_classic_downscale_stabilization_keeps_the_highest_recent_recommendation() -> None:
    history = hm.History()
    history.record_initial(5, T0)
    got, conds = hm.normalize(history, 5, 2, 1, 10, downscale_window=300, now=T0 + 15)
    assert got == 5 and conds[0].reason == "ScaleDownStabilized"
    got, _ = hm.normalize(history, 5, 2, 1, 10, downscale_window=300, now=T0 + 200)
    assert got == 5
    got, conds = hm.normalize(history, 5, 2, 1, 10, downscale_window=300, now=T0 + 301)
    assert got == 2 and conds[0].reason == "ReadyForNewScale"
    assert conds[1] == hm.Condition(
        "ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the acceptable range"
    )


def test_classic_limits_double_or_four_and_min_max() -> None:
    got, conds = hm.normalize(hm.History(), 1, 10, 1, 20, downscale_window=0, now=T0)
    assert got == 4 and (conds[1].status, conds[1].reason) == ("True", "ScaleUpLimit")
    got, conds = hm.normalize(hm.History(), 5, 10, 1, 20, downscale_window=0, now=T0)
    assert got == 10 and conds[1].status == "False"
    got, conds = hm.normalize(hm.History(), 5, 30, 1, 8, downscale_window=0, now=T0)
    assert got == 8 and conds[1].reason == "TooManyReplicas"
    got, conds = hm.normalize(hm.History(), 5, 0, 2, 8, downscale_window=0, now=T0)
    assert got == 2 and conds[1].reason == "TooFewReplicas"


# --- behaviors ------------------------------------------------------------------------------


def rules(policies: list[Obj], *, window: float = 0, select: str = "Max", up: bool = True) -> hm.ScalingRules:
    spec = {"stabilizationWindowSeconds": window, "selectPolicy": select, "policies": policies}
    return hm.scaling_rules(spec, up=up, downscale_stabilization=300)


UP_DEFAULT = hm.scaling_rules(None, up=True, downscale_stabilization=300)
DOWN_FAST = rules([{"type": "Percent", "value": 100, "periodSeconds": 15}], up=False)


def test_behavior_defaults() -> None:
    assert UP_DEFAULT.stabilization_window == 0 and UP_DEFAULT.select_policy == "Max"
    assert [p.type for p in UP_DEFAULT.policies] == ["Pods", "Percent"]
    down = hm.scaling_rules({"selectPolicy": "Min"}, up=False, downscale_stabilization=42)
    assert down.stabilization_window == 42 and down.select_policy == "Min" and down.policies[0].value == 100


@pytest.mark.parametrize(("select", "expected"), [("Max", 6), ("Min", 4), ("Disabled", 2)])
def test_scale_up_policies_select(select: str, expected: int) -> None:
    up = rules(
        [{"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 100, "periodSeconds": 60}],
        select=select,
    )
    got, conds = hm.normalize_with_behaviors(hm.History(), 2, 20, 1, 50, up=up, down=DOWN_FAST, now=T0)
    assert got == expected
    assert (conds[1].status, conds[1].reason) == ("True", "ScaleUpLimit")


def test_scale_up_rate_counts_the_events_of_the_period() -> None:
    up = rules([{"type": "Pods", "value": 4, "periodSeconds": 60}])
    history = hm.History()
    got, _ = hm.normalize_with_behaviors(history, 2, 20, 1, 50, up=up, down=DOWN_FAST, now=T0)
    assert got == 6
    history.store_scale_event(up, DOWN_FAST, 2, 6, T0)
    got, conds = hm.normalize_with_behaviors(history, 6, 20, 1, 50, up=up, down=DOWN_FAST, now=T0 + 30)
    assert got == 6 and conds[1].reason == "ScaleUpLimit"  # 4 pods already added in this 60 s period
    got, _ = hm.normalize_with_behaviors(history, 6, 20, 1, 50, up=up, down=DOWN_FAST, now=T0 + 61)
    assert got == 10


def test_scale_down_percent_policy() -> None:
    down = rules([{"type": "Percent", "value": 50, "periodSeconds": 60}], up=False)
    got, conds = hm.normalize_with_behaviors(hm.History(), 10, 1, 1, 20, up=UP_DEFAULT, down=down, now=T0)
    assert got == 5 and (conds[1].status, conds[1].reason) == ("True", "ScaleDownLimit")


def test_scale_down_min_policy_and_pods_policy() -> None:
    policies = [
        {"type": "Pods", "value": 1, "periodSeconds": 60},
        {"type": "Percent", "value": 50, "periodSeconds": 60},
    ]
    got, _ = hm.normalize_with_behaviors(
        hm.History(), 10, 1, 1, 20, up=UP_DEFAULT, down=rules(policies, up=False, select="Min"), now=T0
    )
    assert got == 9  # the smallest change
    got, _ = hm.normalize_with_behaviors(
        hm.History(), 10, 1, 1, 20, up=UP_DEFAULT, down=rules(policies, up=False, select="Max"), now=T0
    )
    assert got == 5  # the largest change
    got, _ = hm.normalize_with_behaviors(
        hm.History(), 10, 1, 1, 20, up=UP_DEFAULT, down=rules(policies, up=False, select="Disabled"), now=T0
    )
    assert got == 10


def test_scale_down_stabilization_window_with_behaviors() -> None:
    down = rules([{"type": "Percent", "value": 100, "periodSeconds": 15}], window=60, up=False)
    history = hm.History()
    history.record_initial(8, T0)
    got, conds = hm.normalize_with_behaviors(history, 8, 2, 1, 20, up=UP_DEFAULT, down=down, now=T0 + 15)
    assert got == 8 and conds[0] == hm.Condition(
        "AbleToScale",
        "True",
        "ScaleDownStabilized",
        "recent recommendations were higher than current one, applying the highest recent recommendation",
    )
    got, _ = hm.normalize_with_behaviors(history, 8, 3, 1, 20, up=UP_DEFAULT, down=down, now=T0 + 61)
    assert got == 3  # the 8 left the window; the highest within it now is 3 (2 at +15, 3 at +61)


def test_scale_up_stabilization_window() -> None:
    up = rules([{"type": "Percent", "value": 1000, "periodSeconds": 15}], window=30)
    history = hm.History()
    history.record_initial(2, T0)
    got, conds = hm.normalize_with_behaviors(history, 2, 9, 1, 20, up=up, down=DOWN_FAST, now=T0 + 10)
    assert got == 2 and conds[0].reason == "ScaleUpStabilized"
    got, _ = hm.normalize_with_behaviors(history, 2, 9, 1, 20, up=up, down=DOWN_FAST, now=T0 + 31)
    assert got == 9  # the lowest recommendation within 30 s is 9 now


def test_behavior_tolerance() -> None:
    up = hm.scaling_rules({"tolerance": "0.5"}, up=True, downscale_stabilization=300)
    tol = hm.tolerances_for(up, DOWN_FAST)
    assert tol == hm.Tolerances(scale_down=0.1, scale_up=0.5)
    pods = [pod(n) for n in "ab"]
    assert replicas(2, 50, pods, usage(a=70, b=70), tolerances=tol) == 2


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    conds = hm.set_condition([], hm.Condition("AbleToScale", "True", "A", "a"), "t1")
    conds = hm.set_condition(conds, hm.Condition("AbleToScale", "True", "B", "b"), "t2")
    assert conds == [
        {"type": "AbleToScale", "status": "True", "reason": "B", "message": "b", "lastTransitionTime": "t1"}
    ]
    conds = hm.set_condition(conds, hm.Condition("AbleToScale", "False", "C", "c"), "t3")
    assert conds[0]["lastTransitionTime"] == "t3"

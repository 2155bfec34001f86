"""Pure logic of serverless functions: autoscaler arithmetic, metering aggregation and durability,
the code check before deploy, the instance pod, and the runtime's encoding of return values."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from skiff.cli.fn import parse_since
from skiff.functions.autoscale import (
    ConcurrencyWindow,
    Decision,
    Load,
    Observation,
    Policy,
    decide,
    desired_instances,
    gb_seconds,
    pick_least_loaded,
)
from skiff.functions.instances import pod_failure, pod_manifest, pool_manifest
from skiff.functions.metering import Invocation, Meter, summarize
from skiff.functions.packaging import CodeError, Deployment, check_code, parse_trigger
from skiff.functions.runtime import encode
from skiff.functions.spec import FunctionSpec


@pytest.mark.parametrize(
    ("in_flight", "waiting", "concurrency", "lo", "hi", "want"),
    [
        (0, 0, 10, 0, 5, 0),  # idle: zero
        (0, 1, 10, 0, 5, 1),  # one held call: scale from zero
        (10, 1, 10, 0, 5, 2),  # one over capacity: another instance
        (50, 0, 10, 0, 3, 3),  # capped by maxScale
        (0, 0, 10, 2, 5, 2),  # minScale kept
        (1, 0, 100, 0, 5, 1),
    ],
    ids=["idle", "cold", "scale-out", "max", "min", "one"],
)
def test_desired_instances(in_flight: int, waiting: int, concurrency: int, lo: int, hi: int, want: int) -> None:
    assert desired_instances(Load(in_flight, waiting), concurrency=concurrency, min_scale=lo, max_scale=hi) == want


def obs(now: float, ready: int, demand: int, stable: float, panic: float, idle_for: float = 0.0) -> Observation:
    return Observation(now=now, ready=ready, demand=demand, stable=stable, panic=panic, idle_for=idle_for)


def test_scale_to_zero_only_after_the_idle_timeout() -> None:
    p = Policy(concurrency=10, max_scale=5, idle_timeout=30.0)
    assert decide(obs(100, 2, 0, 0.0, 0.0, idle_for=5), p).desired == 1  # idle, within the timeout: one kept
    assert decide(obs(100, 2, 0, 0.0, 0.0, idle_for=31), p).desired == 0
    assert decide(obs(100, 0, 1, 0.0, 0.0), p).desired == 1  # a held call: from zero at once
    assert decide(obs(100, 0, 0, 0.0, 0.0, idle_for=31), Policy(min_scale=2)).desired == 2  # minScale kept


def test_stable_window_sets_the_count_outside_panic() -> None:
    p = Policy(concurrency=10, max_scale=5)
    # 3 instances, 5 in flight now, averaging 5 over the stable window (12 over the panic one): down to 1
    assert decide(obs(100, 3, 5, 5.0, 12.0), p) == Decision(1, 0.0)
    # a dip right after a wave (the stable average still high): keep them
    assert decide(obs(100, 3, 5, 25.0, 5.0), p).desired == 3
    # held calls get instances at once, whatever the averages say; never past maxScale
    assert decide(obs(100, 1, 45, 1.0, 1.0), p).desired == 5


def test_panic_at_twice_the_capacity_holds_for_a_stable_window() -> None:
    p = Policy(concurrency=10, max_scale=10, stable_window=60.0)  # panic window 6 s, threshold 200 %
    assert p.panic_window == 6.0
    calm = decide(obs(100, 2, 30, 20.0, 39.0), p)  # 39 / (2 x 10) < 2: no panic
    assert not calm.panicking(100) and calm.desired == 3
    burst = decide(obs(100, 2, 30, 20.0, 40.0), p)  # 40 / (2 x 10) >= 2: panic, sized by the panic window
    assert burst.panicking(100) and burst == Decision(4, 160.0)
    # the burst is over (the stable average says 1) but no scale-down while panicking
    later = decide(obs(130, 4, 2, 8.0, 2.0), p, burst.panic_until)
    assert later == Decision(4, 160.0)
    assert decide(obs(130, 4, 0, 8.0, 0.0, idle_for=60), p, burst.panic_until).desired == 4  # not even to zero
    # a stable window without reaching the threshold again: panic ends, the stable window decides
    assert decide(obs(161, 4, 2, 8.0, 2.0), p, burst.panic_until) == Decision(1, 0.0)
    # the threshold reached again while panicking extends it
    assert decide(obs(150, 4, 80, 30.0, 85.0), p, 160.0) == Decision(9, 210.0)


def test_windows_are_per_function_settings() -> None:
    fn = FunctionSpec.from_object({"metadata": {"name": "f", "namespace": "n"},
                                   "spec": {"handler": "h.handle", "stableWindow": 10, "panicWindowPercentage": 20,
                                            "panicThresholdPercentage": 150}})  # fmt: skip
    assert fn.policy.panic_window == 2.0 and fn.policy.stable_window == 10.0
    assert decide(obs(0, 1, 15, 15.0, 15.0), fn.policy).panic_until == 10.0  # 15 / 10 >= 1.5
    default = FunctionSpec.from_object({"metadata": {"name": "f"}, "spec": {"handler": "h.handle"}}).policy
    assert (default.stable_window, default.panic_window, default.panic_threshold_percentage) == (60.0, 6.0, 200.0)


def test_concurrency_window_is_time_weighted() -> None:
    w = ConcurrencyWindow(0.0, keep=60.0)
    assert w.average(5.0, 10.0) == 0.0
    w.record(10.0, 30)  # 30 in flight from t=10 to t=20, then 5
    w.record(20.0, 5)
    assert w.average(20.0, 10.0) == pytest.approx(30.0)
    assert w.average(30.0, 10.0) == pytest.approx(5.0)
    assert w.average(30.0, 20.0) == pytest.approx((300 + 50) / 20)
    assert w.average(25.0, 1.0) == pytest.approx(5.0)
    for t in range(21, 200):  # old checkpoints are dropped, the average stays right
        w.record(float(t), 5)
    assert w.average(199.0, 60.0) == pytest.approx(5.0) and len(w.times) < 200


def test_least_in_flight_with_room() -> None:
    assert pick_least_loaded([3, 1, 2], 10) == 1
    assert pick_least_loaded([10, 10], 10) is None
    assert pick_least_loaded([], 10) is None
    assert pick_least_loaded([10, 9], 10) == 1


def test_gb_seconds() -> None:
    assert gb_seconds(128 * 2**20, 2.0) == pytest.approx(0.25)


def test_summarize_per_function() -> None:
    recs = [Invocation("a", "f", 0, 0.5, 200, 0.1), Invocation("a", "f", 1, 0.5, 500, 0.1),
            Invocation("a", "f", 2, 1.0, 429, 0.0), Invocation("b", "f", 0, 2.0, 200, 0.2)]  # fmt: skip
    lines = summarize(recs)
    assert [(u.namespace, u.function, u.invocations, u.errors) for u in lines] == [("a", "f", 3, 2), ("b", "f", 1, 0)]
    assert lines[0].duration == pytest.approx(2.0) and lines[0].gb_seconds == pytest.approx(0.2)


def test_meter_records_survive_reopening(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, int]:
        meter = Meter(tmp_path / "inv.sqlite")
        await meter.open()
        meter.record(Invocation("ns", "fn", 100.0, 0.1, 200, 0.01))
        meter.record(Invocation("ns", "fn", 200.0, 0.1, 500, 0.01))
        await meter.close()
        again = Meter(tmp_path / "inv.sqlite")
        await again.open()
        total = len(await again.records())
        recent = len(await again.records(since=150.0))
        other = len(await again.records(namespace="other"))
        await again.close()
        return total, recent, other

    assert asyncio.run(scenario()) == (2, 1, 0)


def test_code_check() -> None:
    check_code("def handle(event, context):\n    return 1\n", "h.py", "handle")
    with pytest.raises(CodeError, match="SyntaxError"):
        check_code("def handle(event, context)\n    return 1\n", "h.py", "handle")
    with pytest.raises(CodeError, match=r"no handler function 'handle'.*it defines other"):
        check_code("def other(e, c):\n    pass\n", "h.py", "handle")
    with pytest.raises(CodeError, match=r"SyntaxError.*outside function"):
        check_code("return 1\n", "h.py", "handle")
    with pytest.raises(CodeError, match="module name"):
        Deployment("x", "default", "def handle(e, c): pass\n", "my-handler.py").check()


def test_deployment_objects() -> None:
    dep = Deployment("hello", "ns", "def handle(e, c): pass\n", "hello.py", settings={"idleTimeout": 5})
    fn = dep.function()
    assert fn["spec"]["handler"] == "hello.handle" and fn["spec"]["idleTimeout"] == 5
    assert fn["spec"]["code"] == {"configMap": {"name": "hello-code"}}
    assert dep.config_map()["data"] == {"hello.py": "def handle(e, c): pass\n"}
    assert parse_trigger("cron=*/5 * * * *") == {"type": "cron", "schedule": "*/5 * * * *"}
    assert parse_trigger("event=ConfigMap,app=x") == {"type": "event", "kind": "ConfigMap", "labelSelector": "app=x"}
    assert parse_trigger("http") == {"type": "http"}
    assert parse_trigger("topic=orders") == {"type": "topic", "topic": "orders"}
    with pytest.raises(ValueError, match="a trigger is"):
        parse_trigger("sqs")


def test_instance_pod() -> None:
    obj = {"metadata": {"name": "f", "namespace": "n", "uid": "u"},
           "spec": {"handler": "h.handle", "code": {"configMap": {"name": "f-code"}}}}  # fmt: skip
    spec = FunctionSpec.from_object(obj)
    pod = pod_manifest(spec, image="python", source="print()", node_name="n1")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert pod["spec"]["volumes"] == [{"name": "code", "configMap": {"name": "f-code"}}]
    assert pod["spec"]["nodeName"] == "n1" and pod["spec"]["containers"][0]["image"] == "python"
    assert spec.memory_bytes == 128 * 2**20
    dead = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}
    assert "exited with code 1" in pod_failure(dead)
    assert pod_failure({"status": {"phase": "Pending"}}) == ""


def test_runtime_encoding_and_since() -> None:
    assert encode({"a": 1}) == (200, "application/json", b'{"a": 1}')
    assert encode(None)[0] == 204 and encode("hi")[2] == b"hi"
    assert parse_since("2h", 10_000.0) == 10_000.0 - 7200
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday", 0.0)


def test_trigger_schedules() -> None:
    from datetime import UTC, datetime

    from skiff.functions.triggers import next_fire, resource_of_kind

    assert next_fire("@every 2s", 100.0) == 102.0
    t0 = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC).timestamp()
    assert next_fire("*/5 * * * *", t0) == datetime(2026, 1, 1, 12, 5, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="expected exactly 5 fields"):
        next_fire("every minute", t0)
    kind = resource_of_kind("ConfigMap")
    assert kind is not None and kind.plural == "configmaps"
    assert resource_of_kind("Nope") is None


def test_pool_takes_plain_functions_only() -> None:
    from skiff.functions.instances import load_request, poolable

    base = {"metadata": {"name": "f", "namespace": "n", "uid": "u"}, "spec": {"handler": "h.handle"}}
    assert poolable(FunctionSpec.from_object(base))
    for extra in ({"code": {"image": "my/fn"}}, {"resources": {"limits": {"memory": "1Gi"}}},
                  {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}):  # fmt: skip
        assert not poolable(FunctionSpec.from_object({**base, "spec": {**base["spec"], **extra}}))
    spec = FunctionSpec.from_object({**base, "spec": {"handler": "h.handle", "env": [{"name": "A", "value": "1"}]}})
    body = load_request(spec, {"h.py": "def handle(e, c): pass\n"})
    assert body["env"] == {"A": "1", "SKIFF_FN_NAME": "f", "SKIFF_FN_NAMESPACE": "n"}
    assert body["files"] == {"h.py": "def handle(e, c): pass\n"} and body["handler"] == "h.handle"


def test_topic_store_retries_then_gives_up(tmp_path: Path) -> None:
    from skiff.functions import topics

    async def scenario() -> tuple[int, int, int, int]:
        store = topics.TopicStore(tmp_path / "t.sqlite")
        await store.open()
        assert await store.publish("ns", "orders", ["a", "b"], b"{}") == 2
        first = await store.due()
        await store.ack(first[0])
        for _ in range(topics.MAX_ATTEMPTS):  # b fails every time
            await store._run("UPDATE deliveries SET next_at = 0")  # due again at once
            (d,) = await store.due()
            await store.retry(d)
        dead = len(await store.due())
        pending = await store.pending("ns", "orders")
        await store.close()
        again = topics.TopicStore(tmp_path / "t.sqlite")  # what is left survives a reopen
        await again.open()
        rows = (await again._run("SELECT COUNT(*) FROM deliveries"))[0][0]
        await again.close()
        return len(first), dead, pending, rows

    assert asyncio.run(scenario()) == (2, 0, 0, 1)
    assert topics.backoff(1) == 0.5 and topics.backoff(3) == 2.0 and topics.backoff(20) == 60.0


def test_takeover_after_a_gateway_restart() -> None:
    from skiff.functions.instances import takeover

    fn = FunctionSpec.from_object({"metadata": {"name": "f", "namespace": "n", "uid": "u"},
                                   "spec": {"handler": "h.handle", "code": {"inline": "x = 1"}}})  # fmt: skip
    pod = pod_manifest(fn, image="python", source="print()")
    pod["metadata"]["name"] = "f-abc"
    pod["status"] = {"phase": "Running", "podIP": "10.0.0.7"}
    inst = takeover(pod, fn)
    assert inst is not None and (inst.pod, inst.ip, inst.token) == ("f-abc", "10.0.0.7", "")
    assert takeover(pod, None) is None  # its function is gone
    changed = FunctionSpec.from_object({"metadata": {"name": "f", "namespace": "n", "uid": "u"},
                                        "spec": {"handler": "h.handle", "code": {"inline": "x = 2"}}})  # fmt: skip
    assert takeover(pod, changed) is None  # the code changed while no gateway ran: stale
    assert takeover({**pod, "status": {"phase": "Pending"}}, fn) is None  # no IP yet
    dead = {**pod, "status": {"podIP": "10.0.0.7", "phase": "Failed"}}
    assert takeover(dead, fn) is None
    warm = pool_manifest("n", image="python", source="print()", token="t0k")
    warm["metadata"]["name"] = "fn-warm-x"
    warm["status"] = {"phase": "Running", "podIP": "10.0.0.8"}
    inst = takeover(warm, None)
    assert inst is not None and inst.token == "t0k"


def test_function_status_and_its_ready_condition() -> None:
    from skiff.functions.status import function_status, with_transition

    running = function_status(replicas=2, invocations=7, errors=1, failure="")
    assert running["conditions"][0]["reason"] == "Running" and running["replicas"] == 2
    body, since = with_transition(running, ("", ""))
    assert since[0] == "True" and body["conditions"][0]["lastTransitionTime"] == since[1]
    idle = function_status(replicas=0, invocations=7, errors=1, failure="")
    assert idle["conditions"][0]["reason"] == "ScaledToZero"
    assert with_transition(idle, ("True", "then"))[1] == ("True", "then")  # still Ready: the time stays
    failed = function_status(replicas=0, invocations=7, errors=1, failure="no module x")
    assert failed["conditions"][0] == {"type": "Ready", "status": "False", "reason": "InstanceFailed",
                                       "message": "no module x"}  # fmt: skip


def test_server_gateway_child_is_reachable_by_the_local_nodes_pods(tmp_path: Path) -> None:
    from skiff.cli.components import ClusterOptions
    from skiff.cli.fn import gateway_spec
    from skiff.cli.local_agent import LocalAgentOptions

    agent = LocalAgentOptions(node_name="n1", pod_cidr="10.42.0.0/24", bridge="skiff0", netns_prefix="skiff-",
                              cgroup_parent="skiff", registry="127.0.0.1:5000")  # fmt: skip
    argv = gateway_spec(8070, "kc", tmp_path, ClusterOptions(agent=agent, gateway_args=("--auth=token",))).argv
    flags = dict(itertools.pairwise(argv))
    assert (flags["--bind-address"], flags["--advertise-url"]) == ("0.0.0.0", "http://10.42.0.1:8070")
    assert argv[-1] == "--auth=token"  # --gateway-arg passed through, after the server's own choices
    alone = gateway_spec(8070, "kc", tmp_path, ClusterOptions(agent=None)).argv
    assert "--advertise-url" not in alone and "--bind-address" not in alone  # no local pods: loopback as before

"""Pure logic of serverless functions: autoscaler arithmetic, metering aggregation and durability,
the code check before deploy, the instance pod, and the runtime's encoding of return values."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from skiff.cli.fn import parse_since
from skiff.functions.autoscale import Load, desired_instances, gb_seconds, pick_least_loaded, scale_to
from skiff.functions.instances import pod_failure, pod_manifest
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


def test_scale_down_waits_for_the_idle_timeout() -> None:
    kw = {"concurrency": 10, "min_scale": 0, "max_scale": 5, "idle_timeout": 30.0}
    assert scale_to(Load(0, 0), 2, idle_for=5, **kw) == 2  # type: ignore[arg-type]
    assert scale_to(Load(0, 0), 2, idle_for=31, **kw) == 0  # type: ignore[arg-type]
    assert scale_to(Load(25, 0), 1, idle_for=0, **kw) == 3  # type: ignore[arg-type]


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


def test_stable_window_scales_down_to_the_average() -> None:
    from skiff.functions.autoscale import ConcurrencyWindow

    w = ConcurrencyWindow()
    assert w.average(0.0, 10.0) is None
    for t in range(21):  # 20 s at 30 in flight, then 10 s at 5
        w.record(float(t), 30 if t < 10 else 5)
    assert w.average(20.0, 10.0) == pytest.approx((5 * 11) / 11)
    assert w.average(20.0, 30.0) is None  # the window is not covered yet
    kw = {"idle_timeout": 10.0, "concurrency": 10, "min_scale": 0, "max_scale": 5}
    # 3 instances, 5 in flight now, averaging 5 over the stable window: down to 1
    assert scale_to(Load(5, 0), 3, idle_for=0.0, stable_average=5.0, **kw) == 1  # type: ignore[arg-type]
    # a dip right after a wave (average still high): keep them
    assert scale_to(Load(5, 0), 3, idle_for=0.0, stable_average=25.0, **kw) == 3  # type: ignore[arg-type]
    # a burst goes up at once, whatever the average says
    assert scale_to(Load(45, 0), 1, idle_for=0.0, stable_average=1.0, **kw) == 5  # type: ignore[arg-type]


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

"""The Priority admission plugin without a server: priorities from classes, refusals, the one global default."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.api import errors
from skiff.apiserver.admission_plugins import Attributes, Chain, Plugin
from skiff.apiserver.admission_plugins.priority import (
    Priority,
    Rejected,
    default_class,
    default_conflict,
    keep_on_update,
    resolve_pod_priority,
)
from skiff.apiserver.builtin import builtin_types

Obj = dict[str, Any]
TYPES = {(rt.group, rt.version, rt.plural): rt for rt in builtin_types()}
PODS = TYPES[("", "v1", "pods")]
CLASSES = TYPES[("scheduling.k8s.io", "v1", "priorityclasses")]
DEPLOYMENTS = TYPES[("apps", "v1", "deployments")]


def pc(name: str, value: int, *, default: bool = False, policy: str | None = "PreemptLowerPriority") -> Obj:
    obj: Obj = {"metadata": {"name": name}, "value": value}
    if default:
        obj["globalDefault"] = True
    if policy is not None:
        obj["preemptionPolicy"] = policy
    return obj


class FakeClasses:
    def __init__(self, *classes: Obj) -> None:
        self.classes = {c["metadata"]["name"]: c for c in classes}
        self.lists = 0

    async def get(self, name: str) -> Obj | None:
        return self.classes.get(name)

    async def list(self) -> list[Obj]:
        self.lists += 1
        return list(self.classes.values())


def pod(name: str = "web", **spec: Any) -> Obj:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "nginx"}], **spec}}


# --- the pure rules -----------------------------------------------------------------------------


def test_a_named_class_gives_its_value_and_policy() -> None:
    spec: Obj = {"priorityClassName": "high"}
    resolve_pod_priority(spec, pc("high", 1000, policy="Never"), named=True)
    assert spec == {"priorityClassName": "high", "priority": 1000, "preemptionPolicy": "Never"}


def test_the_global_default_gives_its_name_too() -> None:
    spec: Obj = {}
    resolve_pod_priority(spec, pc("standard", 50, default=True), named=False)
    assert spec == {"priorityClassName": "standard", "priority": 50, "preemptionPolicy": "PreemptLowerPriority"}


def test_no_class_at_all_gives_zero_and_preempt_lower_priority() -> None:
    spec: Obj = {"priorityClassName": ""}
    resolve_pod_priority(spec, None, named=False)
    assert spec == {"priority": 0, "preemptionPolicy": "PreemptLowerPriority"}


def test_a_class_without_policy_leaves_the_pods_policy() -> None:
    spec: Obj = {"priorityClassName": "old", "preemptionPolicy": "Never"}
    resolve_pod_priority(spec, pc("old", 7, policy=None), named=True)
    assert spec == {"priorityClassName": "old", "priority": 7, "preemptionPolicy": "Never"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"priority": 5},
            "the integer value of priority (5) must not be provided in pod spec; "
            "priority admission controller computed 1000 from the given PriorityClass name",
        ),
        (
            {"preemptionPolicy": "Never"},
            "the string value of PreemptionPolicy (Never) must not be provided in pod spec; "
            "priority admission controller computed PreemptLowerPriority from the given PriorityClass name",
        ),
    ],
    ids=["priority", "preemptionPolicy"],
)
def test_values_the_pod_sets_must_match(given: Obj, message: str) -> None:
    with pytest.raises(Rejected) as err:
        resolve_pod_priority({"priorityClassName": "high", **given}, pc("high", 1000), named=True)
    assert str(err.value) == message


def test_values_that_match_are_accepted() -> None:
    spec: Obj = {"priorityClassName": "high", "priority": 1000, "preemptionPolicy": "PreemptLowerPriority"}
    resolve_pod_priority(spec, pc("high", 1000), named=True)
    assert spec["priority"] == 1000


def test_of_several_defaults_the_lowest_wins() -> None:
    classes = [pc("a", 100, default=True), pc("b", 10, default=True), pc("c", 1), pc("d", 5, default=False)]
    found = default_class(classes)
    assert found is not None and found["metadata"]["name"] == "b"
    assert default_class([pc("c", 1)]) is None


def test_only_one_global_default() -> None:
    existing = pc("standard", 50, default=True)
    message = "PriorityClass standard is already marked as default. Only one default can exist"
    assert default_conflict(pc("other", 1, default=True), existing, creating=True) == message
    assert default_conflict(pc("other", 1, default=True), existing, creating=False) == message
    assert default_conflict(pc("standard", 50, default=True), existing, creating=False) is None
    assert default_conflict(pc("other", 1), existing, creating=True) is None
    assert default_conflict(pc("other", 1, default=True), None, creating=True) is None


def test_an_update_keeps_what_creation_set() -> None:
    spec: Obj = {"containers": []}
    keep_on_update(spec, {"priority": 1000, "preemptionPolicy": "Never"})
    assert spec == {"containers": [], "priority": 1000, "preemptionPolicy": "Never"}
    spec = {"priority": 3}
    keep_on_update(spec, {"priority": 1000})
    assert spec == {"priority": 3}  # pod validation refuses the change, not admission


# --- the plugin ----------------------------------------------------------------------------------


async def test_unknown_class_is_forbidden_as_kubernetes_says() -> None:
    plugin = Priority(FakeClasses())
    with pytest.raises(errors.Forbidden) as err:
        await plugin.admit(Attributes("CREATE", PODS, pod("x", priorityClassName="foo")))
    assert err.value.code == 403
    assert str(err.value) == 'pods "x" is forbidden: no PriorityClass with name foo was found'


async def test_generate_name_pods_are_named_by_their_prefix() -> None:
    plugin = Priority(FakeClasses(pc("high", 1000)))
    obj = {"metadata": {"generateName": "web-"}, "spec": {"priority": 1}}
    with pytest.raises(errors.Forbidden) as err:
        await plugin.admit(Attributes("CREATE", PODS, obj))
    assert str(err.value).startswith('pods "web-" is forbidden: the integer value of priority (1)')


async def test_plugin_fills_in_the_default_class() -> None:
    classes = FakeClasses(pc("standard", 50, default=True), pc("high", 1000))
    obj = pod()
    await Priority(classes).admit(Attributes("CREATE", PODS, obj))
    assert (obj["spec"]["priorityClassName"], obj["spec"]["priority"]) == ("standard", 50)


async def test_plugin_on_update_keeps_the_old_priority() -> None:
    old = pod(priority=1000, priorityClassName="high")
    new = pod(priorityClassName="high")
    await Priority(FakeClasses()).admit(Attributes("UPDATE", PODS, new, old))
    assert new["spec"]["priority"] == 1000


async def test_second_global_default_is_forbidden() -> None:
    plugin = Priority(FakeClasses(pc("standard", 50, default=True)))
    with pytest.raises(errors.Forbidden) as err:
        await plugin.validate(Attributes("CREATE", CLASSES, pc("other", 1, default=True)))
    assert str(err.value) == (
        'priorityclasses.scheduling.k8s.io "other" is forbidden: '
        "PriorityClass standard is already marked as default. Only one default can exist"
    )
    await plugin.validate(Attributes("UPDATE", CLASSES, pc("standard", 50, default=True)))


class Recorder(Plugin):
    resources = frozenset({("", "pods")})

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def admit(self, attrs: Attributes) -> None:
        self.seen.append(f"admit {attrs.resource.plural}")

    async def validate(self, attrs: Attributes) -> None:
        self.seen.append(f"validate {attrs.resource.plural}")


async def test_chain_calls_plugins_only_for_their_resources() -> None:
    recorder = Recorder()
    chain = Chain([recorder])
    for rt in (PODS, DEPLOYMENTS):
        await chain.admit(Attributes("CREATE", rt, {"metadata": {}}))
        await chain.validate(Attributes("CREATE", rt, {"metadata": {}}))
    assert recorder.seen == ["admit pods", "validate pods"]

"""The Priority admission plugin: a pod's `spec.priority` comes from its PriorityClass, never from its author.

As Kubernetes' `plugin/pkg/admission/priority`: on pod create the class
named by `spec.priorityClassName` (or, when none is named, the class marked
`globalDefault`, whose name is then written into the pod) gives
`spec.priority` and `spec.preemptionPolicy`; no class at all gives priority 0
and PreemptLowerPriority. An unknown class, or a priority or preemption
policy the pod sets that differs from the computed one, is a 403. On update
the values set at creation are kept. For PriorityClasses it checks that at
most one is the global default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from skiff.apiserver.admission_plugins.chain import Attributes, Plugin, forbidden
from skiff.apiserver.priorityclass import DEFAULT_PREEMPTION_POLICY, GROUP, PLURAL

Obj = dict[str, Any]

DEFAULT_PRIORITY = 0  # scheduling.DefaultPriorityWhenNoDefaultClassExists


class PriorityClasses(Protocol):
    """Read access to the stored PriorityClasses (Kubernetes' lister)."""

    async def get(self, name: str) -> Obj | None: ...

    async def list(self) -> list[Obj]: ...


class Rejected(Exception):
    """The pod asks for something the Priority plugin refuses; the message is Kubernetes'."""


def default_class(classes: Iterable[Obj]) -> Obj | None:
    """The global default class; of several (a race), the one of lowest value, as Kubernetes picks."""
    found: Obj | None = None
    for pc in classes:
        if pc.get("globalDefault") is True and (found is None or found.get("value", 0) > pc.get("value", 0)):
            found = pc
    return found


def resolve_pod_priority(spec: Obj, pc: Obj | None, *, named: bool) -> None:
    """Fill `spec.priority` (and `preemptionPolicy`, and for the default class its name) from `pc`.

    `pc` is the class the pod named (`named`) or the global default (None:
    there is none). Raises `Rejected` when the pod set different values.
    """
    name, priority = "", DEFAULT_PRIORITY
    policy: str | None = DEFAULT_PREEMPTION_POLICY
    if pc is not None:
        name, priority, policy = str(pc["metadata"]["name"]), pc.get("value", 0), pc.get("preemptionPolicy")
    if not named:
        if name:
            spec["priorityClassName"] = name
        else:
            spec.pop("priorityClassName", None)  # "" is omitted, as Go's omitempty does
    given = spec.get("priority")
    if given is not None and given != priority:
        raise Rejected(
            f"the integer value of priority ({given}) must not be provided in pod spec; "
            f"priority admission controller computed {priority} from the given PriorityClass name"
        )
    spec["priority"] = priority
    if policy is not None:
        given_policy = spec.get("preemptionPolicy")
        if given_policy is not None and given_policy != policy:
            raise Rejected(
                f"the string value of PreemptionPolicy ({given_policy}) must not be provided in pod spec; "
                f"priority admission controller computed {policy} from the given PriorityClass name"
            )
        spec["preemptionPolicy"] = policy


def keep_on_update(spec: Obj, old_spec: Obj) -> None:
    """An update that leaves out priority or preemptionPolicy keeps the values set at creation."""
    for key in ("priority", "preemptionPolicy"):
        if spec.get(key) is None and old_spec.get(key) is not None:
            spec[key] = old_spec[key]


def default_conflict(pc: Obj, existing: Obj | None, *, creating: bool) -> str | None:
    """Why `pc` may not be marked globalDefault while `existing` is the default (None: it may)."""
    if pc.get("globalDefault") is not True or existing is None:
        return None
    existing_name = existing["metadata"]["name"]
    if creating or existing_name != pc["metadata"].get("name"):
        return f"PriorityClass {existing_name} is already marked as default. Only one default can exist"
    return None


class Priority(Plugin):
    name = "Priority"
    resources = frozenset({("", "pods"), (GROUP, PLURAL)})

    def __init__(self, classes: PriorityClasses) -> None:
        self.classes = classes

    async def admit(self, attrs: Attributes) -> None:
        if attrs.resource.plural != "pods":
            return
        spec = attrs.obj.get("spec")
        if not isinstance(spec, dict):
            return
        if attrs.operation == "UPDATE":
            old_spec = (attrs.old or {}).get("spec")
            if isinstance(old_spec, dict):
                keep_on_update(spec, old_spec)
            return
        name = spec.get("priorityClassName") or ""
        if name:
            pc = await self.classes.get(str(name))
            if pc is None:
                raise forbidden(attrs, f"no PriorityClass with name {name} was found")
        else:
            pc = default_class(await self.classes.list())
        try:
            resolve_pod_priority(spec, pc, named=bool(name))
        except Rejected as exc:
            raise forbidden(attrs, str(exc)) from None

    async def validate(self, attrs: Attributes) -> None:
        if attrs.resource.plural != PLURAL or attrs.obj.get("globalDefault") is not True:
            return
        why = default_conflict(
            attrs.obj, default_class(await self.classes.list()), creating=attrs.operation == "CREATE"
        )
        if why is not None:
            raise forbidden(attrs, why)

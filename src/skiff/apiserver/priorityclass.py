"""scheduling.k8s.io/v1 PriorityClass: its strategy, its validation and the classes every cluster has.

A PriorityClass maps a name to the integer a pod gets as `spec.priority`
(the Priority admission plugin, `admission_plugins.priority`, does the
mapping). As in Kubernetes (`pkg/apis/scheduling/validation`,
`pkg/registry/scheduling/priorityclass`): `value` and `preemptionPolicy`
never change, user classes stay at or below 1,000,000,000, names starting
with `system-` are reserved for the two system classes, and those two are
created when the server starts (the `scheduling/bootstrap-system-priority-
classes` post-start hook) and cannot be deleted by name.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from skiff.api import errors, validation
from skiff.apiserver.options import WriteOptions
from skiff.apiserver.strategy import FieldErrors, Strategy

if TYPE_CHECKING:
    from skiff.apiserver.registry import Registry
    from skiff.apiserver.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]

GROUP, VERSION, PLURAL = "scheduling.k8s.io", "v1", "priorityclasses"
SYSTEM_PREFIX = "system-"
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_CRITICAL_PRIORITY = 2 * HIGHEST_USER_DEFINABLE_PRIORITY
PREEMPTION_POLICIES = ["PreemptLowerPriority", "Never"]
DEFAULT_PREEMPTION_POLICY = "PreemptLowerPriority"

# Kubernetes' systemPriorityClasses (pkg/apis/scheduling/v1/helpers.go), in its order
SYSTEM_CLASSES: tuple[Obj, ...] = (
    {
        "name": "system-node-critical",
        "value": SYSTEM_CRITICAL_PRIORITY + 1000,
        "description": "Used for system critical pods that must not be moved from their current node.",
    },
    {
        "name": "system-cluster-critical",
        "value": SYSTEM_CRITICAL_PRIORITY,
        "description": "Used for system critical pods that must run in the cluster, "
        "but can be moved to another node if necessary.",
    },
)
SYSTEM_NAMES = frozenset(c["name"] for c in SYSTEM_CLASSES)


def known_system_class_error(name: str, value: Any, global_default: bool) -> str | None:
    """Why `name`/`value`/`globalDefault` is not exactly one of the system classes (None: it is)."""
    for spc in SYSTEM_CLASSES:
        if spc["name"] == name:
            if spc["value"] != value:
                return f"value of {name} PriorityClass must be {spc['value']}"
            if global_default:  # no system class is the global default
                return f"globalDefault of {name} PriorityClass must be false"
            return None
    return f"{name} is not a known system priority class"


def validate_priority_class(pc: Obj) -> FieldErrors:
    """ValidatePriorityClass, less the metadata rules every kind shares."""
    errs: FieldErrors = []
    name = str((pc.get("metadata") or {}).get("name") or "")
    value = pc.get("value", 0)
    if name.startswith(SYSTEM_PREFIX):
        why = known_system_class_error(name, value, pc.get("globalDefault") is True)
        if why is not None:
            errs.append(
                validation.forbidden(
                    "metadata.name",
                    f"priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. "
                    f"error: {why}",
                )
            )
    elif isinstance(value, int) and value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errs.append(
            validation.forbidden(
                "value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            )
        )
    policy = pc.get("preemptionPolicy")
    if policy is not None:
        if policy == "":
            errs.append(validation.required("preemptionPolicy"))
        elif policy not in PREEMPTION_POLICIES:
            errs.append(validation.not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES))
    return errs


def validate_priority_class_update(new: Obj, old: Obj) -> FieldErrors:
    """ValidatePriorityClassUpdate: `value` and `preemptionPolicy` are fixed at creation."""
    errs: FieldErrors = []
    if new.get("value", 0) != old.get("value", 0):
        errs.append(validation.forbidden("value", "may not be changed in an update."))
    if new.get("preemptionPolicy") != old.get("preemptionPolicy"):
        errs.append(validation.invalid("preemptionPolicy", new.get("preemptionPolicy"), "field is immutable"))
    return errs


class PriorityClassStrategy(Strategy):
    """Generation 1 at creation and never bumped (Kubernetes' PrepareForUpdate does nothing)."""

    def __init__(self) -> None:
        super().__init__(tracks_generation=False)

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["metadata"]["generation"] = 1
        obj.setdefault("value", 0)  # an int32 without omitempty: Go always writes it

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        new.setdefault("value", 0)
        if "generation" in old["metadata"]:
            new["metadata"]["generation"] = old["metadata"]["generation"]

    def validate(self, obj: Obj) -> FieldErrors:
        return validate_priority_class(obj)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        # ValidatePriorityClassUpdate does not re-run ValidatePriorityClass: only what may not change
        return validate_priority_class_update(new, old)

    def refuse_delete(self, name: str) -> str | None:
        if name in SYSTEM_NAMES:
            return "this is a system priority class and cannot be deleted"
        return None


async def ensure_system_priority_classes(store: Store, registry: Registry) -> None:
    """Create the system classes that are missing, as kube-apiserver's post-start hook does."""
    rt = registry.get(GROUP, VERSION, PLURAL)
    assert rt is not None
    for spc in SYSTEM_CLASSES:
        body: Obj = {
            "metadata": {"name": spc["name"]},
            "value": spc["value"],
            "description": spc["description"],
        }
        try:
            await store.create(rt, None, body, WriteOptions())
        except errors.AlreadyExists:
            continue
        log.info("created PriorityClass %s with value %d", spc["name"], spc["value"])

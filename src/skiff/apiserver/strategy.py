"""Per-kind strategies: the small part of each resource the generic store cannot know.

As in Kubernetes' `registry/*/strategy.go`, a strategy prepares an object for
create and update (reset status, bump generation), validates it, lists the
fields a field selector may use, and says which fields may never change.
Most kinds need nothing beyond `Strategy` with options; kinds with real
rules (pods, namespaces, deployments…) subclass it with a few lines.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from skiff.api import validation
from skiff.api.cron import CronError, load_time_zone, parse
from skiff.api.seccomp_validation import validate_pod_seccomp

Obj = dict[str, Any]
FieldErrors = list[tuple[str, str, str]]
Finish = Callable[[bool], Awaitable[None]]
"""Ends what a `begin_*` hook started: called with True once the write is stored, False if it failed."""


def get_path(obj: Obj, dotted: str) -> Any:
    cur: Any = obj
    for part in _parts(dotted):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


@lru_cache(maxsize=1024)
def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Strategy:
    """Defaults suit most kinds: spec/status objects with generation tracking."""

    # DELETE answers the deleted object (pods, namespaces) rather than a Success Status
    return_deleted_object = False
    # subresources that are a slice of the object itself, read and written like it (CSRs add approval)
    object_subresources: tuple[str, ...] = ("status",)

    def __init__(
        self,
        *,
        has_status: bool = False,
        tracks_generation: bool = True,
        selectable_fields: tuple[str, ...] = (),
        immutable_fields: tuple[str, ...] = (),
        name_validator: Callable[[str], list[str]] = validation.dns1123_subdomain,
        create_only: bool = False,
    ) -> None:
        self.has_status = has_status
        self.tracks_generation = tracks_generation
        self.selectable_fields = ("metadata.name", "metadata.namespace", *selectable_fields)
        self.immutable_fields = immutable_fields
        self.name_validator = name_validator
        # a virtual kind (SelfSubjectAccessReview…): create answers, nothing is stored
        self.create_only = create_only

    # --- create / update preparation -------------------------------------------------
    def prepare_for_create(self, obj: Obj) -> None:
        if self.has_status:
            obj["status"] = self.initial_status(obj)
        if self.tracks_generation:
            obj["metadata"]["generation"] = 1

    def initial_status(self, obj: Obj) -> Any:
        return {}

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        """A main-resource update: status is kept as it was; generation bumps on spec change."""
        if self.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if self.tracks_generation:
            gen = old["metadata"].get("generation", 1)
            if _spec_of(new) != _spec_of(old):
                gen += 1
            new["metadata"]["generation"] = gen

    def prepare_for_status_update(self, new: Obj, old: Obj) -> Obj:
        """A status update changes status only (and nothing of spec or metadata but labels/annotations)."""
        merged = copy.deepcopy(old)
        merged["status"] = new.get("status", {})
        meta = merged["metadata"]
        meta["resourceVersion"] = new["metadata"].get("resourceVersion", meta.get("resourceVersion"))
        return merged

    def prepare_for_subresource_update(self, subresource: str, new: Obj, old: Obj) -> Obj:
        """The object an update of one of `object_subresources` stores (status: `prepare_for_status_update`)."""
        return self.prepare_for_status_update(new, old)

    def record_requester(self, obj: Obj, user: Any) -> None:
        """Note who created `obj`, for kinds that keep it (a CSR's spec.username and groups)."""

    async def authorize_write(self, obj: Obj, old: Obj | None, user: Any) -> None:
        """Refuse (raise Forbidden) a create or update the requester may not make for what it holds
        (RBAC's escalation check); most kinds leave that to the authorizer."""

    # --- validation ---------------------------------------------------------------------
    def validate(self, obj: Obj) -> FieldErrors:
        return []

    def validate_subresource_update(self, subresource: str, new: Obj, old: Obj) -> FieldErrors:
        """Errors of an update through one of `object_subresources` (most kinds check nothing there)."""
        return []

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        errors = self.validate(new)
        for path in self.immutable_fields:
            if get_path(new, path) != get_path(old, path):
                errors.append(("FieldValueInvalid", path, "field is immutable"))
        return errors

    # --- storage hooks (Kubernetes' BeginCreate, BeginUpdate, AfterDelete) ----------------
    async def begin_create(self, obj: Obj, *, dry_run: bool) -> Finish | None:
        """Work that goes with storing a valid new object (Services allocate IPs and ports)."""
        return None

    async def begin_update(self, new: Obj, old: Obj, *, dry_run: bool) -> Finish | None:
        """Work that goes with storing a valid update."""
        return None

    async def after_delete(self, obj: Obj) -> None:
        """The object has been removed from storage."""

    # --- deletion -----------------------------------------------------------------------
    def refuse_delete(self, name: str) -> str | None:
        """Why the object `name` may never be deleted by name (a 403), or None (most kinds)."""
        return None

    def grace_period(self, obj: Obj, requested: int | None) -> int:
        """Seconds the object lingers with a deletionTimestamp before it is removed (0: at once)."""
        return 0

    def begin_delete(self, obj: Obj) -> bool:
        """Mark `obj` for a deletion that must wait on something besides finalizers; True if it must."""
        return False

    def deletable_now(self, obj: Obj) -> bool:
        """Whether an object being deleted whose finalizers are all gone may be removed now."""
        return True

    # --- selection ----------------------------------------------------------------------
    def field_attrs(self, obj: Obj, only: tuple[str, ...] | None = None) -> dict[str, str]:
        """The selectable fields' values as a field selector reads them (`only`: just these, e.g. a selector's)."""
        return {f: _str(get_path(obj, f)) for f in (self.selectable_fields if only is None else only)}


def _spec_of(obj: Obj) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class NamespaceStrategy(Strategy):
    """Namespaces wait in Terminating until their content is gone (spec.finalizers emptied via /finalize)."""

    return_deleted_object = True

    def begin_delete(self, obj: Obj) -> bool:
        if not (obj.get("spec") or {}).get("finalizers"):
            return False
        obj.setdefault("status", {})["phase"] = "Terminating"
        return True

    def deletable_now(self, obj: Obj) -> bool:
        """A terminating namespace goes only once spec.finalizers is empty too (any write, not just /finalize)."""
        return not (obj.get("spec") or {}).get("finalizers")

    def __init__(self) -> None:
        super().__init__(
            has_status=True,
            tracks_generation=False,
            selectable_fields=("status.phase",),
            name_validator=validation.dns1123_label,
        )

    def initial_status(self, obj: Obj) -> Any:
        return {"phase": "Active"}

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        new["spec"] = copy.deepcopy(old.get("spec", {}))  # spec.finalizers change only through /finalize
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]


class NodeStrategy(Strategy):
    """A node agent registers its Node with its status: kept on create, unlike most kinds."""

    def __init__(self) -> None:
        super().__init__(has_status=True, tracks_generation=False, selectable_fields=("spec.unschedulable",))

    def initial_status(self, obj: Obj) -> Any:
        status = obj.get("status")
        return status if isinstance(status, dict) else {}


class PodStrategy(Strategy):
    """Most of a pod's spec is immutable once created; a pod on a node is ended by its node agent."""

    return_deleted_object = True

    def grace_period(self, obj: Obj, requested: int | None) -> int:
        """Only pods bound to a node and still running wait out a grace period."""
        spec = obj.get("spec") or {}
        if not spec.get("nodeName") or (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(int(requested), 0)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def deletable_now(self, obj: Obj) -> bool:
        if (obj.get("spec") or {}).get("nodeName"):
            return bool(obj["metadata"].get("deletionGracePeriodSeconds", 0) == 0)
        return True

    MUTABLE_SPEC = (
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
        "schedulingGates",
    )

    def __init__(self) -> None:
        super().__init__(
            has_status=True,
            selectable_fields=(
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ),
        )

    def initial_status(self, obj: Obj) -> Any:
        return {"phase": "Pending", "qosClass": qos_class(obj.get("spec", {}))}

    def validate(self, obj: Obj) -> FieldErrors:
        errors: FieldErrors = []
        spec = obj.get("spec") or {}
        containers = spec.get("containers") or []
        if not containers:
            errors.append(("FieldValueRequired", "spec.containers", "Required value"))
        seen: set[str] = set()
        for group in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(group) or []):
                name = c.get("name", "")
                path = f"spec.{group}[{i}]"
                if not name:
                    errors.append(("FieldValueRequired", f"{path}.name", "Required value"))
                elif name in seen:
                    errors.append(("FieldValueDuplicate", f"{path}.name", f'Duplicate value: "{name}"'))
                else:
                    for msg in validation.is_dns1123_label(name):
                        errors.append(("FieldValueInvalid", f"{path}.name", f'Invalid value: "{name}": {msg}'))
                seen.add(name)
                if not c.get("image") and group == "containers":
                    errors.append(("FieldValueRequired", f"{path}.image", "Required value"))
        errors += validate_pod_seccomp(spec)
        return errors

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        errors = self.validate(new)
        ns, os_ = dict(new.get("spec") or {}), dict(old.get("spec") or {})
        for key in self.MUTABLE_SPEC:
            ns.pop(key, None)
            os_.pop(key, None)
        # container images may change
        for spec in (ns, os_):
            for group in ("containers", "initContainers"):
                if group in spec:
                    spec[group] = [{k: v for k, v in c.items() if k != "image"} for c in spec[group]]
        if old.get("spec", {}).get("nodeName") and ns.get("nodeName") != os_.get("nodeName"):
            pass
        if ns != os_:
            errors.append(
                (
                    "FieldValueForbidden",
                    "spec",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                    "(allow it to be set to 1 if it was previously negative)",
                )
            )
        return errors


def qos_class(spec: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, from container requests and limits."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


class WorkloadStrategy(Strategy):
    """Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs: an immutable selector."""

    def __init__(
        self, *, immutable: tuple[str, ...] = ("spec.selector",), initial_status: Obj | None = None, **kw: Any
    ) -> None:
        super().__init__(has_status=True, immutable_fields=immutable, **kw)
        # the status fields Kubernetes serializes even when zero (no omitempty): clients require them
        self._initial_status = initial_status or {}

    def initial_status(self, obj: Obj) -> Any:
        return copy.deepcopy(self._initial_status)

    def validate(self, obj: Obj) -> FieldErrors:
        errors: FieldErrors = []
        spec = obj.get("spec") or {}
        selector = spec.get("selector")
        template = spec.get("template") or {}
        if "selector" in spec or "template" in spec:
            if not selector:
                errors.append(("FieldValueRequired", "spec.selector", "Required value"))
            elif (
                isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions")
            ):
                errors.append(
                    (
                        "FieldValueInvalid",
                        "spec.selector",
                        'Invalid value: "null": empty selector is invalid for deployment',
                    )
                )
            labels = (template.get("metadata") or {}).get("labels") or {}
            match = (selector or {}).get("matchLabels") or {} if isinstance(selector, dict) else {}
            if selector and any(labels.get(k) != v for k, v in match.items()):
                errors.append(
                    (
                        "FieldValueInvalid",
                        "spec.template.metadata.labels",
                        f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                    )
                )
            pod_errors = PodStrategy().validate({"spec": template.get("spec") or {}})
            errors.extend((t, "spec.template." + p, m) for t, p, m in pod_errors)
        return errors


class JobStrategy(WorkloadStrategy):
    """Jobs: unless `spec.manualSelector`, the server picks the selector and pod labels from the uid."""

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        spec = obj.get("spec")
        if isinstance(spec, dict) and not spec.get("manualSelector"):
            self._generate_selector(obj, spec)

    @staticmethod
    def _generate_selector(obj: Obj, spec: Obj) -> None:
        """As Kubernetes' job strategy: job-name and controller-uid labels (legacy and batch.kubernetes.io/)."""
        meta = obj["metadata"]
        uid, name = meta["uid"], meta["name"]
        template = spec["template"] = spec.get("template") or {}
        tmeta = template["metadata"] = template.get("metadata") or {}
        labels = tmeta["labels"] = tmeta.get("labels") or {}
        for key, value in (
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name),
            ("controller-uid", uid),
            ("job-name", name),
        ):
            labels.setdefault(key, value)
        selector = spec["selector"] = spec.get("selector") or {}
        match = selector["matchLabels"] = selector.get("matchLabels") or {}
        match.setdefault("batch.kubernetes.io/controller-uid", uid)


class CronJobStrategy(Strategy):
    """CronJobs: `spec.schedule` and `spec.timeZone` must parse, as Kubernetes' validation checks on write."""

    def validate(self, obj: Obj) -> FieldErrors:
        spec = obj.get("spec") or {}
        errors: FieldErrors = []
        schedule, zone = spec.get("schedule"), spec.get("timeZone")
        if not schedule:
            errors.append(("FieldValueRequired", "spec.schedule", "Required value"))
        elif isinstance(schedule, str):
            try:
                parse(schedule)
            except CronError as exc:
                errors.append(("FieldValueInvalid", "spec.schedule", f'Invalid value: "{schedule}": {exc}'))
        if zone is not None:
            if not isinstance(zone, str) or not zone:
                errors.append(("FieldValueInvalid", "spec.timeZone",
                               f'Invalid value: "{zone}": timeZone must be nil or non-empty string'))  # fmt: skip
            elif zone.lower() == "local":
                errors.append(("FieldValueInvalid", "spec.timeZone", f'Invalid value: "{zone}": timeZone must be '
                               "an explicit time zone as defined in https://www.iana.org/time-zones"))  # fmt: skip
            else:
                try:
                    load_time_zone(zone)
                except CronError as exc:
                    errors.append(("FieldValueInvalid", "spec.timeZone", f'Invalid value: "{zone}": {exc}'))
        return errors


class SecretStrategy(Strategy):
    """`stringData` is write-only: merged into `data` (base64) and never stored, as Kubernetes' conversion does."""

    def __init__(self) -> None:
        super().__init__(tracks_generation=False, selectable_fields=("type",), immutable_fields=("type",))

    @staticmethod
    def _merge_string_data(obj: Obj) -> None:
        import base64

        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            existing = obj.get("data")
            data: dict[str, Any] = existing if isinstance(existing, dict) else {}
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        self._merge_string_data(obj)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        self._merge_string_data(new)

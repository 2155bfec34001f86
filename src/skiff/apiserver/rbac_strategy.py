"""Validation of rbac.authorization.k8s.io/v1 Roles, ClusterRoles and their bindings, as Kubernetes'.

`pkg/apis/rbac/validation`: names need only be URL path segments
(`system:discovery`), every rule has verbs and either resources (with API
groups) or non-resource URLs (never both, and never in a namespaced
Role); a binding's roleRef names a Role or ClusterRole of
rbac.authorization.k8s.io (a ClusterRoleBinding only a ClusterRole) and
cannot change; subjects are Users or Groups of that group, or
ServiceAccounts of the core group (with a namespace in a
ClusterRoleBinding).
"""

from __future__ import annotations

from typing import Any, Protocol

from skiff.api import validation
from skiff.apiserver.strategy import FieldErrors, Strategy

GROUP = "rbac.authorization.k8s.io"
Obj = dict[str, Any]


def _quoted(values: list[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _not_supported(path: str, value: Any, supported: list[str]) -> tuple[str, str, str]:
    return ("FieldValueNotSupported", path, f'Unsupported value: "{value}": supported values: {_quoted(supported)}')


def _invalid_list(path: str, values: list[Any], detail: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", path, f"Invalid value: []string{{{_quoted([str(v) for v in values])}}}: {detail}")


def validate_rules(rules: Any, *, namespaced: bool, path: str = "rules") -> FieldErrors:
    errs: FieldErrors = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        at = f"{path}[{i}]"
        if not isinstance(rule, dict):
            errs.append(("FieldValueInvalid", at, "Invalid value: must be an object"))
            continue
        if not rule.get("verbs"):
            errs.append(("FieldValueRequired", f"{at}.verbs", "Required value: verbs must contain at least one value"))
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                errs.append(_invalid_list(f"{at}.nonResourceURLs", urls,
                                          "namespaced rules cannot apply to non-resource URLs"))  # fmt: skip
            if rule.get("apiGroups") or rule.get("resources"):
                both = "rules cannot apply to both regular resources and non-resource URLs"
                errs.append(_invalid_list(f"{at}.nonResourceURLs", urls, both))
            continue
        if not rule.get("apiGroups"):
            errs.append(("FieldValueRequired", f"{at}.apiGroups",
                         "Required value: resource rules must supply at least one api group"))  # fmt: skip
        if not rule.get("resources"):
            errs.append(("FieldValueRequired", f"{at}.resources",
                         "Required value: resource rules must supply at least one resource"))  # fmt: skip
    return errs


def validate_binding(obj: Obj, *, namespaced: bool) -> FieldErrors:
    errs: FieldErrors = []
    ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
    assert isinstance(ref, dict)
    if ref.get("apiGroup") != GROUP:
        errs.append(_not_supported("roleRef.apiGroup", ref.get("apiGroup") or "", [GROUP]))
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if ref.get("kind") not in kinds:
        errs.append(_not_supported("roleRef.kind", ref.get("kind") or "", kinds))
    name = ref.get("name") or ""
    if not name:
        errs.append(("FieldValueRequired", "roleRef.name", "Required value"))
    else:
        errs.extend(("FieldValueInvalid", "roleRef.name", f'Invalid value: "{name}": {m}')
                    for m in validation.is_valid_path_segment_name(name))  # fmt: skip
    subjects = obj.get("subjects") or []
    for i, subject in enumerate(subjects if isinstance(subjects, list) else []):
        at = f"subjects[{i}]"
        if not isinstance(subject, dict):
            errs.append(("FieldValueInvalid", at, "Invalid value: must be an object"))
            continue
        kind, group = subject.get("kind") or "", subject.get("apiGroup") or ""
        if not subject.get("name"):
            errs.append(("FieldValueRequired", f"{at}.name", "Required value"))
        if kind == "ServiceAccount":
            if group:
                errs.append(_not_supported(f"{at}.apiGroup", group, [""]))
            if not namespaced and not subject.get("namespace"):
                errs.append(("FieldValueRequired", f"{at}.namespace", "Required value"))
        elif kind in ("User", "Group"):
            if group != GROUP:
                errs.append(_not_supported(f"{at}.apiGroup", group, [GROUP]))
        else:
            errs.append(_not_supported(f"{at}.kind", kind, ["ServiceAccount", "User", "Group"]))
    return errs


class Escalation(Protocol):
    """The escalation check (`rbac_escalation.EscalationCheck`), attached once the authorizer exists."""

    async def role(self, obj: Obj, old: Obj | None, user: Any, *, namespaced: bool) -> None: ...

    async def binding(self, obj: Obj, old: Obj | None, user: Any, *, namespaced: bool) -> None: ...


class RoleStrategy(Strategy):
    def __init__(self, *, namespaced: bool) -> None:
        super().__init__(tracks_generation=False, name_validator=validation.path_segment_name)
        self.namespaced = namespaced
        self.escalation: Escalation | None = None

    async def authorize_write(self, obj: Obj, old: Obj | None, user: Any) -> None:
        if self.escalation is not None:
            await self.escalation.role(obj, old, user, namespaced=self.namespaced)

    def validate(self, obj: Obj) -> FieldErrors:
        return validate_rules(obj.get("rules"), namespaced=self.namespaced)


class RoleBindingStrategy(Strategy):
    def __init__(self, *, namespaced: bool) -> None:
        super().__init__(tracks_generation=False, name_validator=validation.path_segment_name)
        self.namespaced = namespaced
        self.escalation: Escalation | None = None

    async def authorize_write(self, obj: Obj, old: Obj | None, user: Any) -> None:
        if self.escalation is not None:
            await self.escalation.binding(obj, old, user, namespaced=self.namespaced)

    def validate(self, obj: Obj) -> FieldErrors:
        return validate_binding(obj, namespaced=self.namespaced)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        errs = self.validate(new)
        if new.get("roleRef") != old.get("roleRef"):
            ref = new.get("roleRef") or {}
            value = "{{APIGroup:{} Kind:{} Name:{}}}".format(ref.get("apiGroup", ""), ref.get("kind", ""),
                                                              ref.get("name", ""))  # fmt: skip
            errs.append(("FieldValueInvalid", "roleRef", f"Invalid value: {value}: cannot change roleRef"))
        return errs

"""RBAC escalation prevention: nobody grants permissions they do not hold, as Kubernetes.

`pkg/registry/rbac` (`rbac.EscalationAllowed`, `ConfirmNoEscalation`,
`BindingAuthorized`): creating or updating a Role or ClusterRole is allowed
to a member of system:masters, to a user who may `escalate` on it, or when
every rule it holds is covered by the rules the user already has where the
role applies; setting a ClusterRole's aggregationRule needs the first two.
A binding is allowed to system:masters, to a user who may `bind` the role it
refers to, or when the user already holds every rule of that role in the
binding's namespace. Anything else is 403 with Kubernetes' message, listing
the rules not held.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skiff.api import errors
from skiff.apiserver.auth import MASTERS_GROUP, RequestAttributes, UserInfo
from skiff.apiserver.authz import Authorizer, Decision
from skiff.apiserver.rbac import GROUP, RBACAuthorizer, Rule
from skiff.apiserver.rbac_strategy import RoleBindingStrategy, RoleStrategy
from skiff.apiserver.registry import Registry

Obj = dict[str, Any]


def _resource_covered(owner: frozenset[str], resource: str) -> bool:
    if "*" in owner or resource in owner:
        return True
    _, slash, sub = resource.partition("/")
    return bool(slash) and f"*/{sub}" in owner


def _url_covered(owner_urls: Iterable[str], url: str) -> bool:
    for owned in owner_urls:
        if owned == "*" or owned == url or (owned.endswith("*") and url.startswith(owned[:-1])):
            return True
    return False


def uncovered(owner: list[Rule], servant: list[Rule]) -> list[Rule]:
    """Kubernetes' `Covers`: the servant rules' pieces (one verb, group, resource, name) no owner rule holds."""
    missing: list[Rule] = []
    for rule in servant:
        for verb in rule.verbs:
            holders = [o for o in owner if "*" in o.verbs or verb in o.verbs]
            if rule.non_resource_urls:
                for url in rule.non_resource_urls:
                    if not any(_url_covered(o.non_resource_urls, url) for o in holders):
                        missing.append(Rule(verbs=frozenset({verb}), non_resource_urls=(url,)))
                continue
            names = list(rule.resource_names) or [""]
            for group in rule.api_groups:
                for resource in rule.resources:
                    for name in names:
                        if not any(
                            ("*" in o.api_groups or group in o.api_groups)
                            and _resource_covered(o.resources, resource)
                            and (not o.resource_names or (name and name in o.resource_names))
                            and not o.non_resource_urls
                            for o in holders
                        ):
                            missing.append(Rule(
                                verbs=frozenset({verb}), api_groups=frozenset({group}), resources=frozenset({resource}),
                                resource_names=frozenset({name}) if name else frozenset(),
                            ))  # fmt: skip
    return missing


def _describe(rule: Rule) -> str:
    """A rule as Kubernetes' `PolicyRule.CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`."""

    def quoted(values: Iterable[str]) -> str:
        return "[" + " ".join(f'"{v}"' for v in sorted(values)) + "]"

    parts = []
    if rule.non_resource_urls:
        parts.append(f"NonResourceURLs:{quoted(rule.non_resource_urls)}")
    else:
        parts.append(f"APIGroups:{quoted(rule.api_groups)}")
        parts.append(f"Resources:{quoted(rule.resources)}")
        if rule.resource_names:
            parts.append(f"ResourceNames:{quoted(rule.resource_names)}")
    parts.append(f"Verbs:{quoted(rule.verbs)}")
    return "{" + ", ".join(parts) + "}"


class EscalationCheck:
    """Held by the four RBAC strategies (`attach`); asks the authorizer chain and the RBAC rules."""

    def __init__(self, authorizer: Authorizer, rbac: RBACAuthorizer) -> None:
        self.authorizer = authorizer
        self.rbac = rbac

    async def _may(self, user: UserInfo, verb: str, resource: str, namespace: str, name: str) -> bool:
        attributes = RequestAttributes(user=user, verb=verb, path="", resource_request=True, api_group=GROUP,
                                       namespace=namespace, resource=resource, name=name)  # fmt: skip
        decision, _ = await self.authorizer.authorize(attributes)
        return decision is Decision.ALLOW

    def _refuse(self, user: UserInfo, resource: str, name: str, missing: list[Rule], extra: str = "") -> None:
        groups = "[" + " ".join(f'"{g}"' for g in user.groups) + "]"
        detail = "\n".join(_describe(r) for r in missing)
        message = (
            f'{resource}.{GROUP} "{name}" is forbidden: user "{user.name}" (groups={groups}) is attempting to '
            f"grant RBAC permissions not currently held:\n{detail}{extra}"
        )
        raise errors.Forbidden(message, name=name, group=GROUP, kind=resource)

    async def role(self, obj: Obj, old: Obj | None, user: Any, *, namespaced: bool) -> None:
        if not isinstance(user, UserInfo) or MASTERS_GROUP in user.groups:
            return
        meta = obj.get("metadata") or {}
        namespace, name = (meta.get("namespace") or "") if namespaced else "", meta.get("name") or ""
        resource = "roles" if namespaced else "clusterroles"
        if await self._may(user, "escalate", resource, namespace, name):
            return
        aggregation = obj.get("aggregationRule")
        if aggregation and (old is None or old.get("aggregationRule") != aggregation):
            raise errors.Forbidden(
                f'{resource}.{GROUP} "{name}" is forbidden: must have cluster-admin privileges to use the '
                "aggregationRule",
                name=name, group=GROUP, kind=resource,
            )  # fmt: skip
        servant = [Rule.of(r) for r in obj.get("rules") or () if isinstance(r, dict)]
        missing = uncovered(self.rbac.rules_for(user).rules_in(namespace), servant)
        if missing:
            self._refuse(user, resource, name, missing)

    async def binding(self, obj: Obj, old: Obj | None, user: Any, *, namespaced: bool) -> None:
        if not isinstance(user, UserInfo) or MASTERS_GROUP in user.groups:
            return
        meta = obj.get("metadata") or {}
        namespace, name = (meta.get("namespace") or "") if namespaced else "", meta.get("name") or ""
        ref = obj.get("roleRef") or {}
        ref_kind, ref_name = ref.get("kind") or "", ref.get("name") or ""
        ref_resource = "roles" if ref_kind == "Role" else "clusterroles"
        if await self._may(user, "bind", ref_resource, namespace, ref_name):
            return
        index = self.rbac.policy()
        rules = index.roles.get((namespace, ref_name)) if ref_kind == "Role" else index.cluster_roles.get(ref_name)
        resource = "rolebindings" if namespaced else "clusterrolebindings"
        if rules is None:
            raise errors.Forbidden(
                f'{resource}.{GROUP} "{name}" is forbidden: {ref_resource}.{GROUP} "{ref_name}" not found',
                name=name, group=GROUP, kind=resource,
            )  # fmt: skip
        missing = uncovered(self.rbac.rules_for(user).rules_in(namespace), rules)
        if missing:
            self._refuse(user, resource, name, missing)


def attach(registry: Registry, check: EscalationCheck) -> None:
    """Give the RBAC kinds' strategies the escalation check."""
    for rt in registry:
        strategy = rt.strategy
        if isinstance(strategy, (RoleStrategy, RoleBindingStrategy)):
            strategy.escalation = check

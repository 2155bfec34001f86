"""The ClusterRole aggregation controller: fills a ClusterRole's rules from the roles its aggregationRule selects.

As kube-controller-manager's clusterrole-aggregation controller
(`pkg/controller/clusterroleaggregation`): a ClusterRole with an
`aggregationRule` gets, as its rules, the rules of every other ClusterRole
whose labels one of the rule's `clusterRoleSelectors` matches, in name
order and without duplicates. Any ClusterRole changing re-syncs every
aggregated one (there are few), so `admin`, `edit` and `view` grow with the
`rbac.authorization.k8s.io/aggregate-to-*` roles a CRD's installer adds.
"""

from __future__ import annotations

from typing import Any

from skiff.api import errors
from skiff.api.selectors import label_selector_from_dict
from skiff.client import Controller
from skiff.client.cache import Obj
from skiff.client.resources import Resource
from skiff.controllers.context import ControllerContext

CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)


def aggregated_rules(role: Obj, roles: list[Obj]) -> list[Any] | None:
    """The rules `role`'s aggregationRule collects from `roles`; None when it has no aggregationRule."""
    rule = role.get("aggregationRule")
    if not isinstance(rule, dict):
        return None
    selectors = []
    for s in rule.get("clusterRoleSelectors") or ():
        try:
            selectors.append(label_selector_from_dict(s))
        except errors.StatusError:
            continue
    name = role["metadata"]["name"]
    out: list[Any] = []
    for other in sorted(roles, key=lambda r: r["metadata"]["name"]):
        if other["metadata"]["name"] == name:
            continue
        labels = other["metadata"].get("labels") or {}
        if not any(s.matches(labels) for s in selectors):
            continue
        for r in other.get("rules") or ():
            if r not in out:
                out.append(r)
    return out


class ClusterRoleAggregation(Controller):
    name = "clusterrole-aggregation"
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.roles = self.wait_for(ctx.informers.informer(CLUSTERROLES))
        self.roles.add_handlers(on_add=self._changed, on_update=lambda _o, n: self._changed(n), on_delete=self._changed)

    def _changed(self, _role: Obj) -> None:
        for role in self.roles.list():
            if role.get("aggregationRule"):
                self.enqueue_key(role["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        role = self.roles.get(key)
        if role is None:
            return
        rules = aggregated_rules(role, self.roles.list())
        if rules is None or (role.get("rules") or []) == rules:
            return
        body = {**role, "rules": rules}
        try:
            await self.client.update(CLUSTERROLES, body)
        except errors.NotFound:
            pass


def new(ctx: ControllerContext) -> ClusterRoleAggregation:
    return ClusterRoleAggregation(ctx)

"""SelfSubjectAccessReview, SubjectAccessReview and SelfSubjectRulesReview answered by the authorizer chain.

What `kubectl auth can-i` asks (authorization.k8s.io/v1): may this user
(the caller, or the one a SubjectAccessReview names) do this verb on this
resource or path? The answer comes from the same authorizer chain requests
go through, so it is what the user would actually get. `can-i --list`'s
SelfSubjectRulesReview lists the RBAC rules that apply in a namespace.
Nothing is stored: create answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skiff.api import errors
from skiff.apiserver import admission
from skiff.apiserver.auth import MASTERS_GROUP, RequestAttributes, UserInfo
from skiff.apiserver.authz import Authorizer, Decision
from skiff.apiserver.node_authz import node_identity
from skiff.apiserver.rbac import RBACAuthorizer
from skiff.apiserver.registry import ResourceType

Obj = dict[str, Any]


class AccessReviews:
    """The Store's `access_reviews` hook: answers the authorization.k8s.io reviews."""

    def __init__(self, authorizer: Authorizer, rbac: RBACAuthorizer | None) -> None:
        self.authorizer = authorizer
        self.rbac = rbac

    async def __call__(self, rt: ResourceType, obj: Obj, user: Any) -> Obj:
        if rt.kind == "SelfSubjectAccessReview" and isinstance(user, UserInfo):
            obj["status"] = await self._decide(user, _spec(obj))
        elif rt.kind == "SubjectAccessReview":
            spec = _spec(obj)
            name = spec.get("user") or ""
            groups = tuple(str(g) for g in spec.get("groups") or ())
            if not name and not groups:
                problem = (
                    "FieldValueInvalid",
                    "spec.user",
                    'Invalid value: "": at least one of user or group must be specified',
                )
                raise errors.field_error(rt.kind, "", [problem], group=rt.group)
            obj["status"] = await self._decide(UserInfo(name, groups, str(spec.get("uid") or "")), spec)
        elif rt.kind == "SelfSubjectRulesReview" and isinstance(user, UserInfo) and self.rbac is not None:
            obj["status"] = self._rules(user, str(_spec(obj).get("namespace") or ""))
        else:
            return admission.answer_virtual(rt, obj, user)
        obj["metadata"].setdefault("creationTimestamp", None)
        return obj

    async def _decide(self, user: UserInfo, spec: Mapping[str, Any]) -> Obj:
        resource = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        if isinstance(resource, Mapping):
            attributes = RequestAttributes(
                user=user,
                verb=str(resource.get("verb") or ""),
                path="",
                resource_request=True,
                api_group=str(resource.get("group") or ""),
                api_version=str(resource.get("version") or ""),
                namespace=str(resource.get("namespace") or ""),
                resource=str(resource.get("resource") or ""),
                subresource=str(resource.get("subresource") or ""),
                name=str(resource.get("name") or ""),
                field_selector=_raw_selector(resource.get("fieldSelector")),
            )
        elif isinstance(non_resource, Mapping):
            attributes = RequestAttributes(
                user=user, verb=str(non_resource.get("verb") or ""), path=str(non_resource.get("path") or ""),
                resource_request=False,
            )  # fmt: skip
        else:
            raise errors.BadRequest("exactly one of nonResourceAttributes or resourceAttributes must be specified")
        decision, reason = await self.authorizer.authorize(attributes)
        status: Obj = {"allowed": decision is Decision.ALLOW}
        if decision is Decision.DENY:
            status["denied"] = True
        if decision is Decision.ALLOW and MASTERS_GROUP in user.groups:
            reason = reason or f"user is a member of {MASTERS_GROUP}"
        if reason:
            status["reason"] = reason
        return status

    def _rules(self, user: UserInfo, namespace: str) -> Obj:
        assert self.rbac is not None
        if MASTERS_GROUP in user.groups:
            return {
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": False,
            }
        rules = self.rbac.rules_for(user).rules_in(namespace)
        resource_rules = [r.to_dict() for r in rules if not r.non_resource_urls]
        non_resource_rules = [r.to_dict() for r in rules if r.non_resource_urls]
        if node_identity(user)[1]:  # what the Node authorizer allows depends on the objects: not listed
            return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": True,
                    "evaluationError": "node authorizer does not support user rule resolution"}  # fmt: skip
        return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}


def _raw_selector(selector: Any) -> str:
    """resourceAttributes.fieldSelector.rawSelector (authorization with selectors): what the Node
    authorizer reads of a list or watch of pods."""
    return str(selector.get("rawSelector") or "") if isinstance(selector, Mapping) else ""


def _spec(obj: Obj) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}

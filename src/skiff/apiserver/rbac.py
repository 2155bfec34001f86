"""RBAC: Roles and bindings decide what a user may do, as Kubernetes' RBAC authorizer.

Kubernetes' `plugin/pkg/auth/authorizer/rbac`: a request is allowed when
some rule of a role bound to the user (by name, by one of its groups, or as
a service account) covers it -- verb, API group, resource (`pods/log` for a
subresource, `*/scale` for every resource's scale), resourceNames, or a
nonResourceURL (`/healthz`, `/apis/*`). A RoleBinding grants its role's
rules in its own namespace (it may name a ClusterRole); a ClusterRoleBinding
grants a ClusterRole's everywhere, non-resource URLs included. No match is
"no opinion": the union authorizer then answers 403.

The hot path stays cheap: the roles and bindings are read from the watch
cache into an index (bindings by subject) only when one of them changed
(the cache's events under the rbac prefix bump a generation), and the rules
a user gets are worked out once per user and generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skiff.apiserver import objects
from skiff.apiserver.auth import RequestAttributes, UserInfo
from skiff.apiserver.authz import Decision
from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchfanout import Subscription
from skiff.apiserver.watchwindow import CachedEvent

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
PREFIX = f"/registry/{GROUP}/"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
Obj = dict[str, Any]


# -- rule matching (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule, with its lists as frozensets for matching."""

    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=frozenset(rule.get("verbs") or ()),
            api_groups=frozenset(rule.get("apiGroups") or ()),
            resources=frozenset(rule.get("resources") or ()),
            resource_names=frozenset(rule.get("resourceNames") or ()),
            non_resource_urls=tuple(rule.get("nonResourceURLs") or ()),
        )

    def to_dict(self) -> Obj:
        out: Obj = {"verbs": sorted(self.verbs)}
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
            return out
        out["apiGroups"] = sorted(self.api_groups)
        out["resources"] = sorted(self.resources)
        if self.resource_names:
            out["resourceNames"] = sorted(self.resource_names)
        return out


def rule_allows(rule: Rule, attributes: RequestAttributes) -> bool:
    """Kubernetes' `RuleAllows`: does this rule cover the request?"""
    verbs = rule.verbs
    if "*" not in verbs and attributes.verb not in verbs:
        return False
    if not attributes.resource_request:
        return _non_resource_url_matches(rule.non_resource_urls, attributes.path)
    groups = rule.api_groups
    if "*" not in groups and attributes.api_group not in groups:
        return False
    if not _resource_matches(rule.resources, attributes.resource, attributes.subresource):
        return False
    return not rule.resource_names or attributes.name in rule.resource_names


def _resource_matches(resources: frozenset[str], resource: str, subresource: str) -> bool:
    if "*" in resources:
        return True
    if not subresource:
        return resource in resources
    return f"{resource}/{subresource}" in resources or f"*/{subresource}" in resources


def _non_resource_url_matches(urls: Sequence[str], path: str) -> bool:
    for url in urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def subject_matches(subject: Mapping[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    """Kubernetes' `appliesToUser`: a User by name, a Group by membership, a ServiceAccount by its user name."""
    kind = subject.get("kind")
    name = subject.get("name") or ""
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"
    return False


def _subject_keys(subject: Mapping[str, Any], binding_namespace: str) -> str | None:
    """The index key a subject is found under: `u:<user name>` or `g:<group>`."""
    kind = subject.get("kind")
    name = subject.get("name") or ""
    if kind == "User":
        return f"u:{name}"
    if kind == "Group":
        return f"g:{name}"
    if kind == "ServiceAccount":
        return f"u:{SERVICE_ACCOUNT_PREFIX}{subject.get('namespace') or binding_namespace}:{name}"
    return None


# -- the policy index --------------------------------------------------------------------------


@dataclass(slots=True)
class UserRules:
    """What one user is granted: rules valid everywhere, and rules per namespace."""

    cluster: list[Rule] = field(default_factory=list)
    namespaced: dict[str, list[Rule]] = field(default_factory=dict)

    def allows(self, attributes: RequestAttributes) -> bool:
        for rule in self.cluster:
            if rule_allows(rule, attributes):
                return True
        if attributes.resource_request and attributes.namespace:
            for rule in self.namespaced.get(attributes.namespace, ()):
                if rule_allows(rule, attributes):
                    return True
        return False

    def rules_in(self, namespace: str) -> list[Rule]:
        """Every rule that applies in `namespace` (SelfSubjectRulesReview)."""
        return [*self.cluster, *self.namespaced.get(namespace, ())]


@dataclass(slots=True)
class PolicyIndex:
    """Roles by (namespace, name), bindings by subject key."""

    roles: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    cluster_roles: dict[str, list[Rule]] = field(default_factory=dict)
    # subject key -> [(binding namespace or "" for a ClusterRoleBinding, roleRef kind, roleRef name)]
    bindings: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        roles: Iterable[Obj],
        cluster_roles: Iterable[Obj],
        role_bindings: Iterable[Obj],
        cluster_role_bindings: Iterable[Obj],
    ) -> PolicyIndex:
        index = cls()
        for role in roles:
            meta = role.get("metadata") or {}
            index.roles[(meta.get("namespace") or "", meta.get("name") or "")] = _rules(role)
        for role in cluster_roles:
            index.cluster_roles[(role.get("metadata") or {}).get("name") or ""] = _rules(role)
        for binding, cluster in [(b, False) for b in role_bindings] + [(b, True) for b in cluster_role_bindings]:
            meta = binding.get("metadata") or {}
            namespace = "" if cluster else meta.get("namespace") or ""
            ref = binding.get("roleRef") or {}
            entry = (namespace, ref.get("kind") or "", ref.get("name") or "")
            for subject in binding.get("subjects") or ():
                if not isinstance(subject, Mapping):
                    continue
                key = _subject_keys(subject, namespace)
                if key is not None:
                    index.bindings.setdefault(key, []).append(entry)
        return index

    def rules_for(self, user: UserInfo) -> UserRules:
        out = UserRules()
        seen: set[tuple[str, str, str]] = set()
        for key in (f"u:{user.name}", *(f"g:{g}" for g in user.groups)):
            for entry in self.bindings.get(key, ()):
                if entry in seen:
                    continue
                seen.add(entry)
                namespace, kind, name = entry
                if kind == "ClusterRole":
                    rules = self.cluster_roles.get(name, ())
                elif kind == "Role" and namespace:
                    rules = self.roles.get((namespace, name), ())
                else:
                    continue
                if namespace:
                    # a RoleBinding grants no non-resource URLs
                    out.namespaced.setdefault(namespace, []).extend(r for r in rules if not r.non_resource_urls)
                else:
                    out.cluster.extend(rules)
        return out


def _rules(role: Obj) -> list[Rule]:
    return [Rule.of(r) for r in role.get("rules") or () if isinstance(r, Mapping)]


# -- the authorizer ----------------------------------------------------------------------------


class RBACAuthorizer:
    """The RBAC link of the authorizer chain, over the API server's watch cache."""

    RESOURCES = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")

    def __init__(self, cache: WatchCache | None = None) -> None:
        self.cache = cache  # set later (`attach`) when the chain is built before the app
        self._generation = 0
        self._index: PolicyIndex | None = None
        self._index_generation = -1
        self._users: dict[tuple[str, tuple[str, ...]], UserRules] = {}
        self._subscription: Subscription | None = None
        self._follower: asyncio.Task[None] | None = None

    def attach(self, cache: WatchCache) -> None:
        self.cache = cache
        self._generation += 1

    async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
        if self.cache is None:
            return Decision.NO_OPINION, ""
        if self.rules_for(attributes.user).allows(attributes):
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""

    def policy(self) -> PolicyIndex:
        """The current roles and bindings, indexed (rebuilt only after one of them changed)."""
        self._ensure_following()
        if self._index_generation != self._generation or self._index is None:
            self._index = self._build_index()
            self._index_generation = self._generation
            self._users.clear()
        return self._index

    def rules_for(self, user: UserInfo) -> UserRules:
        """The user's rules, worked out once per user and change of any role or binding."""
        index = self.policy()
        key = (user.name, user.groups)
        rules = self._users.get(key)
        if rules is None:
            if len(self._users) > 10000:
                self._users.clear()
            rules = self._users[key] = index.rules_for(user)
        return rules

    def _build_index(self) -> PolicyIndex:
        lists = [self._objects(resource) for resource in self.RESOURCES]
        return PolicyIndex.build(*lists)

    def _objects(self, resource: str) -> list[Obj]:
        if self.cache is None:
            return []
        items = self.cache.list_current(f"{PREFIX}{resource}/") or []
        out = []
        for kv in items:
            try:
                out.append(objects.loads(kv.value))
            except ValueError:
                log.warning("cannot decode %s for RBAC", kv.key)
        return out

    # following changes -------------------------------------------------------------------------

    def _ensure_following(self) -> None:
        if self._follower is None or self._follower.done():
            if self.cache is None or not self.cache.ready.is_set():
                self._generation += 1  # not following yet: read afresh every time
                return
            self._follower = asyncio.get_running_loop().create_task(self._follow(), name="rbac index")
            self._generation += 1

    async def _follow(self) -> None:
        """Bumps the generation on every change under the rbac prefix; resubscribes when a watch ends."""

        def sink(events: list[CachedEvent]) -> bool:
            self._generation += 1
            return True

        cache = self.cache
        assert cache is not None
        while True:
            try:
                sub = await cache.subscribe(PREFIX, cache.revision)
            except Exception:  # retried: the cache is restarting
                await asyncio.sleep(1)
                continue
            self._generation += 1  # anything between the index and the subscription
            sub.sink = sink
            self._subscription = sub
            try:
                while True:
                    ev = await sub.queue.get()
                    self._generation += 1
                    if ev is None:
                        break
                    sub.sink = sink
            finally:
                sub.close()
                self._subscription = None

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

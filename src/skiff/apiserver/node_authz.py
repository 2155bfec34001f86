"""The Node authorizer: what a kubelet may read and write, ahead of RBAC (`--authorization-mode=Node,RBAC`).

Kubernetes' `plugin/pkg/auth/authorizer/node/node_authorizer.go` as of
1.34 (field selectors in authorization, AuthorizeNodeWithSelectors, GA).
A request from a node -- user `system:node:<name>` in group
`system:nodes`, what the join flow's certificates name -- is decided here:

- secrets, configmaps (get/list/watch of one object), persistentvolumeclaims,
  persistentvolumes (get) and serviceaccounts (create `token`) only when a
  pod bound to the node references them (`node_graph`);
- its own Lease in `kube-node-lease`; its own Node for reads (creates,
  updates and status writes are left to NodeRestriction admission);
- pods: get of a pod bound to it, list/watch only with the field selector
  `spec.nodeName=<name>`, create/delete and status writes and evictions
  (NodeRestriction keeps them to its own pods);
- everything else by the static `system:node` rules (events, CSRs,
  services, token and access reviews...), plus skiff's metrics report for
  its own node (`metrics.k8s.io` nodes/<name>/report).

What this does not allow is "no opinion" with Kubernetes' reason, and RBAC
decides next: `system:nodes` is bound to `system:node-proxier` (the node
agent runs the service proxy and the pod network, which list and watch
nodes, services and endpointslices).
"""

from __future__ import annotations

from collections.abc import Iterable

from skiff.api.csr import NODE_USER_PREFIX, NODES_GROUP
from skiff.apiserver.auth import RequestAttributes, UserInfo
from skiff.apiserver.authz import Decision
from skiff.apiserver.node_graph import (
    CLAIMS,
    CONFIGMAPS,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    VOLUMES,
    CachedNodeGraph,
    NodeGraph,
)
from skiff.apiserver.rbac import Rule, rule_allows

NODE_LEASE_NAMESPACE = "kube-node-lease"
READ = ("get", "list", "watch")


def _rule(verbs: Iterable[str], groups: Iterable[str], resources: Iterable[str]) -> Rule:
    return Rule(frozenset(verbs), frozenset(groups), frozenset(resources))


# Kubernetes' bootstrappolicy.NodeRules(): the `system:node` ClusterRole (which nobody is bound to:
# the Node authorizer applies these rules itself, after its own checks)
NODE_RULES: tuple[Rule, ...] = (
    _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
    _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews", "localsubjectaccessreviews"]),
    _rule(READ, [""], ["services"]),
    _rule(["create", "get", "list", "watch"], [""], ["nodes"]),
    _rule(["update", "patch"], [""], ["nodes/status"]),
    _rule(["update", "patch"], [""], ["nodes"]),
    _rule(["create", "update", "patch"], [""], ["events"]),
    _rule(READ, [""], ["pods"]),
    _rule(["create", "delete"], [""], ["pods"]),
    _rule(["update", "patch"], [""], ["pods/status"]),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(READ, [""], ["configmaps", "secrets"]),
    _rule(["get"], [""], ["persistentvolumeclaims", "persistentvolumes"]),
    _rule(["get"], [""], ["endpoints"]),
    _rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
    _rule(["get", "create", "update", "patch", "delete"], ["coordination.k8s.io"], ["leases"]),
    _rule(["get"], ["storage.k8s.io"], ["volumeattachments"]),
    _rule(["create"], [""], ["serviceaccounts/token"]),
    _rule(["get", "update", "patch"], [""], ["persistentvolumeclaims/status"]),
    _rule(READ, ["storage.k8s.io"], ["csidrivers"]),
    _rule(["get", "create", "update", "patch", "delete"], ["storage.k8s.io"], ["csinodes"]),
    _rule(READ, ["node.k8s.io"], ["runtimeclasses"]),
)


def node_identity(user: UserInfo) -> tuple[str, bool]:
    """Kubernetes' NodeIdentity: (node name, is a node). A member of `system:nodes` whose user name does
    not start with `system:node:` is a node that cannot be told apart: name ""."""
    if NODES_GROUP not in user.groups:
        return "", False
    if not user.name.startswith(NODE_USER_PREFIX):
        return "", True
    return user.name[len(NODE_USER_PREFIX) :], True


def node_name_selected(field_selector: str, node: str) -> bool:
    """Does the field selector require `spec.nodeName=<node>` (or `==`)?"""
    for term in field_selector.split(","):
        if "!=" in term:
            continue
        field, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and field.strip() == "spec.nodeName" and value.strip() == node:
            return True
    return False


Verdict = tuple[Decision, str]
NO_RELATION = "no relationship found between node '{node}' and this object"


class NodeAuthorizer:
    """Decides requests from nodes; "no opinion" for everyone else."""

    def __init__(self, graph: CachedNodeGraph | None = None) -> None:
        self.graph = graph if graph is not None else CachedNodeGraph()

    async def authorize(self, attributes: RequestAttributes) -> Verdict:
        node, is_node = node_identity(attributes.user)
        if not is_node:
            return Decision.NO_OPINION, ""
        if not node:
            return Decision.NO_OPINION, f'unknown node for user "{attributes.user.name}"'
        if attributes.resource_request:
            verdict = await self._subdivided(node, attributes)
            if verdict is not None:
                return verdict
        if any(rule_allows(rule, attributes) for rule in NODE_RULES):
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""

    async def _subdivided(self, node: str, a: RequestAttributes) -> Verdict | None:
        group, resource, sub, verb = a.api_group, a.resource, a.subresource, a.verb
        if group == "":
            if resource in (SECRETS, CONFIGMAPS):
                if verb not in READ:
                    return Decision.NO_OPINION, "can only read resources of this type"
                if sub:
                    return Decision.NO_OPINION, "cannot read subresource"
                if not a.namespace:
                    return Decision.NO_OPINION, "can only read namespaced object of this type"
                return await self._related(node, resource, a)
            if resource == CLAIMS:
                if sub == "status":
                    if verb not in ("update", "patch"):
                        return Decision.NO_OPINION, "can only get/update/patch this type"
                    return await self._related(node, resource, a)
                return await self._get(node, resource, a)
            if resource == VOLUMES:
                return await self._get(node, resource, a)
            if resource == SERVICE_ACCOUNTS:
                if verb != "create" or not a.name:
                    return Decision.NO_OPINION, "can only create tokens for individual service accounts"
                if sub != "token":
                    return Decision.NO_OPINION, "can only create token subresource of serviceaccount"
                return await self._related(node, resource, a)
            if resource == "nodes":
                return self._node(node, a)
            if resource == PODS:
                return await self._pod(node, a)
        elif group == "coordination.k8s.io" and resource == "leases":
            return self._lease(node, a)
        elif group == "metrics.k8s.io" and resource == "nodes" and sub == "report":
            if verb == "create" and a.name == node:
                return Decision.ALLOW, ""
            return Decision.NO_OPINION, f"node '{node}' can only report its own metrics"
        return None

    async def _get(self, node: str, resource: str, a: RequestAttributes) -> Verdict:
        if a.verb != "get":
            return Decision.NO_OPINION, "can only get individual resources of this type"
        if a.subresource:
            return Decision.NO_OPINION, "cannot get subresource"
        return await self._related(node, resource, a)

    async def _related(self, node: str, resource: str, a: RequestAttributes) -> Verdict:
        if not a.name:
            return Decision.NO_OPINION, "No Object name found"
        if await self.reaches(node, resource, a.namespace, a.name):
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, NO_RELATION.format(node=node)

    async def reaches(self, node: str, resource: str, namespace: str, name: str) -> bool:
        """A path from the object to the node in the graph; looked for again once the cache has caught
        up with storage before saying no (the pod may have been bound a moment ago)."""
        graph: NodeGraph | None = await self.graph.current()
        if graph is not None and graph.reaches(node, resource, namespace, name):
            return True
        graph = await self.graph.fresh()
        return graph is not None and graph.reaches(node, resource, namespace, name)

    @staticmethod
    def _node(node: str, a: RequestAttributes) -> Verdict:
        if not a.subresource:
            if a.verb in ("create", "update", "patch"):
                return Decision.ALLOW, ""  # NodeRestriction keeps these to the node's own object
            if a.verb in READ:
                if a.name == node:
                    return Decision.ALLOW, ""
                if not a.name:
                    return Decision.NO_OPINION, f"node '{node}' cannot read all nodes, only its own Node object"
                return Decision.NO_OPINION, f"node '{node}' cannot read '{a.name}', only its own Node object"
        elif a.subresource == "status" and a.verb in ("update", "patch"):
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""

    async def _pod(self, node: str, a: RequestAttributes) -> Verdict:
        verb = a.verb
        if not a.subresource:
            if verb == "get":
                return await self._get(node, PODS, a)
            if verb in ("list", "watch"):
                if node_name_selected(a.field_selector, node):
                    return Decision.ALLOW, ""
                if a.name:
                    return await self._related(node, PODS, a)
                return Decision.NO_OPINION, "can only list/watch pods with spec.nodeName field selector"
            if verb in ("create", "delete"):
                return Decision.ALLOW, ""  # NodeRestriction: mirror pods bound to itself, its own pods
        elif a.subresource == "status" and verb in ("update", "patch"):
            return Decision.ALLOW, ""
        elif a.subresource == "eviction" and verb == "create":
            return Decision.ALLOW, ""
        return Decision.NO_OPINION, ""

    @staticmethod
    def _lease(node: str, a: RequestAttributes) -> Verdict:
        if a.verb not in ("get", "create", "update", "patch", "delete"):
            return Decision.NO_OPINION, "can only get, create, update, patch, or delete a node lease"
        if a.namespace != NODE_LEASE_NAMESPACE:
            return Decision.NO_OPINION, f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace'
        if a.verb != "create" and a.name != node:
            return Decision.NO_OPINION, "can only access node lease with the same name as the requesting node"
        return Decision.ALLOW, ""

    async def close(self) -> None:
        await self.graph.close()

"""NodeRestriction: a node writes only its own Node, its own Lease and the pods bound to it.

Kubernetes' `plugin/pkg/admission/noderestriction`. The Node authorizer
lets every node create and update Nodes, write pod status and delete pods,
since it cannot see the objects; this plugin, which can, refuses a node
(`system:node:<name>` in `system:nodes`):

- another node's Node object, a configSource, a change of its taints, and
  labels outside what a kubelet may set (node-restriction.kubernetes.io/
  ones, and kubernetes.io / k8s.io ones other than the kubelet's well-known
  labels and the kubelet.kubernetes.io / node.kubernetes.io namespaces);
- pods not bound to it (delete, status), any other pod write than mirror
  pods of its own, and relabelling through pod status;
- PVCs other than their status' capacity and conditions; leases other than
  its own in kube-node-lease.

Messages are Kubernetes' own (`nodes "x" is forbidden: node "y" is not
allowed to modify node "x"`). Service account tokens a node asks for are
checked where TokenRequests are answered (`tokenrequest.py`), with
`token_request_problem` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from skiff.api import errors
from skiff.apiserver.admission_plugins.chain import Attributes, Plugin, forbidden
from skiff.apiserver.node_authz import NODE_LEASE_NAMESPACE, node_identity
from skiff.apiserver.node_graph import pod_edges

Obj = dict[str, Any]
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
NODE_RESTRICTION_NAMESPACE = "node-restriction.kubernetes.io"

# k8s.io/kubelet/pkg/apis: labels a kubelet may set on its own Node
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
})  # fmt: skip
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


class Getter(Protocol):
    async def get(self, namespace: str, name: str) -> Obj | None: ...


def _label_namespace(key: str) -> str:
    prefix, sep, _ = key.partition("/")
    return prefix if sep else ""


def _in(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def is_kubelet_label(key: str) -> bool:
    return key in KUBELET_LABELS or any(_in(_label_namespace(key), ns) for ns in KUBELET_LABEL_NAMESPACES)


def forbidden_labels(new: Mapping[str, str] | None, old: Mapping[str, str] | None) -> list[str]:
    """Label keys added, removed or changed between `old` and `new` that a node may not touch, sorted."""
    new, old = new or {}, old or {}
    modified = {k for k in new.keys() | old.keys() if new.get(k) != old.get(k) or (k in new) != (k in old)}
    out = set()
    for key in modified:
        namespace = _label_namespace(key)
        if _in(namespace, NODE_RESTRICTION_NAMESPACE):
            out.add(key)
        if (_in(namespace, "kubernetes.io") or _in(namespace, "k8s.io")) and not is_kubelet_label(key):
            out.add(key)
    return sorted(out)


def token_request_problem(node: str, ref: Any, pod: Obj | None) -> str | None:
    """Why a node may not have a token bound to `ref` (its TokenRequest's boundObjectRef), or None.
    `pod` is the pod the reference names, as stored (None: not found)."""
    if not isinstance(ref, Mapping) or ref.get("apiVersion") != "v1" or ref.get("kind") != "Pod" or not ref.get("name"):
        return "node requested token not bound to a pod"
    if not ref.get("uid"):
        return "node requested token with a pod binding without a uid"
    if pod is None:
        return None  # the TokenRequest answers 404 itself
    if ref["uid"] != (pod.get("metadata") or {}).get("uid"):
        return (
            f"the UID in the bound object reference ({ref['uid']}) does not match the UID in record. "
            "The object might have been deleted and then recreated"
        )
    if (pod.get("spec") or {}).get("nodeName") != node:
        return "node requested token bound to a pod scheduled on a different node"
    return None


class NodeRestriction(Plugin):
    name = "NodeRestriction"
    resources = frozenset({
        ("", "pods"), ("", "nodes"), ("", "persistentvolumeclaims"), ("coordination.k8s.io", "leases"),
        ("storage.k8s.io", "csinodes"),
    })  # fmt: skip
    all_writes: ClassVar[bool] = True

    def __init__(self, nodes: Getter) -> None:
        self.nodes = nodes

    async def validate(self, attrs: Attributes) -> None:
        user = attrs.user
        if user is None:
            return
        node, is_node = node_identity(user)
        if not is_node:
            return
        if not node:
            raise forbidden(attrs, f'could not determine node from user "{user.name}"')
        resource = attrs.resource.plural
        if resource == "pods":
            await self._pod(node, attrs)
        elif resource == "nodes":
            self._node(node, attrs)
        elif resource == "persistentvolumeclaims":
            self._claim(node, attrs)
        elif resource == "leases":
            self._same_name(node, attrs, "node lease")
            if _namespace(attrs) != NODE_LEASE_NAMESPACE:
                raise forbidden(attrs, f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace')
        elif resource == "csinodes":
            self._same_name(node, attrs, "CSINode")

    async def _pod(self, node: str, attrs: Attributes) -> None:
        op, obj = attrs.operation, attrs.obj
        if attrs.subresource == "status":
            if op != "UPDATE":
                raise forbidden(attrs, f'unexpected operation "{op}"')
            if _spec(attrs.old).get("nodeName") != node:
                raise forbidden(
                    attrs, f'node "{node}" can only update pod status for pods with spec.nodeName set to itself'
                )
            if (_meta(obj).get("labels") or {}) != (_meta(attrs.old).get("labels") or {}):
                raise forbidden(attrs, f'node "{node}" cannot update labels through pod status')
            return
        if attrs.subresource:
            raise forbidden(
                attrs, f"unexpected pod subresource \"{attrs.subresource}\", only 'status' and 'eviction' are allowed"
            )
        if op == "DELETE":
            if _spec(obj).get("nodeName") != node:
                raise forbidden(attrs, f'node "{node}" can only delete pods with spec.nodeName set to itself')
            return
        if op != "CREATE":
            raise forbidden(attrs, f'unexpected operation "{op}", node "{node}" can only create and delete mirror pods')
        await self._mirror_pod(node, attrs)

    async def _mirror_pod(self, node: str, attrs: Attributes) -> None:
        pod = attrs.obj
        meta, spec = _meta(pod), _spec(pod)
        if MIRROR_POD_ANNOTATION not in (meta.get("annotations") or {}):
            raise forbidden(
                attrs,
                f'pod does not have "{MIRROR_POD_ANNOTATION}" annotation, node "{node}" can only create mirror pods',
            )
        if spec.get("nodeName") != node:
            raise forbidden(attrs, f'node "{node}" can only create pods with spec.nodeName set to itself')
        owners = meta.get("ownerReferences") or []
        if len(owners) > 1:
            raise forbidden(attrs, f'node "{node}" can only create pods with a single owner reference set to itself')
        if not owners:
            raise forbidden(attrs, f'node "{node}" can only create pods with an owner reference set to itself')
        owner = owners[0]
        if owner.get("apiVersion") != "v1" or owner.get("kind") != "Node" or owner.get("name") != node:
            raise forbidden(attrs, f'node "{node}" can only create pods with an owner reference set to itself')
        if not owner.get("controller"):
            raise forbidden(
                attrs, f'node "{node}" can only create pods with a controller owner reference set to itself'
            )
        if owner.get("blockOwnerDeletion"):
            raise forbidden(attrs, f'node "{node}" must not set blockOwnerDeletion on an owner reference')
        existing = await self.nodes.get("", node)
        if existing is None:
            raise errors.NotFound(f'nodes "{node}" not found', name=node, kind="nodes")
        uid = _meta(existing).get("uid")
        if owner.get("uid") != uid:
            raise forbidden(attrs, f"node {node} UID mismatch: expected {owner.get('uid')} got {uid}")
        if spec.get("serviceAccountName"):
            raise forbidden(attrs, f'node "{node}" can not create pods that reference a service account')
        edges = pod_edges(pod)
        if edges is not None and edges.secrets:
            raise forbidden(attrs, f'node "{node}" can not create pods that reference secrets')
        if edges is not None and edges.configmaps:
            raise forbidden(attrs, f'node "{node}" can not create pods that reference configmaps')
        if any(isinstance(v, Mapping) and v.get("persistentVolumeClaim") for v in spec.get("volumes") or ()):
            raise forbidden(attrs, f'node "{node}" can not create pods that reference persistentvolumeclaims')

    @staticmethod
    def _node(node: str, attrs: Attributes) -> None:
        requested = str(_meta(attrs.obj).get("name") or "")
        if requested != node:
            raise forbidden(attrs, f'node "{node}" is not allowed to modify node "{requested}"')
        obj, old = attrs.obj, attrs.old
        if attrs.operation == "CREATE":
            if _spec(obj).get("configSource") is not None:
                raise forbidden(attrs, f'node "{node}" is not allowed to create pods with a non-nil configSource')
            bad = forbidden_labels(_meta(obj).get("labels"), None)
            if bad:
                raise forbidden(attrs, f'node "{node}" is not allowed to set the following labels: {", ".join(bad)}')
        elif attrs.operation == "UPDATE":
            source = _spec(obj).get("configSource")
            if source is not None and source != _spec(old).get("configSource"):
                raise forbidden(
                    attrs, f'node "{node}" is not allowed to update configSource to a new non-nil configSource'
                )
            if (_spec(obj).get("taints") or []) != (_spec(old).get("taints") or []):
                raise forbidden(attrs, f'node "{node}" is not allowed to modify taints')
            bad = forbidden_labels(_meta(obj).get("labels"), _meta(old).get("labels"))
            if bad:
                raise forbidden(attrs, f"is not allowed to modify labels: {', '.join(bad)}")

    @staticmethod
    def _claim(node: str, attrs: Attributes) -> None:
        if attrs.subresource != "status":
            raise forbidden(attrs, "may only update PVC status")
        if attrs.operation != "UPDATE":
            raise forbidden(attrs, f'unexpected operation "{attrs.operation}"')
        if _claim_rest(attrs.obj) != _claim_rest(attrs.old):
            raise forbidden(
                attrs, f'node "{node}" is not allowed to update fields other than status.capacity and status.conditions'
            )

    @staticmethod
    def _same_name(node: str, attrs: Attributes, what: str) -> None:
        if str(_meta(attrs.obj).get("name") or "") != node:
            raise forbidden(attrs, f"can only access {what} with the same name as the requesting node")


def _meta(obj: Obj | None) -> Obj:
    return (obj or {}).get("metadata") or {}


def _spec(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


def _namespace(attrs: Attributes) -> str:
    return str(_meta(attrs.obj).get("namespace") or "")


def _claim_rest(pvc: Obj | None) -> Obj:
    """A PVC without what a node may change in it (and what every write changes)."""
    out = dict(pvc or {})
    out["metadata"] = {k: v for k, v in _meta(pvc).items() if k not in ("resourceVersion", "managedFields")}
    changeable = ("capacity", "conditions", "allocatedResources", "allocatedResourceStatuses")
    out["status"] = {k: v for k, v in (out.get("status") or {}).items() if k not in changeable}
    return out

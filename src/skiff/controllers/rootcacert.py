"""The root CA certificate publisher: a `kube-root-ca.crt` ConfigMap in every namespace.

As kube-controller-manager's root-ca-cert-publisher (`pkg/controller/certificates/rootcacertpublisher`):
pods verify the API server with the `ca.crt` this ConfigMap holds (the
kube-api-access projected volume mounts it), so every active namespace gets
one, annotated `kubernetes.io/description`, and it is put back when it is
deleted or changed. The certificate is the cluster CA the controller
manager's own kubeconfig trusts (Kubernetes' `--root-ca-file`).
"""

from __future__ import annotations

from skiff.api import errors
from skiff.client import Controller
from skiff.client.cache import Obj
from skiff.client.resources import CONFIGMAPS, NAMESPACES
from skiff.controllers.context import ControllerContext

NAME = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
    "distributions of Kubernetes clusters."
)


def wanted(namespace: str, ca: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": namespace, "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
        "data": {"ca.crt": ca},
    }


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.ca = (ctx.client.config.ca_pem or b"").decode()
        self.namespaces = self.watch(ctx.informers.informer(NAMESPACES))
        self.configmaps = self.wait_for(ctx.informers.informer(CONFIGMAPS))
        self.configmaps.add_handlers(on_update=lambda _o, n: self._configmap(n), on_delete=self._configmap)

    def _configmap(self, cm: Obj) -> None:
        meta = cm.get("metadata") or {}
        if meta.get("name") == NAME and meta.get("namespace"):
            self.enqueue_key(meta["namespace"])

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if not self.ca or ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if (ns.get("status") or {}).get("phase") != "Active":
            return
        cm = self.configmaps.get(f"{key}/{NAME}")
        try:
            if cm is None:
                await self.client.create(CONFIGMAPS, wanted(key, self.ca), namespace=key)
            elif (cm.get("data") or {}) != {"ca.crt": self.ca} or DESCRIPTION_ANNOTATION not in (
                cm["metadata"].get("annotations") or {}
            ):
                body = wanted(key, self.ca)
                body["metadata"]["resourceVersion"] = cm["metadata"].get("resourceVersion")
                body["metadata"]["annotations"] = {**(cm["metadata"].get("annotations") or {}),
                                                   DESCRIPTION_ANNOTATION: DESCRIPTION}  # fmt: skip
                await self.client.update(CONFIGMAPS, body, namespace=key)
        except (errors.AlreadyExists, errors.Conflict):
            raise  # the cache is behind: retried with back-off
        except (errors.Forbidden, errors.NotFound):
            pass  # the namespace began terminating or is gone


def new(ctx: ControllerContext) -> RootCACertPublisher:
    return RootCACertPublisher(ctx)

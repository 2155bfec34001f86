"""The CSR approver: node client certificates requested through TLS bootstrapping are approved at once.

Kubernetes' `pkg/controller/certificates/approver` (csrapproving). A CertificateSigningRequest for
the kubelet-client signer whose subject is `system:node:<name>` in `system:nodes`, without SANs,
for client auth only (`skiff.api.csr.node_client_problem`), is approved (condition Approved,
reason AutoApproved) when a bootstrap identity (group `system:bootstrappers`) asked for it, or
the node itself renews its own certificate. Anything else waits for a person: `kubectl
certificate approve|deny`. Signing is the signer's job (`csrsigning`).
"""

from __future__ import annotations

import copy

from skiff.api import csr as csrs
from skiff.api import errors
from skiff.api.jointoken import BOOTSTRAPPERS_GROUP
from skiff.client import Controller
from skiff.client.cache import Obj
from skiff.client.resources import CSRS
from skiff.controllers.context import ControllerContext

REASON = "AutoApproved"
MESSAGE = "Auto approving kubelet client certificate after SubjectAccessReview."


def auto_approvable(csr: Obj) -> bool:
    """A node-client request from a bootstrapper, or from the very node it names."""
    if csrs.node_client_problem(csr) is not None:
        return False
    spec = csr.get("spec") or {}
    groups = spec.get("groups") or []
    if BOOTSTRAPPERS_GROUP in groups:
        return True
    cn, _ = csrs.subject_of(csrs.parse_request(spec.get("request")))
    return spec.get("username") == cn and csrs.NODES_GROUP in groups


class CSRApprovingController(Controller):
    name = "csrapproving"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.csrs = self.watch(ctx.informers.informer(CSRS))

    async def reconcile(self, key: str) -> None:
        cached = self.csrs.get(key)
        if cached is None or _decided(cached) or not auto_approvable(cached):
            return
        csr = copy.deepcopy(cached)
        conditions = csr.setdefault("status", {}).setdefault("conditions", [])
        conditions.append({"type": csrs.APPROVED, "status": "True", "reason": REASON, "message": MESSAGE})
        try:
            await self.client.update(CSRS, csr, subresource="approval")
        except errors.NotFound:
            return
        self.log.info("%s: approved %s for %s", self.name, key, csr["spec"].get("username"))


def _decided(csr: Obj) -> bool:
    return csrs.has_condition(csr, csrs.APPROVED) or csrs.has_condition(csr, csrs.DENIED)


def new(ctx: ControllerContext) -> CSRApprovingController:
    return CSRApprovingController(ctx)

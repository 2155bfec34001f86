"""The ServiceAccount controller: every active namespace has a `default` ServiceAccount.

Pods that name no service account run as `default`, so Kubernetes makes sure
each namespace has one (pkg/controller/serviceaccount): when a namespace is
added or changes, and when the account is deleted, the namespace is
reconciled and the account created again if it is missing. Namespaces that
are terminating are left alone (the apiserver refuses new content there).
"""

from __future__ import annotations

from skiff.api import errors
from skiff.client import Controller
from skiff.client.cache import Obj
from skiff.client.resources import NAMESPACES, SERVICEACCOUNTS
from skiff.controllers.context import ControllerContext

ACCOUNTS = ("default",)  # ServiceAccountsToEnsure


class ServiceAccountsController(Controller):
    name = "serviceaccount"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.namespaces = self.watch(ctx.informers.informer(NAMESPACES))
        self.accounts = self.wait_for(ctx.informers.informer(SERVICEACCOUNTS))
        self.accounts.add_handlers(on_delete=self._account_deleted)

    def _account_deleted(self, sa: Obj) -> None:
        meta = sa.get("metadata") or {}
        if meta.get("name") in ACCOUNTS and meta.get("namespace"):
            self.enqueue_key(meta["namespace"])

    async def reconcile(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp") or (ns.get("status") or {}).get("phase") != "Active":
            return
        for name in ACCOUNTS:
            if self.accounts.get(f"{key}/{name}") is not None:
                continue
            sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": key}}
            try:
                await self.client.create(SERVICEACCOUNTS, sa, namespace=key)
                self.log.info("%s: created serviceaccount %s/%s", self.name, key, name)
            except errors.AlreadyExists:
                pass  # the cache is behind; the account is there
            except (errors.Forbidden, errors.NotFound):
                pass  # the namespace began terminating or is gone: nothing to ensure


def new(ctx: ControllerContext) -> ServiceAccountsController:
    return ServiceAccountsController(ctx)

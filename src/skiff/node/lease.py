"""A node's heartbeat: its Lease in `kube-node-lease`, renewed often and cheaply.

Since Kubernetes 1.14 a kubelet says "I am alive" by renewing a
coordination.k8s.io/v1 Lease named after its node in the `kube-node-lease`
namespace every 10 s (a quarter of `leaseDurationSeconds`, 40), and only
posts the whole, much larger Node status when something changes or every few
minutes. The node lifecycle controller watches these Leases to tell a live
node from a silent one. The simulated nodes and the real node agent both
heartbeat through `NodeLease`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors
from skiff.client import Client, ServerUnreachable, resources

log = logging.getLogger(__name__)
Obj = dict[str, Any]

NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
RENEW_INTERVAL = 10.0  # kubelet: leaseDuration * 0.25


def now_micro() -> str:
    """A meta/v1 MicroTime (`2006-01-02T15:04:05.000000Z`), what Lease times are written as."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_lease(node_name: str, node_uid: str | None, *, duration: int = LEASE_DURATION_SECONDS) -> Obj:
    """The Lease a kubelet creates for its node, owned by the Node so that it goes when the node goes."""
    now = now_micro()
    meta: Obj = {"name": node_name, "namespace": NODE_LEASE_NAMESPACE}
    if node_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": duration,
            "renewTime": now,
        },
    }


class NodeLease:
    """Renews one node's Lease: a merge patch of `renewTime`, creating the Lease when it is missing."""

    def __init__(
        self,
        client: Client,
        node_name: str,
        *,
        node_uid: str | None = None,
        duration: int = LEASE_DURATION_SECONDS,
        interval: float = RENEW_INTERVAL,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.node_uid = node_uid
        self.duration = duration
        self.interval = interval
        self.last_renewed: str | None = None  # the renewTime last written
        self.lease: Obj | None = None  # the Lease as last written

    async def renew(self) -> None:
        """Renew once; raises the API error (or ServerUnreachable) if the write fails.

        As the kubelet: an update of the Lease last written (no read), and only after a
        conflict or when it is missing a read, or a create.
        """
        renew_time = now_micro()
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": self.duration, "renewTime": renew_time}
        if self.lease is not None:
            lease = copy.deepcopy(self.lease)
            lease["spec"].update(spec)
            try:
                self.lease = await self.client.update(resources.LEASES, lease)
                self.last_renewed = renew_time
                return
            except (errors.Conflict, errors.NotFound):
                self.lease = None
        try:
            current = await self.client.get(resources.LEASES, self.node_name, namespace=NODE_LEASE_NAMESPACE)
        except errors.NotFound:
            self.lease = await self.client.create(
                resources.LEASES, new_lease(self.node_name, self.node_uid, duration=self.duration)
            )
        else:
            current.setdefault("spec", {}).update(spec)
            self.lease = await self.client.update(resources.LEASES, current)
        self.last_renewed = renew_time

    async def delete(self) -> None:
        try:
            await self.client.delete(resources.LEASES, self.node_name, namespace=NODE_LEASE_NAMESPACE)
        except errors.NotFound:
            pass

    async def run(self, stop: asyncio.Event, *, first_delay: float | None = None) -> None:
        """Renew every `interval` seconds until `stop`; failures are logged and retried sooner.

        `first_delay` (default: a random part of the interval) spreads the renewals of many nodes
        over time instead of sending them all at once.
        """
        delay = random.uniform(0, self.interval) if first_delay is None else first_delay
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
            try:
                await self.renew()
                delay = self.interval
            except (errors.StatusError, ServerUnreachable) as exc:
                log.warning("node %s: renewing its lease failed: %s", self.node_name, exc)
                delay = min(self.interval, 2.0 + random.random())

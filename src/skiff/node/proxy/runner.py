"""`run_proxy`: the service proxy of one node, from the API's Services and EndpointSlices to iptables.

Two informers (all namespaces) feed a `SyncLoop`; each sync reads both
caches, turns them into `ServicePort`s and lets the `Syncer` write what
changed. Nothing is synced before both informers have listed, so a
restarting proxy never programs a half-known world. At the end the proxy's
chains and jump rules are removed (`cleanup=False` keeps them, so that
traffic keeps flowing across a restart, as kube-proxy does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from skiff.client import Client, InformerFactory, resources
from skiff.client.tasks import wait_or_stop
from skiff.node.proxy.iptables import Syncer
from skiff.node.proxy.model import service_ports
from skiff.node.proxy.syncloop import SyncLoop

log = logging.getLogger(__name__)


async def run_proxy(
    client: Client,
    stop: asyncio.Event,
    node_name: str,
    cluster_cidr: str | None,
    node_ips: Sequence[str] = (),
    netns: str | None = None,
    *,
    min_sync_period: float = 1.0,
    sync_period: float = 30.0,
    cleanup: bool = True,
) -> None:
    """Proxy Services for `node_name` until `stop` is set.

    `cluster_cidr`: the pods' addresses (traffic from elsewhere to a cluster IP is masqueraded);
    `node_ips`: the addresses NodePorts answer on (default: every local address);
    `netns`: program that network namespace instead of the current one.
    """
    factory = InformerFactory(client)
    services = factory.informer(resources.SERVICES)
    slices = factory.informer(resources.ENDPOINTSLICES)
    syncer = Syncer(cluster_cidr=cluster_cidr, node_port_addresses=node_ips, netns=netns)

    async def sync(full: bool) -> None:
        if full and not await syncer.verify():
            syncer.invalidate()
        ports = service_ports(services.list(), slices.list(), node_name)
        if await syncer.sync(ports):
            log.info("proxy %s: synced %d service ports (full=%s)", node_name, len(ports), full)

    loop = SyncLoop(sync, min_interval=min_sync_period, full_interval=sync_period)
    for informer in (services, slices):
        informer.add_handlers(on_add=loop.request, on_update=_on_update(loop), on_delete=loop.request)
    factory.start()
    try:
        await wait_or_stop(factory.wait_synced(), stop)
        if not stop.is_set():
            log.info("proxy %s: caches synced; programming %s", node_name, f"netns {netns}" if netns else "this host")
            await loop.run(stop)
    finally:
        await factory.stop()
        if cleanup:
            await syncer.cleanup()


def _on_update(loop: SyncLoop) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new:  # a resync hands the same object twice: nothing changed
            loop.request()

    return on_update

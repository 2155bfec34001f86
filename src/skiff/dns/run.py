"""`run_dns`: the cluster DNS server as a component, a client of the API like the controllers.

Informers list and watch Services and EndpointSlices (and Pods for
`pods="verified"`) from the apiserver; the `Resolver` reads their caches on
every query, so an answer follows a change as soon as its watch event
arrives. It listens on UDP and TCP on each address until `stop` is set,
then closes its sockets, ends the pending forwards and stops the informers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from skiff.client import Client, Informer, resources
from skiff.dns.forward import Forwarder, Upstream, default_upstreams
from skiff.dns.records import DEFAULT_TTL, ClusterData, PodsMode, Resolver
from skiff.dns.server import DnsServer, UdpProtocol, serve_tcp_connection

log = logging.getLogger(__name__)
SYNC_WAIT = 10.0  # serve after this long even if the caches are not filled yet (answers may be NXDOMAIN)


async def run_dns(
    client: Client,
    stop: asyncio.Event,
    listen: Sequence[tuple[str, int]] = (("127.0.0.1", 10053),),
    cluster_domain: str = "cluster.local",
    upstreams: Sequence[Upstream] | None = None,
    *,
    ttl: int = DEFAULT_TTL,
    pods: PodsMode = "insecure",
    exclude_upstreams: Sequence[str] = (),
    forward_timeout: float = 2.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve cluster DNS on `listen` until `stop` is set.

    `upstreams` default to the host's resolv.conf nameservers other than this server itself (a listen
    address on port 53) and `exclude_upstreams` (the DNS Service's ClusterIP, say). `ready` is set once
    the sockets listen.
    """
    informers = [Informer(client, resources.SERVICES), Informer(client, resources.ENDPOINTSLICES)]
    if pods == "verified":
        informers.append(Informer(client, resources.PODS))
    data = ClusterData(
        services=informers[0].cache, slices=informers[1].cache, pods=informers[2].cache if pods == "verified" else None
    )
    reachable = tuple(h for h, _ in listen if not ipaddress.ip_address(h).is_unspecified)
    resolver = Resolver(data, zone=cluster_domain, ttl=ttl, pods=pods, ns_addresses=reachable)
    for informer in informers:
        informer.add_handlers(
            on_add=lambda _o: resolver.changed(),
            on_update=lambda _o, _n: resolver.changed(),
            on_delete=lambda _o: resolver.changed(),
        )
    if upstreams is None:
        upstreams = default_upstreams(exclude_upstreams, listen=listen)
        if not upstreams:
            log.warning("no upstream nameserver in /etc/resolv.conf: names outside %s get SERVFAIL", cluster_domain)
    forwarder = Forwarder(upstreams, timeout=forward_timeout, total=2 * forward_timeout)
    server = DnsServer(resolver, forwarder)
    for informer in informers:
        informer.start()
    closers: list[Any] = []
    connections: set[asyncio.StreamWriter] = set()
    try:
        try:
            async with asyncio.timeout(SYNC_WAIT):
                await asyncio.gather(*(i.wait_synced() for i in informers))
        except TimeoutError:
            log.warning("cluster DNS: caches not synced after %.0fs; serving anyway", SYNC_WAIT)
        loop = asyncio.get_running_loop()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.add(writer)
            try:
                await serve_tcp_connection(server, reader, writer)
            finally:
                connections.discard(writer)

        for host, port in listen:
            transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(server), local_addr=(host, port))
            closers.append(transport)
            tcp = await asyncio.start_server(on_connection, host, port, reuse_address=True)
            closers.append(tcp)
        log.info(
            "cluster DNS for %s on %s; upstreams %s",
            cluster_domain,
            ", ".join(f"{h}:{p}" for h, p in listen),
            ", ".join(f"{h}:{p}" for h, p in upstreams) or "none",
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for closer in closers:
            closer.close()
        for writer in list(connections):
            writer.close()
        for closer in closers:
            if isinstance(closer, asyncio.Server):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await closer.wait_closed()
        await server.close()
        await asyncio.gather(*(i.stop() for i in informers))

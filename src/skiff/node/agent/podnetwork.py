"""The pod network between nodes, host-gw style: a route to every other node's pod CIDR, and masquerade.

Each node's pods live on its own bridge in its own `spec.podCIDR`. For pods on different nodes to
reach each other by pod IP, every node routes each other node's pod CIDR via that node's
InternalIP (the nodes share a link, as flannel's host-gw backend requires). The agent watches
Nodes and keeps those routes: added when a node appears with a pod CIDR, moved when its address
changes, removed when it goes. Skiff's routes carry their own routing protocol number
(`proto 199`), so only routes the agent added are ever changed or deleted.

Pod traffic leaving the cluster CIDR is masqueraded to the node's address (the bridge plugin's own
masquerade is off, since it would also hide pod IPs from pods on other nodes): one nat chain per
agent, `SKIFF-MASQ-<bridge>`, jumped to from POSTROUTING. IP forwarding is switched on. At stop the
routes and the chain go, as the proxy's rules do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from skiff.client import Client, Informer, resources
from skiff.client.tasks import wait_or_stop
from skiff.node.proxy.syncloop import SyncLoop
from skiff.node.runtime.proc import run

log = logging.getLogger(__name__)
ROUTE_PROTO = "199"  # the routing protocol number of skiff's routes (`ip route show proto 199`)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Route:
    destination: str  # a pod CIDR
    via: str  # the node's InternalIP


def desired_routes(nodes: Iterable[Obj], own_name: str) -> set[Route]:
    """A route to each other node's IPv4 pod CIDRs via its InternalIP (nodes without either: none)."""
    routes = set()
    for node in nodes:
        if node["metadata"]["name"] == own_name or node["metadata"].get("deletionTimestamp"):
            continue
        spec, status = node.get("spec") or {}, node.get("status") or {}
        ips = [a.get("address", "") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"]
        via = next((ip for ip in ips if _is_v4(ip)), "")
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        for cidr in cidrs:
            if via and _is_v4(cidr.split("/")[0]):
                routes.add(Route(str(ipaddress.ip_network(cidr, strict=False)), via))
    return routes


def parse_routes(text: str) -> set[Route]:
    """`ip -4 route show proto 199` lines (`10.42.1.0/24 via 10.0.0.2 dev eth0`) as routes."""
    routes = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "via":
            dest = words[0] if "/" in words[0] else f"{words[0]}/32"
            routes.add(Route(dest, words[2]))
    return routes


def masquerade_rules(chain: str, pod_cidr: str, cluster_cidr: str) -> list[list[str]]:
    """The chain's rules: pod to pod (any node) and multicast as they are, anything else masqueraded."""
    return [
        ["-s", pod_cidr, "-d", cluster_cidr, "-m", "comment", "--comment", "skiff: pod to pod", "-j", "RETURN"],
        ["-s", pod_cidr, "-d", "224.0.0.0/4", "-j", "RETURN"],
        ["-s", pod_cidr, "-m", "comment", "--comment", "skiff: pods leaving the cluster", "-j", "MASQUERADE"],
    ]


def _is_v4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


class PodNetwork:
    """Keeps this node's routes to the other nodes' pods and its masquerade rules."""

    def __init__(self, client: Client, *, node_name: str, pod_cidr: str, cluster_cidr: str, bridge: str) -> None:
        self.client = client
        self.node_name = node_name
        self.pod_cidr = str(ipaddress.ip_network(pod_cidr, strict=False))
        self.cluster_cidr = str(ipaddress.ip_network(cluster_cidr, strict=False))
        self.chain = f"SKIFF-MASQ-{bridge}"[:28]
        self.nodes = Informer(client, resources.NODES)

    @property
    def _jump(self) -> list[str]:
        return ["POSTROUTING", "-m", "comment", "--comment", "skiff pod network masquerade", "-j", self.chain]

    async def _iptables(self, *args: str, check: bool = True) -> int:
        code, _, _ = await run("iptables", "-w", "-t", "nat", *args, check=check)
        return code

    async def setup(self) -> None:
        await asyncio.to_thread(_write, "/proc/sys/net/ipv4/ip_forward", "1")
        if await self._iptables("-n", "-L", self.chain, check=False) != 0:
            await self._iptables("-N", self.chain)
        await self._iptables("-F", self.chain)
        for rule in masquerade_rules(self.chain, self.pod_cidr, self.cluster_cidr):
            await self._iptables("-A", self.chain, *rule)
        if await self._iptables("-C", *self._jump, check=False) != 0:
            await self._iptables("-A", *self._jump)

    async def current_routes(self) -> set[Route]:
        _, out, _ = await run("ip", "-4", "route", "show", "proto", ROUTE_PROTO)
        return parse_routes(out.decode())

    async def sync(self, _full: bool = False) -> None:
        want = desired_routes(self.nodes.list(), self.node_name)
        have = await self.current_routes()
        for route in sorted(have - want, key=lambda r: r.destination):
            log.info("pod network: removing the route to %s via %s", route.destination, route.via)
            await run("ip", "route", "del", route.destination, "proto", ROUTE_PROTO, check=False)
        for route in sorted(want - have, key=lambda r: r.destination):
            if ipaddress.ip_network(route.destination).overlaps(ipaddress.ip_network(self.pod_cidr)):
                log.warning("pod network: node pod CIDR %s overlaps this node's %s; no route", route.destination,
                            self.pod_cidr)  # fmt: skip
                continue
            log.info("pod network: routing %s via %s", route.destination, route.via)
            await run("ip", "route", "replace", route.destination, "via", route.via, "proto", ROUTE_PROTO)

    async def cleanup(self) -> None:
        for route in await self.current_routes():
            await run("ip", "route", "del", route.destination, "proto", ROUTE_PROTO, check=False)
        while await self._iptables("-C", *self._jump, check=False) == 0:
            await self._iptables("-D", *self._jump)
        await self._iptables("-F", self.chain, check=False)
        await self._iptables("-X", self.chain, check=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Set up, keep the routes in step with the Nodes until `stop`, then clean up."""
        loop = SyncLoop(self.sync, min_interval=0.5, full_interval=30.0)
        def on_update(old: Obj, new: Obj) -> None:
            if desired_routes([old], self.node_name) != desired_routes([new], self.node_name):
                loop.request()  # not on every heartbeat: only when a route would change

        self.nodes.add_handlers(on_add=loop.request, on_update=on_update, on_delete=loop.request)
        try:
            await self.setup()
            self.nodes.start()
            await wait_or_stop(self.nodes.wait_synced(), stop)
            if not stop.is_set():
                await loop.run(stop)
        finally:
            await self.nodes.stop()
            await asyncio.shield(self.cleanup())


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)

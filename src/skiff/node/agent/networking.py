"""The node agent's networking beside the pods: the service proxy, the pod network, and the pods' DNS.

As kube-proxy runs next to the kubelet on every node, the agent runs the service proxy
(`skiff.node.proxy.runner.run_proxy`) for its node inside its own process, unless
`--disable-proxy`; and the host-gw pod network (`podnetwork.PodNetwork`) that routes to the other
nodes' pods, unless `--disable-pod-network` (the bridge plugin then masquerades on its own, as on a
single node). Both clean up what they wrote when the agent stops. `pod_dns` reads the node's
resolv.conf once and gives the pods' DNS settings (`dnsconfig.PodDNS`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from skiff.client import Client
from skiff.client.tasks import spawn
from skiff.node.agent.dnsconfig import PodDNS, ResolverConfig, parse_resolv_conf
from skiff.node.agent.podnetwork import PodNetwork

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
DEFAULT_CLUSTER_DNS = "10.43.0.10"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"


@dataclass(frozen=True, kw_only=True)
class NetworkOptions:
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR  # every node's pods; traffic leaving it is masqueraded
    cluster_dns: tuple[str, ...] = (DEFAULT_CLUSTER_DNS,)  # the pods' nameserver (ClusterFirst); () for none
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    resolv_conf: str = DEFAULT_RESOLV_CONF  # the host's settings, for dnsPolicy Default; "" for none
    proxy: bool = True
    pod_network: bool = True


def add_network_flags(parser: argparse.ArgumentParser) -> None:
    """`skiff agent`'s flags for the proxy, the pod network and the pods' DNS."""
    parser.add_argument("--cluster-cidr", default=DEFAULT_CLUSTER_CIDR, metavar="CIDR", type=_cidr,
                        help=f"every node's pod addresses (default: {DEFAULT_CLUSTER_CIDR})")  # fmt: skip
    parser.add_argument("--cluster-dns", action="append", default=[], metavar="IP", type=_ip,
                        help=f"the pods' nameserver for dnsPolicy ClusterFirst (repeatable; default: "
                        f"{DEFAULT_CLUSTER_DNS}; '' for none)")  # fmt: skip
    parser.add_argument("--cluster-domain", default=DEFAULT_CLUSTER_DOMAIN, metavar="DOMAIN",
                        help=f"the cluster's DNS domain (default: {DEFAULT_CLUSTER_DOMAIN})")  # fmt: skip
    parser.add_argument("--resolv-conf", default=DEFAULT_RESOLV_CONF, metavar="FILE",
                        help=f"the host's resolver settings, for dnsPolicy Default (default: {DEFAULT_RESOLV_CONF})")
    parser.add_argument("--disable-proxy", action="store_true",
                        help="run no service proxy (Service IPs then need another proxy on this node)")  # fmt: skip
    parser.add_argument("--disable-pod-network", action="store_true",
                        help="add no routes to other nodes' pods; the bridge plugin masquerades")  # fmt: skip


def network_options(args: argparse.Namespace) -> NetworkOptions:
    dns = tuple(ip for ip in args.cluster_dns if ip) if args.cluster_dns else (DEFAULT_CLUSTER_DNS,)
    return NetworkOptions(cluster_cidr=args.cluster_cidr, cluster_dns=dns, cluster_domain=args.cluster_domain,
                          resolv_conf=args.resolv_conf, proxy=not args.disable_proxy,
                          pod_network=not args.disable_pod_network)  # fmt: skip


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CIDR: {value!r}") from None


def _ip(value: str) -> str:
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None


async def pod_dns(opts: NetworkOptions) -> PodDNS:
    """The pods' DNS settings: the cluster's, and the host's from its resolv.conf (read once).

    As k3s does, a default /etc/resolv.conf naming only loopback resolvers (systemd-resolved's stub,
    which no pod can reach) gives way to systemd-resolved's own list of upstreams.
    """
    host = ResolverConfig()
    if opts.resolv_conf:
        try:
            host = parse_resolv_conf(await asyncio.to_thread(Path(opts.resolv_conf).read_text))
        except OSError as e:
            log.warning("cannot read %s (%s): pods with dnsPolicy Default get no nameserver", opts.resolv_conf, e)
        only_loopback = bool(host.nameservers) and all(_loopback(ns) for ns in host.nameservers)
        if opts.resolv_conf == DEFAULT_RESOLV_CONF and only_loopback:
            try:
                host = parse_resolv_conf(await asyncio.to_thread(Path(SYSTEMD_RESOLV_CONF).read_text))
            except OSError:
                log.warning("%s names only loopback resolvers, unreachable from pods with dnsPolicy Default",
                            opts.resolv_conf)  # fmt: skip
    return PodDNS(cluster_dns=opts.cluster_dns, cluster_domain=opts.cluster_domain, host=host)


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


async def run_node_network(
    client: Client, stop: asyncio.Event, opts: NetworkOptions, *, node_name: str, pod_cidr: str, bridge: str
) -> None:
    """The proxy and the pod network until `stop` is set; each removes its rules and routes at the end."""
    from skiff.node.proxy.runner import run_proxy

    if not ipaddress.ip_network(pod_cidr, strict=False).subnet_of(ipaddress.ip_network(opts.cluster_cidr)):  # type: ignore[arg-type]
        log.warning("pod CIDR %s is outside the cluster CIDR %s: its pods' traffic to other nodes' pods is "
                    "masqueraded", pod_cidr, opts.cluster_cidr)  # fmt: skip
    tasks = []
    if opts.proxy:
        tasks.append(spawn(run_proxy(client, stop, node_name, opts.cluster_cidr), name="agent proxy", logger=log))
    if opts.pod_network:
        network = PodNetwork(client, node_name=node_name, pod_cidr=pod_cidr, cluster_cidr=opts.cluster_cidr,
                             bridge=bridge)  # fmt: skip
        tasks.append(spawn(network.run(stop), name="agent pod network", logger=log))
    await asyncio.gather(*tasks, return_exceptions=True)  # a failure was logged as it happened

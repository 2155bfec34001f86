"""The cluster DNS server of `skiff server`, run as one more child process (`skiff dns`).

k3s deploys CoreDNS as pods behind the `kube-system/kube-dns` Service (10.43.0.10); `skiff server`
runs its DNS server beside the API server instead (unless `--disable-dns`), listening on this
machine's address (`--dns-address`, default: the one its default route leaves from) at
`--dns-port` (53), and makes the kube-dns Service's endpoints name that address, so the proxy on
every node forwards the pods' queries there. `--cluster-dns` is the Service's ClusterIP (default:
the tenth address of the service range, as kubeadm and k3s choose) and must match the agents'
`--cluster-dns`. Names outside the cluster go to `--dns-upstream` (default: this machine's
resolv.conf).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, replace

from skiff.cli.children import ChildSpec

log = logging.getLogger("skiff")


@dataclass(frozen=True)
class ClusterDnsOptions:
    cluster_ip: str
    address: str
    port: int
    cluster_domain: str = "cluster.local"
    upstreams: tuple[str, ...] = ()
    log_level: str = "info"


def add_cluster_dns_flags(server: argparse.ArgumentParser) -> None:
    """`skiff server`'s flags for its cluster DNS server."""
    server.add_argument("--disable-dns", action="store_true", help="run no cluster DNS server")
    server.add_argument("--cluster-dns", metavar="IP",
                        help="ClusterIP of the kube-system/kube-dns Service (default: the tenth address of "
                        "--service-cluster-ip-range, 10.43.0.10)")  # fmt: skip
    server.add_argument("--cluster-domain", default="cluster.local", metavar="DOMAIN", help="default: cluster.local")
    server.add_argument("--dns-address", metavar="IP",
                        help="where the DNS server listens, an address the nodes reach (default: the bind address, "
                        "or this machine's address towards its default route)")  # fmt: skip
    server.add_argument("--dns-port", type=int, default=53, metavar="PORT", help="default: 53")
    server.add_argument("--dns-upstream", action="append", default=[], metavar="ADDR[:PORT]",
                        help="resolver of names outside the cluster (repeatable; default: resolv.conf's)")  # fmt: skip


def cluster_dns_options(args: argparse.Namespace) -> ClusterDnsOptions | None:
    if getattr(args, "disable_dns", True):
        return None
    cluster_ip = args.cluster_dns or str(ipaddress.ip_network(args.service_cluster_ip_range, strict=False)[10])
    return ClusterDnsOptions(
        cluster_ip=cluster_ip,
        address=args.dns_address or machine_address(args.bind_address),
        port=args.dns_port,
        cluster_domain=args.cluster_domain,
        upstreams=tuple(args.dns_upstream),
        log_level=args.log_level,
    )


def machine_address(bind_address: str) -> str:
    """The bind address if it is one, else the address this machine's default route leaves from."""
    try:
        ip = ipaddress.ip_address(bind_address)
        if not ip.is_unspecified and not ip.is_loopback:
            return str(ip)
    except ValueError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("8.8.8.8", 53))  # no packet is sent: the kernel only picks the route
            addr: str = s.getsockname()[0]
            return addr
    except OSError:
        return "127.0.0.1"


def with_cluster_dns(spec: ChildSpec, opts: ClusterDnsOptions) -> ChildSpec:
    """The local `skiff agent` child told the DNS Service's address and domain, unless its own arguments
    (`--agent-arg`) say otherwise; other children as they are."""
    if spec.name != "agent":
        return spec
    given = {arg.split("=", 1)[0] for arg in spec.argv}
    wanted = (("--cluster-dns", opts.cluster_ip), ("--cluster-domain", opts.cluster_domain))
    extra = [x for flag, value in wanted if flag not in given for x in (flag, value)]
    return replace(spec, argv=(*spec.argv, *extra))


def cluster_dns_child(opts: ClusterDnsOptions, kubeconfig: str) -> ChildSpec | None:
    """The DNS child, or None (with a warning) when this process may not listen where it should."""
    if opts.port < _unprivileged_port_start() and os.geteuid() != 0:
        log.warning("no cluster DNS: listening on port %d needs root; run `skiff server` as root, or pass "
                    "--dns-port with a port above 1023 (pods then need a proxy in front of it), or --disable-dns "
                    "to silence this", opts.port)  # fmt: skip
        return None
    if ipaddress.ip_address(opts.address).is_loopback:
        log.warning("cluster DNS on %s: pods on other machines (and behind the proxy) cannot reach a loopback "
                    "address; pass --dns-address with an address of this machine", opts.address)  # fmt: skip
    return cluster_dns_spec(opts, kubeconfig)


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def cluster_dns_spec(opts: ClusterDnsOptions, kubeconfig: str) -> ChildSpec:
    """`skiff dns` on the chosen address, owning the kube-dns Service's endpoints."""
    upstreams = [arg for u in opts.upstreams for arg in ("--upstream", u)]
    argv = (
        *("dns", "--kubeconfig", kubeconfig, "--log-level", opts.log_level),
        *("--listen", f"{opts.address}:{opts.port}", "--cluster-domain", opts.cluster_domain),
        *("--cluster-dns", opts.cluster_ip, "--service-ip", opts.cluster_ip, *upstreams),
    )
    return ChildSpec("dns", argv)

"""`skiff dns`: run the cluster DNS server alone against a server.

Parsing and process plumbing only; the server is `skiff.dns.run_dns`,
imported lazily. `skiff.cli.main` registers the subcommand with
`add_dns_parser` and hands parsed arguments to `run_dns_command`.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:10053"
DEFAULT_CLUSTER_DNS = "10.43.0.10"  # the fixed address of the DNS Service


def add_dns_parser(commands: Any) -> None:
    dns = commands.add_parser(
        "dns",
        help="run the cluster DNS server (Services and Pods by name; other names forwarded)",
        description="Answer <svc>.<ns>.svc.<domain>, SRV and pod names from the server's Services and "
        "EndpointSlices; forward other names to upstream resolvers.",
    )
    dns.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the server (default: $KUBECONFIG)")
    dns.add_argument("--listen", action="append", default=[], metavar="ADDR:PORT",
                     help=f"UDP and TCP address to serve (repeatable; default: {DEFAULT_LISTEN})")  # fmt: skip
    dns.add_argument("--cluster-domain", default="cluster.local", metavar="DOMAIN", help="default: cluster.local")
    dns.add_argument("--upstream", action="append", default=[], metavar="ADDR[:PORT]",
                     help="resolver for other names (repeatable; default: /etc/resolv.conf nameservers)")  # fmt: skip
    dns.add_argument("--cluster-dns", action="append", default=[], metavar="ADDR",
                     help="the DNS Service's ClusterIP, never an upstream even if the host's resolv.conf "
                     f"names it (repeatable; default: {DEFAULT_CLUSTER_DNS})")  # fmt: skip
    dns.add_argument("--ttl", type=int, default=5, metavar="SECONDS", help="TTL of the answers (default: 5)")
    dns.add_argument("--pods", choices=("insecure", "verified", "disabled"), default="insecure",
                     help="<a-b-c-d>.<ns>.pod names: for any address, for existing pods only, or none "
                     "(default: insecure, as kubeadm's CoreDNS)")  # fmt: skip
    dns.add_argument("--service-ip", metavar="IP",
                     help="make the kube-system/kube-dns Service with this ClusterIP lead to this server "
                     "(its endpoints: --advertise-address and the first --listen port)")  # fmt: skip
    dns.add_argument("--advertise-address", metavar="IP",
                     help="the address the kube-dns endpoints name (default: the first --listen address)")  # fmt: skip
    dns.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def parse_listen(text: str) -> tuple[str, int]:
    """`ADDR:PORT` or `[V6]:PORT`."""
    from skiff.dns import parse_upstream

    if ":" not in text.replace("[", "").replace("]", "") or (text.count(":") > 1 and not text.startswith("[")):
        raise ValueError(f"--listen {text!r}: expected ADDR:PORT")
    return parse_upstream(text)


def run_dns_command(args: argparse.Namespace) -> int:
    import asyncio

    from skiff.cli.components import run_standalone, setup_logging
    from skiff.client import Client
    from skiff.dns import parse_upstream, run_dns
    from skiff.dns.service import register_dns_service

    setup_logging(args.log_level)
    try:
        listen = [parse_listen(x) for x in args.listen or [DEFAULT_LISTEN]]
        upstreams = [parse_upstream(x) for x in args.upstream] or None
        cluster_dns = [parse_upstream(x)[0] for x in args.cluster_dns or [DEFAULT_CLUSTER_DNS]]
    except ValueError as e:
        print(f"skiff: error: {e}", file=sys.stderr)
        return 2

    advertise = args.advertise_address or listen[0][0]
    if args.service_ip and ipaddress.ip_address(advertise).is_unspecified:
        print(f"skiff: error: --service-ip needs --advertise-address when listening on {advertise}", file=sys.stderr)
        return 2

    async def component(client: Client, stop: asyncio.Event) -> None:
        ready = asyncio.Event()
        dns = run_dns(client, stop, listen, args.cluster_domain, upstreams, ttl=args.ttl, pods=args.pods,
                      exclude_upstreams=cluster_dns, ready=ready)  # fmt: skip
        serving = asyncio.create_task(dns)
        if args.service_ip:
            await asyncio.wait([serving, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if ready.is_set():
                await register_dns_service(client, cluster_ip=args.service_ip, address=advertise, port=listen[0][1])
        await serving

    return run_standalone(args.kubeconfig, component)

"""`skiff proxy`: run the service proxy (skiff's kube-proxy, iptables mode) for this node against a server.

Parsing and process plumbing only; the proxy is `skiff.node.proxy.runner.run_proxy`, imported
lazily. Needs root (iptables, conntrack, and `ip netns exec` with --netns).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from typing import Any


def add_proxy_parser(commands: Any) -> None:
    proxy = commands.add_parser(
        "proxy",
        help="run the service proxy: program iptables from Services and EndpointSlices (like kube-proxy)",
        description="Program this node's iptables so that Service cluster IPs and node ports reach ready endpoints.",
    )
    proxy.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the server (default: $KUBECONFIG)")
    proxy.add_argument("--cluster-cidr", metavar="CIDR", type=_cidr,
                       help="the pods' addresses; traffic from elsewhere to a cluster IP is masqueraded")  # fmt: skip
    proxy.add_argument("--node-name", metavar="NAME", help="this node's name (default: the host name)")
    proxy.add_argument("--nodeport-addresses", metavar="IP/CIDR", action="append", default=[], type=_cidr,
                       help="addresses node ports answer on (repeatable; default: every local address)")  # fmt: skip
    proxy.add_argument("--netns", metavar="NAME", help="program this network namespace (ip netns) instead")
    proxy.add_argument("--min-sync-period", type=float, default=1.0, metavar="SECONDS",
                       help="least time between two syncs (default: 1)")  # fmt: skip
    proxy.add_argument("--sync-period", type=float, default=30.0, metavar="SECONDS",
                       help="how often every rule is rewritten and checked (default: 30)")  # fmt: skip
    proxy.add_argument("--keep-rules", action="store_true",
                       help="leave the rules in place at exit (traffic keeps flowing across a restart)")  # fmt: skip
    proxy.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address or CIDR: {value!r}") from None


def run_proxy_command(args: argparse.Namespace) -> int:
    import asyncio

    from skiff.cli.components import run_standalone, setup_logging
    from skiff.client import Client
    from skiff.node.proxy.iptables import ProxySyncError
    from skiff.node.proxy.runner import run_proxy

    setup_logging(args.log_level)

    async def component(client: Client, stop: asyncio.Event) -> None:
        await run_proxy(
            client,
            stop,
            (args.node_name or socket.gethostname()).lower(),
            args.cluster_cidr,
            args.nodeport_addresses,
            args.netns,
            min_sync_period=args.min_sync_period,
            sync_period=args.sync_period,
            cleanup=not args.keep_rules,
        )

    return run_standalone(args.kubeconfig, component, errors=(ProxySyncError,))

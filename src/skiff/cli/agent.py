"""`skiff agent`: run the node agent (the kubelet of skiff) for this machine against a server.

Parsing and process plumbing only; the agent is `skiff.node.agent.agent.Agent`, imported lazily.
Needs root (runc, network namespaces, CNI, mounts).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = Path("/var/lib/skiff/agent")


def add_agent_parser(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="run the node agent: register this machine as a Node and run its pods on runc",
        description="Register this machine as a Node, heartbeat its Lease and run the pods bound to it.",
    )
    agent.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the server (default: $KUBECONFIG)")
    agent.add_argument("--server", metavar="URL", help="join the server at URL (https://HOST:6443) with --token: "
                       "the node's own credentials are requested and kept in the state dir")  # fmt: skip
    agent.add_argument("--token", metavar="TOKEN", default=os.environ.get("SKIFF_TOKEN", ""),
                       help="the server's join token, from its DATA_DIR/token (default: $SKIFF_TOKEN)")  # fmt: skip
    agent.add_argument("--node-name", metavar="NAME", help="the Node's name (default: the host name)")
    agent.add_argument("--node-ip", metavar="IP", help="InternalIP (default: the address that reaches the server)")
    agent.add_argument("--pod-cidr", default="10.42.0.0/24", metavar="CIDR", help="default: 10.42.0.0/24")
    agent.add_argument("--bridge", default="skiff0", metavar="NAME", help="the pods' bridge (default: skiff0)")
    agent.add_argument("--state-dir", metavar="DIR", help=f"default: {DEFAULT_STATE_DIR}")
    agent.add_argument("--registry", default="127.0.0.1:5000", metavar="HOST:PORT",
                       help="registry of unqualified image names (default: 127.0.0.1:5000)")  # fmt: skip
    agent.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT",
                       help="a registry reached over plain HTTP or unverified TLS (repeatable)")  # fmt: skip
    agent.add_argument("--cgroup-parent", default="skiff", metavar="NAME", help="default: skiff")
    agent.add_argument("--netns-prefix", default="skiff-", metavar="PREFIX", help="default: skiff-")
    agent.add_argument("--kubelet-port", type=int, default=10250, metavar="PORT",
                       help="port of the kubelet API (logs, exec, port-forward; default: 10250)")  # fmt: skip
    agent.add_argument("--container-log-max-size", type=_byte_size, default="10Mi", metavar="QUANTITY",
                       help="a container's log is rotated past this size (default: 10Mi)")  # fmt: skip
    agent.add_argument("--container-log-max-files", type=int, default=5, metavar="N",
                       help="log files kept per container, the live one included (default: 5)")  # fmt: skip
    agent.add_argument("--container-log-monitor-interval", type=_duration, default="10s", metavar="DURATION",
                       help="how often log sizes are checked (default: 10s)")  # fmt: skip
    agent.add_argument("--image-gc-high-threshold", type=int, default=85, metavar="PERCENT",
                       help="disk usage of the image filesystem at which image GC always runs (default: 85)")
    agent.add_argument("--image-gc-low-threshold", type=int, default=80, metavar="PERCENT",
                       help="disk usage image GC frees down to (default: 80)")
    agent.add_argument("--minimum-image-gc-age", type=float, default=120.0, metavar="SECONDS",
                       help="an unused image younger than this is never collected (default: 120)")
    agent.add_argument("--image-gc-period", type=float, default=300.0, metavar="SECONDS",
                       help="how often image GC looks at the disk (default: 300, the kubelet's)")
    agent.add_argument("--pod-max-pids", type=int, default=-1, metavar="N",
                       help="the most processes and threads each pod may have (default: -1, no limit)")
    agent.add_argument("--seccomp-default", action="store_true",
                       help="containers without a seccompProfile run with RuntimeDefault, not Unconfined "
                            "(Localhost profiles are read from STATE_DIR/seccomp)")
    from skiff.node.agent.networking import add_network_flags

    add_network_flags(agent)
    agent.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def _byte_size(value: str) -> int:
    from skiff.api import quantity

    try:
        size = quantity.value(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a quantity such as 10Mi") from None
    if size <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return size


def _duration(value: str) -> float:
    from skiff.api.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 10s") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return seconds


def run_agent(args: argparse.Namespace) -> int:
    import asyncio

    from skiff.cli.components import run_standalone, setup_logging
    from skiff.client import Client
    from skiff.node.agent.agent import Agent, AgentConfig
    from skiff.node.agent.container_logs import LogRotation
    from skiff.node.agent.imagegc import ImageGCPolicy
    from skiff.node.agent.networking import network_options

    setup_logging(args.log_level)
    config = AgentConfig(
        node_name=(args.node_name or socket.gethostname()).lower(),
        state_dir=Path(args.state_dir or DEFAULT_STATE_DIR),
        pod_cidr=args.pod_cidr,
        node_ip=args.node_ip or "",
        bridge=args.bridge,
        registry=args.registry,
        insecure_registries=tuple(args.insecure_registry),
        cgroup_parent=args.cgroup_parent,
        netns_prefix=args.netns_prefix,
        kubelet_port=args.kubelet_port,
        log_rotation=LogRotation(
            max_size=args.container_log_max_size,
            max_files=max(2, args.container_log_max_files),
            interval=args.container_log_monitor_interval,
        ),
        network=network_options(args),
        image_gc=ImageGCPolicy(
            high_threshold_percent=args.image_gc_high_threshold,
            low_threshold_percent=args.image_gc_low_threshold,
            min_age=args.minimum_image_gc_age,
        ),
        image_gc_period=args.image_gc_period,
        pod_max_pids=args.pod_max_pids,
        seccomp_default=args.seccomp_default,
    )

    async def component(client: Client, stop: asyncio.Event) -> None:
        await Agent(client, config).run(stop)

    kubeconfig = args.kubeconfig
    if args.server and not kubeconfig:  # joining: the node's own kubeconfig, through TLS bootstrap the first time
        from skiff.node.agent.bootstrap import BootstrapError, ensure_kubeconfig

        try:
            join = ensure_kubeconfig(args.server, args.token, config.node_name, config.state_dir)
            kubeconfig = str(asyncio.run(join))
        except BootstrapError as e:
            print(f"skiff: error: {e}", file=sys.stderr)
            return 1
    return run_standalone(kubeconfig, component)

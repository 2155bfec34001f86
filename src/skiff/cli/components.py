"""Starting skiff's components, k3s-style, each gated on the one before it.

`skiff server` runs the image registry and the API server, then — once the
API server accepts connections — the controller manager and the scheduler
as clients of it (with the admin kubeconfig's identity, through the server's
private local socket: `skiff.apiserver.local_access`): as child processes
(see `skiff.cli.children`), or inside the server with `--single-process`,
and this machine's node agent as a child (`skiff.cli.local_agent`).
Any component ending ends them all:
a broken controller manager stops the server instead of leaving a cluster
that silently does nothing. `skiff controller-manager`, `skiff scheduler`
and `skiff sim nodes` run one component alone against a kubeconfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skiff.cli.children import ChildFailed, ChildSpec, supervise
from skiff.cli.cluster_dns import ClusterDnsOptions, cluster_dns_child, with_cluster_dns
from skiff.cli.local_agent import LocalAgentOptions, local_agent_spec, seed_images
from skiff.client import Client, load_kubeconfig
from skiff.client.local import from_environment
from skiff.heap import tune_for_caches

log = logging.getLogger("skiff")

Component = Callable[[Client, asyncio.Event], Coroutine[Any, Any, None]]
_ADMIN_CHILDREN = frozenset({"controller-manager", "scheduler", "dns", "gateway"})  # started with the admin kubeconfig


@dataclass
class ClusterOptions:
    controllers: str = "*"  # Kubernetes' --controllers syntax; "" or "-*"-like disables via disable_controllers
    disable_controllers: bool = False
    disable_scheduler: bool = False
    scheduler_config: str | None = None
    leader_elect: bool = False
    controller_flags: dict[str, float | str] = field(default_factory=dict)
    single_process: bool = False  # controllers and scheduler inside the server process, not as children
    log_level: str = "info"
    registry_address: str | None = "127.0.0.1:5000"  # where the bundled image registry listens; None: none
    agent: LocalAgentOptions | None = None  # this machine's node agent (a child process); None: none
    dns: ClusterDnsOptions | None = None  # the cluster DNS server (a child process); None: none
    gateway_port: int | None = None  # the function gateway (a child process) on this port; None: none
    gateway_args: tuple[str, ...] = ()  # --gateway-arg: more `skiff gateway` arguments


def controller_manager(opts: ClusterOptions) -> Component:
    async def run(client: Client, stop: asyncio.Event) -> None:
        from skiff.controllers import manager
        from skiff.controllers.context import ControllerOptions

        options = ControllerOptions(**opts.controller_flags)  # type: ignore[arg-type]
        await manager.run(client, stop, controllers=opts.controllers, options=options, leader_elect=opts.leader_elect)

    return run


def scheduler(opts: ClusterOptions) -> Component:
    async def run(client: Client, stop: asyncio.Event) -> None:
        from skiff.scheduler.scheduler import run_scheduler

        await run_scheduler(client, stop, config_path=opts.scheduler_config, leader_elect=opts.leader_elect)

    return run


def simulated_nodes(
    *,
    count: int,
    prefix: str,
    cpu: str,
    memory: str,
    pods: int,
    lease_duration: int = 40,
    status_interval: float = 10.0,
    status_report_interval: float = 300.0,
    delete_on_exit: bool = False,
) -> Component:
    async def run(client: Client, stop: asyncio.Event) -> None:
        from skiff.node.simulated import run_simulated_nodes

        await run_simulated_nodes(
            client,
            stop,
            count=count,
            prefix=prefix,
            cpu=cpu,
            memory=memory,
            pods=pods,
            lease_duration=lease_duration,
            status_interval=status_interval,
            status_report_interval=status_report_interval,
            delete_on_exit=delete_on_exit,
        )

    return run


class ComponentFailed(Exception):
    """A component ended with an error (or on its own) before it was asked to stop."""


async def run_components(client: Client, stop: asyncio.Event, components: dict[str, Component]) -> None:
    """Run components until `stop` is set or one of them ends; then stop the rest.

    Raises `ComponentFailed` when a component failed, so the process exits non-zero.
    """
    tasks: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(fn(client, stop), name=name): name for name, fn in components.items()
    }
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is None and not stop.is_set():
                log.info("%s ended; stopping", tasks[task])
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
    # every component's outcome, also of one that set `stop` itself before it raised
    failed: list[str] = []
    for task, name in tasks.items():
        if task.cancelled():
            log.error("%s was cancelled; stopping", name)
            failed.append(f"{name} was cancelled")
        elif (exc := task.exception()) is not None:
            log.error("%s failed; stopping", name, exc_info=exc)
            failed.append(f"{name} failed: {exc}")
    if failed:
        raise ComponentFailed("; ".join(failed))


async def run_cluster(config: object, opts: ClusterOptions) -> None:
    """The image registry and the API server, then the controller manager and scheduler against it."""
    from skiff.apiserver.serve import ServerConfig

    assert isinstance(config, ServerConfig)
    if opts.registry_address is None:
        await _run_control_plane(config, opts)
        return
    from skiff.images.errors import ImageError
    from skiff.images.registry import run_registry

    async with contextlib.AsyncExitStack() as stack:
        try:
            registry = await stack.enter_async_context(run_registry(config.data_dir, opts.registry_address))
        except ImageError as e:
            raise ComponentFailed(
                f"{e} (--registry-address HOST:PORT puts it elsewhere; --disable-registry runs none)"
            ) from None
        if opts.agent is not None:
            seeding = asyncio.create_task(seed_images(registry.host), name="seed images")
            stack.callback(seeding.cancel)
        await _run_control_plane(config, opts)


async def _run_control_plane(config: object, opts: ClusterOptions) -> None:
    from skiff.apiserver.auth import UserInfo
    from skiff.apiserver.local_access import LocalAccess
    from skiff.apiserver.pki import ADMIN_USER, MASTERS_GROUP
    from skiff.apiserver.serve import ServerConfig, local_server_url, serve

    assert isinstance(config, ServerConfig)
    stop, ready = asyncio.Event(), asyncio.Event()
    local = LocalAccess(config.data_dir)  # the components' own way in: a private socket, no TLS
    server = asyncio.create_task(serve(config, ready=ready, stop=stop, local=local), name="apiserver")
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([server, waiter], return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        waiter.cancel()
        await server  # raises ServerStartError
        return
    components: dict[str, Component] = {}
    if not opts.disable_controllers:
        components["controller-manager"] = controller_manager(opts)
    if not opts.disable_scheduler:
        components["scheduler"] = scheduler(opts)
    kubeconfig = Path(config.data_dir) / "kubeconfig.yaml"
    specs = [] if opts.single_process else child_specs(opts, str(kubeconfig))
    admin = UserInfo(ADMIN_USER, (MASTERS_GROUP,))  # who the admin kubeconfig is
    if opts.agent is not None:  # this machine's node agent: always a child, with its own identity
        url = local_server_url(config.bind_address, config.port)
        agent = await local_agent_spec(
            opts.agent, data_dir=Path(config.data_dir), server_url=url, bind_address=config.bind_address
        )
        specs += [agent] if agent is not None else []
    if opts.dns is not None and (dns := cluster_dns_child(opts.dns, str(kubeconfig))) is not None:
        specs = [*(with_cluster_dns(s, opts.dns) for s in specs), dns]  # a child; the local agent's pods ask it
    if opts.gateway_port is not None:  # the function gateway: a child
        from skiff.cli.fn import gateway_spec

        specs.append(gateway_spec(opts.gateway_port, str(kubeconfig), Path(config.data_dir), opts))
    # the children with the admin kubeconfig reach the server through its local socket, as the same user
    specs = [replace(s, env=local.child_env(admin)) if s.name in _ADMIN_CHILDREN else s for s in specs]
    runners: list[Coroutine[Any, Any, None]] = []
    if opts.single_process and components:
        runners.append(_in_process(kubeconfig, stop, components, env=local.child_env(admin)))
    if specs:
        runners.append(supervise(specs, stop))
    if not runners:  # the API server alone
        await server
        return
    comps = asyncio.create_task(_together(runners), name="components")
    try:
        await asyncio.wait([server, comps], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        try:
            await comps
        except ChildFailed as e:
            raise ComponentFailed(str(e)) from None
    finally:
        stop.set()
        await server


async def _together(runners: list[Coroutine[Any, Any, None]]) -> None:
    """Run the runners (each stops the others through the shared stop event); raise the first failure."""
    results = await asyncio.gather(*runners, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _in_process(
    kubeconfig: Path, stop: asyncio.Event, components: dict[str, Component], *, env: dict[str, str]
) -> None:
    async with Client(from_environment(load_kubeconfig(kubeconfig), dict(env))) as client:
        await run_components(client, stop, components)


def child_specs(opts: ClusterOptions, kubeconfig: str) -> list[ChildSpec]:
    """The `skiff controller-manager` / `skiff scheduler` command lines equivalent to `opts`."""
    common = ["--kubeconfig", kubeconfig, "--log-level", opts.log_level]
    if opts.leader_elect:
        common.append("--leader-elect")
    specs = []
    if not opts.disable_controllers:
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in opts.controller_flags.items() if value != ""]
        argv = ("controller-manager", *common, f"--controllers={opts.controllers}", *flags)
        specs.append(ChildSpec("controller-manager", argv))
    if not opts.disable_scheduler:
        config = ["--config", opts.scheduler_config] if opts.scheduler_config else []
        specs.append(ChildSpec("scheduler", ("scheduler", *common, *config)))
    return specs


async def run_alone(kubeconfig: str | None, component: Component) -> None:
    """One component against a server named by a kubeconfig, until SIGTERM/SIGINT."""
    tune_for_caches()  # components keep informer caches: see skiff.heap
    stop = asyncio.Event()
    config = from_environment(load_kubeconfig(kubeconfig))  # a child of `skiff server`: its local socket
    with stop_on_signals(stop):
        async with Client(config) as client:
            await run_components(client, stop, {"component": component})


def setup_logging(level: str) -> None:
    """skiff's log format at `level` ("debug", "info", ...), for every `skiff` command."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def run_standalone(kubeconfig: str | None, component: Component, *, errors: tuple[type[Exception], ...] = ()) -> int:
    """A `skiff <component>` command's exit code: run it alone until SIGTERM/SIGINT.

    Errors a user can act on (bad kubeconfig, unreachable server, bad flags,
    a taken port, the component failing, or the command's own `errors`) are
    one line on stderr and exit code 1; Ctrl-C before the signal handlers
    are in place is 130.
    """
    from skiff.client import KubeconfigError, ServerUnreachable

    handled: tuple[type[Exception], ...] = (KubeconfigError, ServerUnreachable, ValueError, OSError, ComponentFailed)
    try:
        asyncio.run(run_alone(kubeconfig, component))
    except handled + errors as e:
        print(f"skiff: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

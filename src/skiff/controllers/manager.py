"""The controller manager: builds every enabled controller over shared informers and runs them.

Each controller lives in its own module under `skiff.controllers` and
exposes `new(ctx: ControllerContext) -> Controller`. The manager imports
the enabled ones, starts the shared informers, runs every controller as a
named, guarded task, and stops them all when asked (or when one dies, so
that a broken controller ends the process instead of failing silently).
With `leader_elect`, it runs only while holding the
`kube-system/skiff-controller-manager` Lease, so several servers can run
side by side.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import uuid
from collections.abc import Iterable

from skiff.client import Client, Controller, InformerFactory, LeaderElector
from skiff.controllers.context import ControllerContext, ControllerOptions

log = logging.getLogger(__name__)

# name -> module; the order is the start order
CONTROLLERS: dict[str, str] = {
    "namespace": "skiff.controllers.namespace",
    "serviceaccount": "skiff.controllers.serviceaccount",
    "garbagecollector": "skiff.controllers.garbagecollector",
    "replicaset": "skiff.controllers.replicaset",
    "deployment": "skiff.controllers.deployment",
    "daemonset": "skiff.controllers.daemonset",
    "statefulset": "skiff.controllers.statefulset",
    "job": "skiff.controllers.job",
    "cronjob": "skiff.controllers.cronjob",
    "endpoints": "skiff.controllers.endpoints",
    "endpointslice": "skiff.controllers.endpointslice",
    "nodelifecycle": "skiff.controllers.nodelifecycle",
    "podgc": "skiff.controllers.podgc",
    "horizontalpodautoscaling": "skiff.controllers.hpa",
    "root-ca-cert-publisher": "skiff.controllers.rootcacert",
    "persistentvolume-binder": "skiff.controllers.persistentvolume",
    "local-path-provisioner": "skiff.controllers.localpath",
    "pvc-protection": "skiff.controllers.pvcprotection",
    "pv-protection": "skiff.controllers.pvprotection",
    "csrapproving": "skiff.controllers.csrapproving",
    "csrsigning": "skiff.controllers.csrsigning",
    "clusterrole-aggregation": "skiff.controllers.clusterroleaggregation",
}


def build(ctx: ControllerContext, names: Iterable[str]) -> list[Controller]:
    controllers = []
    for name in names:
        module = importlib.import_module(CONTROLLERS[name])
        controllers.append(module.new(ctx))
    return controllers


def enabled_names(spec: str = "*") -> list[str]:
    """Kubernetes' `--controllers` syntax: `*` for all, `-name` to disable one, `name` to enable."""
    parts = [p.strip() for p in spec.split(",") if p.strip()] or ["*"]
    unknown = [p.lstrip("-") for p in parts if p != "*" and p.lstrip("-") not in CONTROLLERS]
    if unknown:
        raise ValueError(f"unknown controllers: {', '.join(unknown)} (known: {', '.join(CONTROLLERS)})")
    chosen = list(CONTROLLERS) if "*" in parts else []
    for p in parts:
        if p.startswith("-"):
            chosen = [n for n in chosen if n != p[1:]]
        elif p != "*" and p not in chosen:
            chosen.append(p)
    return chosen


async def run_controllers(
    client: Client, stop: asyncio.Event, *, names: Iterable[str], options: ControllerOptions
) -> None:
    informers = InformerFactory(client)
    ctx = ControllerContext(client=client, informers=informers, options=options)
    controllers = build(ctx, names)
    if not controllers:
        await stop.wait()
        return
    informers.start()
    tasks = [asyncio.create_task(c.run(stop), name=f"controller {c.name}") for c in controllers]
    stopper = asyncio.create_task(stop.wait(), name="controller-manager stop")
    log.info("controller manager running %d controllers", len(controllers))
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                log.error("controller %s died", task.get_name(), exc_info=task.exception())
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
        await informers.stop()


async def run(
    client: Client,
    stop: asyncio.Event,
    *,
    controllers: str = "*",
    options: ControllerOptions | None = None,
    leader_elect: bool = False,
) -> None:
    """Run the enabled controllers until `stop` is set."""
    names = enabled_names(controllers)
    opts = options or ControllerOptions()
    if not leader_elect:
        await run_controllers(client, stop, names=names, options=opts)
        return
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    elector = LeaderElector(client, "kube-system", "skiff-controller-manager", identity)

    async def lead(leadership_ended: asyncio.Event) -> None:
        # the elector sets this event when the Lease is lost or `stop` is set
        await run_controllers(client, leadership_ended, names=names, options=opts)

    await elector.run(lead, stop=stop)

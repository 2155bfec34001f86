"""The node agent process: Node registration, Lease heartbeat, the pod informer and the pod workers.

`Agent.run(stop)` registers the Node, starts heartbeating, watches the pods bound to the node
(`spec.nodeName=<node>`), and hands each version of a pod to its worker. After the informer has
synced it adopts what an earlier agent left: pods still in the API keep their running containers
(their workers find them in the runtime), sandboxes of pods that are gone are torn down. On stop
the workers end but the containers keep running, as when a kubelet restarts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.api.kubelet_api import DEFAULT_KUBELET_PORT
from skiff.client import Client, EventRecorder, Informer, resources
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.images.store import ImageStore
from skiff.node.agent import container_logs
from skiff.node.agent import node as node_mod
from skiff.node.agent.imagegc import PERIOD, ImageGC, ImageGCPolicy, images_in_use
from skiff.node.agent.kubelet_server import KubeletServer
from skiff.node.agent.networking import NetworkOptions, pod_dns, run_node_network
from skiff.node.agent.pleg import Relister
from skiff.node.agent.podworkers import PodWorkers
from skiff.node.agent.starting import Starter
from skiff.node.agent.stats import StatsReporter
from skiff.node.agent.sync import NodeFacts, PodSyncer, now_rfc3339
from skiff.node.lease import NodeLease
from skiff.node.runtime.cni import NetworkConfig
from skiff.node.runtime.runtime import Runtime

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    node_name: str
    state_dir: Path
    pod_cidr: str = "10.42.0.0/24"
    node_ip: str = ""
    bridge: str = "skiff0"
    registry: str = "127.0.0.1:5000"
    insecure_registries: tuple[str, ...] = ()
    cgroup_parent: str = "skiff"
    netns_prefix: str = "skiff-"
    kubelet_port: int = DEFAULT_KUBELET_PORT  # the kubelet API (logs, exec, port-forward); 0: not served
    log_rotation: container_logs.LogRotation = field(default_factory=container_logs.LogRotation)
    network: NetworkOptions = NetworkOptions()  # noqa: RUF009 (frozen) the proxy, pod routes, the pods' DNS
    image_gc: ImageGCPolicy = field(default_factory=ImageGCPolicy)
    image_gc_period: float = PERIOD
    pod_max_pids: int = -1  # the kubelet's --pod-max-pids: -1 for no limit
    seccomp_default: bool = False  # the kubelet's --seccomp-default: RuntimeDefault for containers naming none


class Agent:
    def __init__(self, client: Client, config: AgentConfig) -> None:
        self.client = client
        self.config = config
        state = config.state_dir
        network = NetworkConfig(name=f"skiff-{config.bridge}", bridge=config.bridge, subnet=config.pod_cidr,
                                state_dir=state / "cni", ip_masq=not config.network.pod_network)  # fmt: skip
        self.runtime = Runtime(state_dir=state / "runtime", network=network, cgroup_parent=config.cgroup_parent,
                               netns_prefix=config.netns_prefix,
                               pod_pids_limit=config.pod_max_pids if config.pod_max_pids > 0 else None)  # fmt: skip
        self.images = ImageStore(state / "images", default_registry=config.registry,
                                 insecure_registries=config.insecure_registries)  # fmt: skip
        self.recorder = EventRecorder(client, component="kubelet", host=config.node_name)
        self.image_gc = ImageGC(self.images, in_use=lambda: images_in_use(self.runtime, state),
                                event=self._node_event, policy=config.image_gc)  # fmt: skip
        self.pods = Informer(client, resources.PODS, field_selector=f"spec.nodeName={config.node_name}")
        self.syncer: PodSyncer | None = None
        self.workers: PodWorkers | None = None

    async def _node_event(self, type_: str, reason: str, message: str) -> None:
        node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": self.config.node_name,
                                                                 "uid": self.config.node_name}}  # the kubelet's nodeRef
        await self.recorder.record(node, type=type_, reason=reason, message=message)

    def _changed(self, pod: Obj) -> None:
        assert self.workers is not None and self.syncer is not None
        if pod["metadata"].get("deletionTimestamp"):
            self.syncer.starter.interrupt(pod["metadata"]["uid"])
        self.workers.update(pod["metadata"]["uid"], pod)

    def _gone(self, pod: Obj) -> None:
        assert self.workers is not None and self.syncer is not None
        self.syncer.starter.interrupt(pod["metadata"]["uid"], only_running=True)
        self.workers.update(pod["metadata"]["uid"], None)

    async def _adopt(self) -> None:
        """Tear down what belongs to pods no longer bound here (after an agent restart)."""
        assert self.workers is not None
        live = {p["metadata"]["uid"] for p in self.pods.list()}
        found = set(self.runtime.list_sandboxes()) | {c.pod_uid for c in await self.runtime.list()}
        pods_dir = self.config.state_dir / "pods"
        if await asyncio.to_thread(pods_dir.is_dir):
            found |= {p.name for p in await asyncio.to_thread(lambda: list(pods_dir.iterdir()))}
        for uid in sorted(found - live):
            if uid not in self.workers:
                log.info("pod %s is no longer bound to this node: tearing it down", uid)
                self.workers.update(uid, None)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        capacity = await asyncio.to_thread(node_mod.machine_resources, cfg.state_dir)
        host_ip = cfg.node_ip or node_mod.reaching_address(self.client.config.server)
        body = node_mod.build_node(cfg.node_name, ip=host_ip, pod_cidr=cfg.pod_cidr, capacity=capacity,
                                   now=now_rfc3339())  # fmt: skip
        body["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": cfg.kubelet_port}}
        registered = await node_mod.register(self.client, body)
        log.info("registered node %s (InternalIP %s, pod CIDR %s)", cfg.node_name, host_ip, cfg.pod_cidr)
        lease = NodeLease(self.client, cfg.node_name, node_uid=registered["metadata"].get("uid"))
        await lease.renew()
        await node_mod.post_status(self.client, cfg.node_name, state_dir=cfg.state_dir, store=self.images)
        facts = NodeFacts(name=cfg.node_name, host_ip=host_ip, allocatable=capacity, state_dir=cfg.state_dir,
                          dns=await pod_dns(cfg.network))  # fmt: skip
        self.syncer = PodSyncer(self.client, self.runtime, Starter(self.runtime, self.images, self.recorder,
                                                                  seccomp_root=cfg.state_dir / "seccomp",
                                                                  seccomp_default=cfg.seccomp_default), facts)
        self.workers = PodWorkers(self.syncer.sync)
        self.syncer.prober.on_change = self.workers.wake
        relister = Relister(self.syncer.observer, self.workers.wake)  # one runtime listing a second for all pods
        self.pods.add_handlers(on_add=self._changed, on_update=lambda _o, n: self._changed(n), on_delete=self._gone)
        tasks = [
            spawn(lease.run(stop, first_delay=lease.interval), name="agent lease", logger=log),
            spawn(
                node_mod.status_loop(self.client, cfg.node_name, stop, state_dir=cfg.state_dir, store=self.images),
                name="agent node status",
                logger=log,
            ),
            spawn(self.image_gc.run(stop, cfg.image_gc_period), name="agent image gc", logger=log),
            spawn(relister.run(stop), name="agent relister", logger=log),
            self.pods.start(),
            spawn(container_logs.rotation_loop(self.runtime, stop, cfg.log_rotation), name="agent log rotation",
                  logger=log),
            # usage for the metrics API (kubectl top, the HPA), from the containers' cgroups
            spawn(StatsReporter(self.client, cfg.node_name, self.runtime, self.pods.list,
                                listing=self.syncer.observer.listing).run(stop), name="agent stats", logger=log),
        ]
        kubelet = KubeletServer(client=self.client, pods=self.pods, runtime=self.runtime, state_dir=cfg.state_dir,
                                node_name=cfg.node_name, node_ip=host_ip, port=cfg.kubelet_port)  # fmt: skip
        networking = run_node_network(self.client, stop, cfg.network, node_name=cfg.node_name,
                                      pod_cidr=cfg.pod_cidr, bridge=cfg.bridge)  # fmt: skip
        network = spawn(networking, name="agent network", logger=log)
        try:
            await self.pods.wait_synced()
            if cfg.kubelet_port:
                await kubelet.start()
            await self._adopt()
            await stop.wait()
        finally:
            stop.set()
            await kubelet.stop()
            await asyncio.wait([network], timeout=30.0)  # the proxy and the pod network remove their rules
            await self.workers.stop()
            await self.syncer.prober.stop()
            await self.pods.stop()
            await cancel_and_wait(tasks, grace=5.0)

"""Simulated nodes, like KWOK: many fake Nodes in one process, each acting as a live kubelet.

Tests and benchmarks must exercise the scheduler and controllers at a scale
no machine can run containers for. `skiff sim nodes --count N` registers N
Node objects and keeps them alive as a kubelet would — a Lease renewed in
`kube-node-lease` every 10 s; the node status checked every 10 s and posted
when it changed (someone else set a condition) and otherwise only every
5 minutes, the Ready heartbeat (the kubelet's nodeStatusUpdateFrequency and
nodeStatusReportFrequency) — and reports every pod bound to them Running with an IP, without
running anything (`skiff.node.simulated_pods` says what status; annotations
script completion, failure and readiness). It honours deletion as a kubelet
does: a pod with a deletionTimestamp is removed for good (grace 0).
Each node reports its pods' usage to the metrics API when it changes, checked
every 10 s, and refreshes an unchanged report before it expires
(`skiff.node.metrics`: `sim.skiff.dev/cpu-usage` / `memory-usage` annotations).
An idle node thus costs the API server a Lease update every 10 s and little else.

Built for thousands of nodes: one process, one client (one connection
pool), one pod informer for every scheduled pod, one work queue of pod keys,
bounded concurrent writes, Lease renewals spread over the interval. Stopping
leaves the nodes registered and silent (so the node lifecycle controller
sees them die) unless `delete_on_exit` is asked for.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import ipaddress
import logging
import platform
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skiff import __version__
from skiff.api import errors
from skiff.client import Client, Controller, Informer, RequeueAfter, ServerUnreachable, resources, split_key
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.node.lease import LEASE_DURATION_SECONDS, NodeLease
from skiff.node.metrics import report_loop
from skiff.node.simulated_pods import Placement, fmt_time, next_status

log = logging.getLogger(__name__)
Obj = dict[str, Any]

KUBELET_VERSION = f"v1.37.0-skiff.{__version__}"  # the Kubernetes minor the apiserver reports
RUNTIME_VERSION = "simulated://0.1"
STATUS_INTERVAL = 10.0  # how often a node's status is checked, and posted if it changed (nodeStatusUpdateFrequency)
STATUS_REPORT_INTERVAL = 300.0  # how often an unchanged status is posted: the heartbeat (nodeStatusReportFrequency)
WRITE_CONCURRENCY = 64
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
NODE_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def arch() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine or "amd64")


@dataclass(frozen=True)
class SimNode:
    """One simulated node: its name, a fake InternalIP (TEST-NET 198.18.0.0/15) and a /24 pod range."""

    name: str
    index: int
    ip: str
    pod_cidr: str

    @classmethod
    def make(cls, prefix: str, index: int) -> SimNode:
        # each prefix starts at its own block, so that two simulators rarely hand out the same IPs
        block = (zlib.crc32(prefix.encode()) % 128 * 256 + index) % 32768
        ip = ipaddress.IPv4Address("198.18.0.0") + block + 1
        cidr = f"10.{128 + (block >> 8)}.{block & 255}.0/24"
        return cls(name=f"{prefix}-{index}", index=index, ip=str(ip), pod_cidr=cidr)


class PodIPs:
    """Hands out the addresses of a node's pod range (.2 to .254), keeping a pod's IP while it lives."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.IPv4Network(cidr)
        self.by_pod: dict[str, str] = {}
        self.used: set[str] = set()
        self._next = 2

    def claim(self, pod_uid: str, ip: str) -> None:
        """Remember an IP the pod already reports (a restarted simulator keeps pods' IPs)."""
        self.by_pod[pod_uid] = ip
        self.used.add(ip)

    def get(self, pod_uid: str) -> str:
        ip = self.by_pod.get(pod_uid)
        if ip is not None:
            return ip
        size = self.network.num_addresses - 3
        for _ in range(size):
            candidate = str(self.network.network_address + self._next)
            self._next = 2 + (self._next - 1) % size
            if candidate not in self.used:
                self.claim(pod_uid, candidate)
                return candidate
        ip = str(self.network.network_address + 2 + len(self.by_pod) % size)  # full: share (a simulator)
        self.by_pod[pod_uid] = ip
        return ip

    def release(self, pod_uid: str) -> None:
        ip = self.by_pod.pop(pod_uid, None)
        if ip is not None and ip not in self.by_pod.values():
            self.used.discard(ip)


def node_conditions(now: str, previous: Iterable[Obj] = ()) -> list[Obj]:
    """A healthy kubelet's conditions; lastTransitionTime moves only where the status changes."""
    before = {c.get("type"): c for c in previous}
    out = []
    for type_, status, reason, message in NODE_CONDITIONS:
        prev = before.get(type_)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
        out.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since or now,
            }
        )
    return out


def build_node(node: SimNode, *, cpu: str, memory: str, pods: int, now: str) -> Obj:
    resources_: dict[str, str] = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
    machine = arch()
    seed = zlib.crc32(node.name.encode())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "beta.kubernetes.io/arch": machine,
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine,
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "type": "simulated",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "sim.skiff.dev/node": "simulated"},
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "capacity": dict(resources_),
            "allocatable": dict(resources_),
            "conditions": node_conditions(now),
            "addresses": [{"type": "InternalIP", "address": node.ip}, {"type": "Hostname", "address": node.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{seed:08x}" * 4,
                "systemUUID": f"{seed:08x}-0000-4000-8000-{node.index:012x}",
                "bootID": f"{random.getrandbits(32):08x}-0000-4000-8000-{node.index:012x}",
                "kernelVersion": platform.release(),
                "osImage": "skiff simulated node",
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": machine,
            },
        },
    }


async def bounded(jobs: Iterable[Callable[[], Awaitable[None]]], limit: int = WRITE_CONCURRENCY) -> None:
    """Run the jobs with at most `limit` at once; the first failure is raised after all have ended."""
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    results = await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class SimulatedPods(Controller):
    """Reports the pods bound to the simulated nodes as a kubelet would, and removes deleted ones."""

    name = "simulated-kubelet"
    workers = 32

    def __init__(self, sim: SimulatedNodes, pods: Informer) -> None:
        super().__init__()
        self.sim = sim
        self.pods = pods
        self.wait_for(pods)
        pods.add_handlers(on_add=self._changed, on_update=lambda _old, new: self._changed(new), on_delete=self._gone)

    def _changed(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.sim.nodes:
            self.enqueue(pod)

    def _gone(self, pod: Obj) -> None:
        node = self.sim.nodes.get((pod.get("spec") or {}).get("nodeName", ""))
        if node is not None:
            self.sim.ips[node.name].release(str(pod["metadata"].get("uid", "")))

    async def reconcile(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        node = self.sim.nodes.get((pod.get("spec") or {}).get("nodeName", ""))
        if node is None:
            return
        meta = pod["metadata"]
        uid = str(meta.get("uid", ""))
        ns, name = split_key(key)
        if meta.get("deletionTimestamp"):
            self.sim.ips[node.name].release(uid)
            try:
                await self.sim.client.delete(
                    resources.PODS, name, namespace=ns, grace_period_seconds=0, preconditions={"uid": uid}
                )
            except (errors.NotFound, errors.Conflict):
                pass  # gone already, or another pod of that name now
            return
        status = pod.get("status") or {}
        if (pod.get("spec") or {}).get("hostNetwork"):
            pod_ip = node.ip
        else:
            if status.get("podIP") and uid not in self.sim.ips[node.name].by_pod:
                self.sim.ips[node.name].claim(uid, status["podIP"])
            pod_ip = self.sim.ips[node.name].get(uid)
        new_status, wake = next_status(pod, Placement(host_ip=node.ip, pod_ip=pod_ip), datetime.now(UTC))
        if new_status != status:
            updated = copy.deepcopy(pod)
            updated["status"] = new_status
            await self.sim.client.update_status(resources.PODS, updated)
        if wake is not None:
            raise RequeueAfter(max(wake, 0.05))


class SimulatedNodes:
    """N simulated nodes of one prefix: registration, heartbeats, and their pods (see module docstring)."""

    def __init__(
        self,
        client: Client,
        *,
        count: int,
        prefix: str = "sim-node",
        cpu: str = "4",
        memory: str = "16Gi",
        pods: int = 110,
        lease_duration: int = LEASE_DURATION_SECONDS,
        status_interval: float = STATUS_INTERVAL,
        status_report_interval: float = STATUS_REPORT_INTERVAL,
        delete_on_exit: bool = False,
    ) -> None:
        if count < 0:
            raise ValueError("the node count cannot be negative")
        if lease_duration < 1:
            raise ValueError("the lease duration must be at least 1 second")
        self.client = client
        self.cpu, self.memory, self.max_pods = cpu, memory, pods
        self.lease_duration = lease_duration
        self.renew_interval = lease_duration / 4  # as the kubelet: a quarter of the lease's duration
        self.status_interval = status_interval
        self.status_report_interval = max(status_interval, status_report_interval)
        self.delete_on_exit = delete_on_exit
        self.nodes: dict[str, SimNode] = {n.name: n for n in (SimNode.make(prefix, i) for i in range(count))}
        self.ips: dict[str, PodIPs] = {name: PodIPs(n.pod_cidr) for name, n in self.nodes.items()}
        self.uids: dict[str, str] = {}
        # every scheduled pod: one watch for all the nodes, filtered by name here
        self.pod_informer = Informer(client, resources.PODS, field_selector="spec.nodeName!=")
        self.node_informer = Informer(client, resources.NODES, label_selector="type=simulated")
        self.kubelet = SimulatedPods(self, self.pod_informer)
        self._tasks: list[asyncio.Task[None]] = []
        self._repairing: set[str] = set()
        self._posted: dict[str, float] = {}  # node -> when its status was last posted (monotonic)

    # --- registration -------------------------------------------------------------------------
    async def register(self, stop: asyncio.Event) -> None:
        """Create every Node (or bring an existing one back to Ready), concurrently; each starts heartbeating
        as soon as it is registered (a node registered first must not look dead while the last register)."""

        async def one(node: SimNode) -> None:
            await self._register_one(node)
            # the first unchanged status of each node comes at a random point of the report interval: nodes
            # registered together do not all post at once every 5 minutes
            self._posted[node.name] = time.monotonic() - random.uniform(0, self.status_report_interval)
            self._tasks.append(spawn(self._lease(node.name).run(stop), name=f"sim lease {node.name}", logger=log))

        await bounded(functools.partial(one, n) for n in self.nodes.values())
        log.info("registered %d simulated nodes", len(self.nodes))

    def _lease(self, name: str) -> NodeLease:
        return NodeLease(
            self.client, name, node_uid=self.uids.get(name), duration=self.lease_duration, interval=self.renew_interval
        )

    async def _register_one(self, node: SimNode) -> None:
        now = fmt_time(datetime.now(UTC))
        body = build_node(node, cpu=self.cpu, memory=self.memory, pods=self.max_pods, now=now)
        created = False
        while True:
            try:
                existing = await self.client.create(resources.NODES, body)
                created = True
            except errors.AlreadyExists:
                try:  # registered before (a restarted simulator): refresh labels and status, keep the rest
                    existing = await self.client.patch(
                        resources.NODES, node.name, {"metadata": {"labels": body["metadata"]["labels"]}}
                    )
                except errors.NotFound:
                    continue  # deleted meanwhile: create it again
            break
        self.uids[node.name] = existing["metadata"]["uid"]
        if created and (existing.get("status") or {}).get("nodeInfo") == body["status"]["nodeInfo"]:
            return  # the status came with the create, as Kubernetes allows for Nodes
        # otherwise it goes through the status subresource (a server that drops status on create, or a restart)
        status = dict(body["status"])
        status["conditions"] = node_conditions(now, (existing.get("status") or {}).get("conditions") or [])
        await self.client.patch(resources.NODES, node.name, {"status": status}, subresource="status")

    async def deregister(self) -> None:
        async def one(node: SimNode) -> None:
            try:
                await self.client.delete(resources.NODES, node.name)
            except errors.NotFound:
                pass
            await NodeLease(self.client, node.name).delete()

        await bounded(functools.partial(one, n) for n in self.nodes.values())
        log.info("deleted %d simulated nodes", len(self.nodes))

    # --- heartbeats ---------------------------------------------------------------------------
    def _status_due(self, name: str) -> bool:
        """Whether a node's status must be posted now: the server's copy is not what this kubelet reports (a
        condition someone else changed), or the last post is `status_report_interval` old (the heartbeat)."""
        if time.monotonic() - self._posted.get(name, 0.0) >= self.status_report_interval:
            return True
        cached = self.node_informer.get(name)
        if cached is None:
            return False  # not seen yet: registration posted it
        conditions = (cached.get("status") or {}).get("conditions") or []
        seen = {c.get("type"): (c.get("status"), c.get("reason"), c.get("message")) for c in conditions}
        # conditions others own (NetworkUnavailable...) are theirs: only this kubelet's own are compared
        return any(seen.get(type_) != (status, reason, message) for type_, status, reason, message in NODE_CONDITIONS)

    async def _status_loop(self, stop: asyncio.Event) -> None:
        """Check every node's status once per `status_interval`, spread over the interval; post the due ones."""
        names = list(self.nodes)
        random.shuffle(names)
        gap = self.status_interval / max(len(names), 1)
        sem = asyncio.Semaphore(WRITE_CONCURRENCY)
        pending: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            sem.release()

        try:
            while not stop.is_set():
                for name in names:
                    if stop.is_set():
                        return
                    if self._status_due(name) and name not in self._repairing:
                        await sem.acquire()
                        task = asyncio.create_task(self._post_status(name), name=f"sim node status {name}")
                        pending.add(task)
                        task.add_done_callback(finished)
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=gap)
                    except TimeoutError:
                        pass
        finally:
            await cancel_and_wait(pending)

    async def _post_status(self, name: str) -> None:
        self._posted[name] = time.monotonic()
        cached = self.node_informer.get(name)
        previous = ((cached or {}).get("status") or {}).get("conditions") or []
        patch = {"status": {"conditions": node_conditions(fmt_time(datetime.now(UTC)), previous)}}
        try:
            await self.client.patch(resources.NODES, name, patch, subresource="status")
        except errors.NotFound:
            log.warning("node %s was deleted; it is not registered again until the simulator restarts", name)
        except (errors.StatusError, ServerUnreachable) as exc:
            log.warning("node %s: posting its status failed: %s", name, exc)

    def _node_seen(self, node: Obj) -> None:
        """A live kubelet puts its Ready condition back at once when someone else changed it (to Unknown, say)."""
        name = node["metadata"]["name"]
        if name not in self.uids or name in self._repairing:
            return
        ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            self._repairing.add(name)
            task = spawn(self._post_status(name), name=f"sim node repair {name}", logger=log)
            task.add_done_callback(lambda _t: self._repairing.discard(name))

    # --- running ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Register, then heartbeat and run pods until `stop` is set."""
        self.node_informer.add_handlers(on_add=self._node_seen, on_update=lambda _old, new: self._node_seen(new))
        self.node_informer.start()
        kubelet = spawn(self.kubelet.run(stop), name="sim kubelet", logger=log)
        try:
            await self.register(stop)
            self._tasks.append(spawn(self._status_loop(stop), name="sim node status", logger=log))
            # usage for the metrics API (kubectl top, the HPA), from the pods' sim.skiff.dev/*-usage annotations
            usage = report_loop(self.client, self.nodes, self.pod_informer.list, stop)
            self._tasks.append(spawn(usage, name="sim node usage", logger=log))
            await kubelet
        finally:
            stop.set()
            await asyncio.gather(kubelet, *self._tasks, return_exceptions=True)
            await self.node_informer.stop()
            if self.delete_on_exit:
                await self.deregister()


async def run_simulated_nodes(
    client: Client,
    stop: asyncio.Event,
    *,
    count: int,
    prefix: str = "sim-node",
    cpu: str = "4",
    memory: str = "16Gi",
    pods: int = 110,
    delete_on_exit: bool = False,
    lease_duration: int = LEASE_DURATION_SECONDS,
    status_interval: float = STATUS_INTERVAL,
    status_report_interval: float = STATUS_REPORT_INTERVAL,
) -> None:
    """`skiff sim nodes`: run `count` simulated nodes named `<prefix>-<i>` until `stop` is set.

    Each node renews its Lease every `lease_duration / 4` seconds, checks its status every
    `status_interval` seconds and posts it when it changed, or unchanged every
    `status_report_interval` seconds (the Ready heartbeat; the Lease is what tells a live
    node); with `delete_on_exit` the Nodes and Leases
    are deleted when it stops (by default they stay, silent, as after a power cut).
    """
    sim = SimulatedNodes(
        client,
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
    await sim.run(stop)

"""The agent's Node: built from the machine it runs on, registered, and its status kept fresh.

Capacity is what the machine has (CPU count, MemTotal from /proc/meminfo, 110 pods, the state
directory's disk as ephemeral-storage); allocatable equals it (no reservations yet). Addresses are
the InternalIP (the local address that reaches the API server, unless given) and the Hostname.
Conditions come from the machine (`nodestatus`), posted with the node's images right after
registration, then when they change (looked at every 10 s) or every 5 minutes; liveness is the
Lease (`skiff.node.lease.NodeLease`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from skiff.api import errors
from skiff.client import Client, ServerUnreachable, resources
from skiff.images.store import ImageStore
from skiff.node.agent import nodestatus
from skiff.node.simulated import KUBELET_VERSION, arch, node_conditions
from skiff.node.simulated_pods import fmt_time

log = logging.getLogger(__name__)
Obj = dict[str, Any]

MAX_PODS = 110
STATUS_INTERVAL = 10.0
REPORT_INTERVAL = 300.0
RUNTIME_VERSION = "runc://skiff"


def memory_bytes(meminfo: str) -> int:
    """MemTotal of a /proc/meminfo text, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal in /proc/meminfo")


def machine_resources(state_dir: Path) -> dict[str, str]:
    """The node's capacity: cpu, memory (Ki), pods, ephemeral-storage (Ki)."""
    with open("/proc/meminfo") as f:
        mem = memory_bytes(f.read())
    state_dir.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(state_dir).total
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{mem // 1024}Ki",
        "pods": str(MAX_PODS),
        "ephemeral-storage": f"{disk // 1024}Ki",
    }


def reaching_address(server_url: str) -> str:
    """The local IPv4 address the kernel would use to reach the API server (no packet is sent)."""
    host = urlparse(server_url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            addr: str = s.getsockname()[0]
            return addr
    except OSError:
        return "127.0.0.1"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def build_node(name: str, *, ip: str, pod_cidr: str, capacity: dict[str, str], now: str) -> Obj:
    machine = arch()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": machine,
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": node_conditions(now),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": RUNTIME_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": machine,
            },
        },
    }


async def register(client: Client, node: Obj) -> Obj:
    """Create the Node, or (registered before) bring its labels, spec and status up to date."""
    name = node["metadata"]["name"]
    try:
        existing = await client.create(resources.NODES, node)
    except errors.AlreadyExists:
        patch = {"metadata": {"labels": node["metadata"]["labels"]}, "spec": node["spec"]}
        existing = await client.patch(resources.NODES, name, patch)
    status = dict(node["status"])
    status["conditions"] = node_conditions(
        node["status"]["conditions"][0]["lastHeartbeatTime"], (existing.get("status") or {}).get("conditions") or []
    )
    result: Obj = await client.patch(resources.NODES, name, {"status": status}, subresource="status")
    return result


async def status_loop(
    client: Client, name: str, stop: asyncio.Event, *, state_dir: Path, store: ImageStore,
    interval: float = STATUS_INTERVAL,
) -> None:  # fmt: skip
    """Every `interval` seconds until `stop`, post the Node's conditions and images when they changed,
    or at least every `REPORT_INTERVAL` (the kubelet's nodeStatusUpdateFrequency and ReportFrequency)."""
    last: object = None
    last_at = 0.0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return
        except TimeoutError:
            pass
        try:
            signals = await asyncio.to_thread(nodestatus.read_signals, state_dir)
            seen = (nodestatus.pressures(signals), nodestatus.images(await store.list()))
            if seen != last or time.monotonic() - last_at >= REPORT_INTERVAL:
                await post_status(client, name, state_dir=state_dir, store=store)
                last, last_at = seen, time.monotonic()
        except (errors.StatusError, ServerUnreachable) as exc:
            log.warning("node %s: posting its status failed: %s", name, exc)


async def post_status(client: Client, name: str, *, state_dir: Path, store: ImageStore) -> None:
    signals = await asyncio.to_thread(nodestatus.read_signals, state_dir)
    current = await client.get(resources.NODES, name)
    previous = (current.get("status") or {}).get("conditions") or []
    status = {
        "conditions": nodestatus.conditions(signals, fmt_time(datetime.now(UTC)), previous),
        "images": nodestatus.images(await store.list()),
    }
    await client.patch(resources.NODES, name, {"status": status}, subresource="status")

"""A node reports its resource usage to the metrics API, which `kubectl top` and the HPA read.

Kubernetes' metrics-server scrapes each kubelet; skiff turns it around: the
node agent pushes its own usage and its pods' usage to the apiserver with
`report_usage` (`POST /apis/metrics.k8s.io/v1beta1/nodes/<node>/report`, see
`skiff.apiserver.metrics`), every `REPORT_INTERVAL` seconds — a report is
served for three windows, so a node that stops reporting loses its metrics.

Simulated nodes have no containers to measure; pod annotations say what the
pod uses, so a test can drive the HPA and `kubectl top`:

- `sim.skiff.dev/cpu-usage: "400m"` and `sim.skiff.dev/memory-usage: "200Mi"`:
  every container of the pod uses that much;
- or a JSON map by container name, `sim.skiff.dev/cpu-usage: '{"app": "400m", "log": "5m"}'`:
  containers left out (and pods without the annotation) use
  `DEFAULT_CONTAINER_USAGE` (5m CPU, 16Mi memory); a value that is not a
  quantity counts as the default too, so one bad annotation cannot spoil a
  node's whole report.

A simulated node's own usage is the sum of its running pods' plus
`NODE_BASE_USAGE` (what the system daemons of a real node would use).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors, quantity
from skiff.api.durations import format_duration
from skiff.client import Client, ServerUnreachable

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Usage = Mapping[str, str]  # resource name -> quantity, e.g. {"cpu": "250m", "memory": "64Mi"}

REPORT_INTERVAL = 10.0
REPORT_CONCURRENCY = 16
CPU_USAGE = "sim.skiff.dev/cpu-usage"
MEMORY_USAGE = "sim.skiff.dev/memory-usage"
USAGE_ANNOTATIONS = {"cpu": CPU_USAGE, "memory": MEMORY_USAGE}
DEFAULT_CONTAINER_USAGE: dict[str, str] = {"cpu": "5m", "memory": "16Mi"}
NODE_BASE_USAGE: dict[str, str] = {"cpu": "100m", "memory": "512Mi"}


@dataclass(frozen=True)
class PodUsage:
    """What one pod uses, per container (container name -> resource -> quantity)."""

    namespace: str
    name: str
    containers: Mapping[str, Usage] = field(default_factory=dict)
    uid: str = ""  # when set, the apiserver drops the sample once the pod of that name is another one

    def as_report(self) -> Obj:
        entry: Obj = {
            "namespace": self.namespace,
            "name": self.name,
            "containers": [{"name": c, "usage": dict(u)} for c, u in self.containers.items()],
        }
        if self.uid:
            entry["uid"] = self.uid
        return entry


def report_path(node_name: str) -> str:
    return f"/apis/metrics.k8s.io/v1beta1/nodes/{node_name}/report"


async def report_usage(
    client: Client,
    node_name: str,
    node_usage: Usage,
    pods_usage: Iterable[PodUsage],
    *,
    window: float = REPORT_INTERVAL,
    timestamp: datetime | None = None,
) -> None:
    """Send one report: the node's usage and its pods'. Replaces the node's previous report.

    Raises the API's StatusError (e.g. BadRequest for a bad quantity) or ServerUnreachable.
    """
    stamp = (timestamp or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: Obj = {
        "kind": "NodeMetricsReport",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "timestamp": stamp,
        "window": format_duration(window),
        "usage": dict(node_usage),
        "pods": [p.as_report() for p in pods_usage],
    }
    await client.request("POST", report_path(node_name), body=body)


# --- simulated usage --------------------------------------------------------------------------


def simulated_pod_usage(pod: Obj) -> PodUsage:
    """A pod's usage as its `sim.skiff.dev/*-usage` annotations describe it (see the module docstring)."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name")]
    per_resource = {res: _per_container(annotations.get(key), names) for res, key in USAGE_ANNOTATIONS.items()}
    containers = {
        name: {res: per_resource[res].get(name, default) for res, default in DEFAULT_CONTAINER_USAGE.items()}
        for name in names
    }
    return PodUsage(str(meta.get("namespace", "")), str(meta.get("name", "")), containers, str(meta.get("uid", "")))


def _per_container(value: Any, names: list[str]) -> dict[str, str]:
    if not isinstance(value, str) or not value.strip():
        return {}
    text = value.strip()
    if text.startswith("{"):
        try:
            wanted = json.loads(text)
        except ValueError:
            return {}
        if not isinstance(wanted, dict):
            return {}
        return {str(k): str(v) for k, v in wanted.items() if quantity.is_quantity(str(v))}
    return dict.fromkeys(names, text) if quantity.is_quantity(text) else {}


def node_usage(pods: Iterable[PodUsage], base: Usage = NODE_BASE_USAGE) -> dict[str, str]:
    """A node's usage: its pods' summed, plus `base`; CPU in nanocores, memory in bytes (as metrics-server)."""
    cpu = quantity.parse(base.get("cpu", "0"))
    memory = quantity.parse(base.get("memory", "0"))
    for pod in pods:
        for usage in pod.containers.values():
            cpu += quantity.parse(usage.get("cpu", "0"))
            memory += quantity.parse(usage.get("memory", "0"))
    return {"cpu": quantity.format_nano(int(cpu * 10**9)), "memory": quantity.format_bytes(int(memory))}


def running(pod: Obj) -> bool:
    """Pods a kubelet has metrics for: Running and not being deleted."""
    return (pod.get("status") or {}).get("phase") == "Running" and not (pod.get("metadata") or {}).get(
        "deletionTimestamp"
    )


async def report_simulated(client: Client, node_name: str, pods: Iterable[Obj], *, window: float) -> None:
    """One report for a simulated node from its pods' annotations."""
    usages = [simulated_pod_usage(p) for p in pods if running(p)]
    await report_usage(client, node_name, node_usage(usages), usages, window=window)


async def report_loop(
    client: Client,
    nodes: Iterable[str],
    pods: Callable[[], Iterable[Obj]],
    stop: asyncio.Event,
    *,
    interval: float = REPORT_INTERVAL,
    concurrency: int = REPORT_CONCURRENCY,
) -> None:
    """Report simulated usage for every node in `nodes` once per `interval`, spread over it, until `stop`.

    `pods()` returns the pods of all these nodes (e.g. a pod informer's cache); they are grouped by
    `spec.nodeName` once per round. A failed report is logged; the next round tries again.
    """
    names = list(nodes)
    random.shuffle(names)
    gap = interval / max(len(names), 1)
    sem = asyncio.Semaphore(concurrency)
    pending: set[asyncio.Task[None]] = set()

    async def one(name: str, node_pods: list[Obj]) -> None:
        try:
            await report_simulated(client, name, node_pods, window=interval)
        except (errors.StatusError, ServerUnreachable) as exc:
            log.warning("node %s: reporting usage failed: %s", name, exc)
        finally:
            sem.release()

    try:
        while not stop.is_set():
            by_node: dict[str, list[Obj]] = {}
            for pod in pods():
                by_node.setdefault(str((pod.get("spec") or {}).get("nodeName") or ""), []).append(pod)
            for name in names:
                if stop.is_set():
                    return
                await sem.acquire()
                task = asyncio.create_task(one(name, by_node.get(name, [])), name=f"usage report {name}")
                pending.add(task)
                task.add_done_callback(pending.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=gap)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

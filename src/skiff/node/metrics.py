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
import time
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
STEADY_WINDOW = 60.0  # the longest window an unchanged simulated report claims (metrics-server's default resolution)
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


@dataclass
class _Reported:
    """What a simulated node last reported, since when its usage is that, and over which window."""

    usage: list[PodUsage]
    since: float  # monotonic: when the usage became what it is
    sent: float  # monotonic: when it was last sent
    window: float


def _steady_window(report: _Reported | None, usages: list[PodUsage], now: float, interval: float) -> float | None:
    """The window to report `usages` over now, or None when the last report stands.

    A change is reported at once over `interval`. Unchanged usage is the same over every window since it
    changed, so its report claims that window (whole intervals, at most STEADY_WINDOW) and is sent again once
    it is 1.5 windows old, well before the server lets it expire (3 windows after receipt): an idle node reports
    about every 1.5 minutes instead of every 10 s, and its metrics never go missing."""
    if report is None or report.usage != usages:
        return interval
    if now - report.sent < 1.5 * report.window:
        return None
    steady = (now - report.since) // interval * interval
    return max(interval, min(steady, STEADY_WINDOW))


async def report_loop(
    client: Client,
    nodes: Iterable[str],
    pods: Callable[[], Iterable[Obj]],
    stop: asyncio.Event,
    *,
    interval: float = REPORT_INTERVAL,
    concurrency: int = REPORT_CONCURRENCY,
) -> None:
    """Report simulated usage for every node in `nodes` when it changes, checked once per `interval` (spread
    over it), until `stop`; an unchanged report is refreshed before it expires (`_steady_window`).

    `pods()` returns the pods of all these nodes (e.g. a pod informer's cache); they are grouped by
    `spec.nodeName` once per round. A failed report is logged; the next round tries again.
    """
    names = list(nodes)
    random.shuffle(names)
    gap = interval / max(len(names), 1)
    sem = asyncio.Semaphore(concurrency)
    pending: set[asyncio.Task[None]] = set()

    reported: dict[str, _Reported] = {}

    async def one(name: str, usages: list[PodUsage], window: float, now: float) -> None:
        try:
            await report_usage(client, name, node_usage(usages), usages, window=window)
            last = reported.get(name)
            since = last.since if last is not None and last.usage == usages else now
            reported[name] = _Reported(usages, since, now, window)
        except (errors.StatusError, ServerUnreachable) as exc:
            reported.pop(name, None)  # sent again next round
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
                usages = [simulated_pod_usage(p) for p in by_node.get(name, ()) if running(p)]
                now = time.monotonic()
                window = _steady_window(reported.get(name), usages, now, interval)
                if window is not None:
                    await sem.acquire()
                    task = asyncio.create_task(one(name, usages, window, now), name=f"usage report {name}")
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=gap)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

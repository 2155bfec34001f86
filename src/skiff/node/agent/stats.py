"""The node agent's resource usage for the metrics API: what `kubectl top pods/nodes` and the HPA read.

In Kubernetes metrics-server scrapes each kubelet's `/metrics/resource` (cAdvisor's cgroup
figures); skiff's agent pushes the same figures to the apiserver (`skiff.node.metrics.report_usage`).
Per container: CPU as a rate in nanocores (the cumulative CPU time of its cgroup, differenced
between two samples, as cAdvisor does) and memory as the working set (usage minus inactive file
cache). The node's own usage comes from /proc/stat (busy CPU time) and /proc/meminfo (MemTotal
minus MemFree minus Inactive(file): the root cgroup's working set).

A container seen for the first time has no rate yet: it is sampled again after
`FIRST_RESAMPLE` seconds rather than a whole interval, so a new pod shows in `kubectl top`
within seconds (metrics-server needs two scrapes too). Pods that are not Running, or are being
deleted, are left out, as metrics-server leaves them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.api import errors, quantity
from skiff.client import Client, ServerUnreachable
from skiff.node.metrics import REPORT_INTERVAL, PodUsage, report_usage, running
from skiff.node.runtime.cgroups import Usage
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerInfo, ContainerState

log = logging.getLogger(__name__)
Obj = dict[str, Any]

FIRST_RESAMPLE = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Sample:
    """A cumulative CPU counter (ns) read at `at` (monotonic seconds)."""

    at: float
    cpu_ns: int


class RateTracker:
    """Cumulative CPU counters → rates in nanocores, per key, between the last two samples of the key."""

    def __init__(self) -> None:
        self._last: dict[str, Sample] = {}

    def update(self, key: str, sample: Sample) -> int | None:
        """Record `sample`; the rate since the previous one (None for a first sample or a reset counter)."""
        prev = self._last.get(key)
        self._last[key] = sample
        if prev is None or sample.at <= prev.at or sample.cpu_ns < prev.cpu_ns:
            return None
        return int((sample.cpu_ns - prev.cpu_ns) / (sample.at - prev.at))

    def keep(self, keys: Iterable[str]) -> None:
        """Forget every key not in `keys` (containers that are gone)."""
        wanted = set(keys)
        for key in [k for k in self._last if k not in wanted]:
            del self._last[key]


def parse_proc_stat(text: str, ticks: int = CLOCK_TICKS) -> int:
    """Busy CPU time of the machine in ns from /proc/stat's `cpu` line (all but idle and iowait)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
            busy = sum(values[:3]) + sum(values[5:8])
            return busy * 1_000_000_000 // ticks
    return 0


def parse_meminfo(text: str) -> int:
    """The machine's memory working set in bytes: MemTotal - MemFree - Inactive(file)."""
    kib: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            kib[key.strip()] = int(rest.split()[0])
    return max(0, kib.get("MemTotal", 0) - kib.get("MemFree", 0) - kib.get("Inactive(file)", 0)) * 1024


def read_node_usage() -> tuple[int, int]:
    """(busy CPU ns, memory working set bytes) of this machine. Blocking file reads."""
    with open("/proc/stat") as f:
        cpu = parse_proc_stat(f.read())
    with open("/proc/meminfo") as f:
        memory = parse_meminfo(f.read())
    return cpu, memory


@dataclass(frozen=True)
class ContainerSample:
    pod_uid: str
    name: str
    usage: Usage


def build_report(
    pods: Mapping[str, Obj], samples: Iterable[ContainerSample], rates: Mapping[str, int]
) -> list[PodUsage]:
    """The pods' usage: every running container with a CPU rate, grouped by pod (uid → pod object)."""
    by_pod: dict[str, dict[str, dict[str, str]]] = {}
    for s in samples:
        key = f"{s.pod_uid}/{s.name}"
        if key not in rates or s.pod_uid not in pods:
            continue
        by_pod.setdefault(s.pod_uid, {})[s.name] = {
            "cpu": quantity.format_nano(rates[key]),
            "memory": quantity.format_bytes(s.usage.memory_working_set_bytes),
        }
    out = []
    for uid, containers in by_pod.items():
        meta = pods[uid].get("metadata") or {}
        out.append(PodUsage(str(meta.get("namespace", "")), str(meta.get("name", "")), containers, uid))
    return out


class StatsReporter:
    """Samples the node's containers and reports their usage every `interval` seconds."""

    def __init__(
        self,
        client: Client,
        node_name: str,
        runtime: Runtime,
        pods: Callable[[], Iterable[Obj]],
        *,
        listing: Callable[[], Awaitable[list[ContainerInfo]]] | None = None,
        interval: float = REPORT_INTERVAL,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.runtime = runtime
        self.listing = listing or runtime.list  # the pod workers' shared listing saves a `runc list`
        self.pods = pods
        self.interval = interval
        self.rates = RateTracker()

    async def _samples(self) -> list[ContainerSample]:
        infos = [i for i in await self.listing() if i.state == ContainerState.RUNNING]
        cgroups = self.runtime.cgroups

        def read() -> list[ContainerSample]:  # one thread for every container's cgroup files
            return [ContainerSample(i.pod_uid, i.name, cgroups.usage(cgroups.container_path(i.pod_uid, i.id)))
                    for i in infos]  # fmt: skip

        return await asyncio.to_thread(read)

    async def round(self) -> bool:
        """One sample and report; True when some container had no rate yet (sample again soon)."""
        pods = {p["metadata"]["uid"]: p for p in self.pods() if running(p)}
        samples = await self._samples()
        node_cpu, node_memory = await asyncio.to_thread(read_node_usage)
        now = time.monotonic()
        rates: dict[str, int] = {}
        fresh = False
        for s in samples:
            key = f"{s.pod_uid}/{s.name}"
            rate = self.rates.update(key, Sample(now, s.usage.cpu_usage_ns))
            if rate is None:
                fresh = fresh or s.pod_uid in pods
            else:
                rates[key] = rate
        node_rate = self.rates.update("/node", Sample(now, node_cpu))
        self.rates.keep([f"{s.pod_uid}/{s.name}" for s in samples] + ["/node"])
        if node_rate is not None:
            node = {"cpu": quantity.format_nano(node_rate), "memory": quantity.format_bytes(node_memory)}
            await report_usage(self.client, self.node_name, node, build_report(pods, samples, rates),
                               window=self.interval)  # fmt: skip
        return fresh or node_rate is None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            again_soon = False
            try:
                again_soon = await self.round()
            except (errors.StatusError, ServerUnreachable, OSError) as exc:
                log.warning("reporting resource usage failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=FIRST_RESAMPLE if again_soon else self.interval)

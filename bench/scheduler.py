"""Scheduler throughput and latency on a real `skiff server`: pods/s and per-pod create-to-bound latency.

Why this exists: the issue's goal is >= 500 pods/s at 5,000 nodes (Kubernetes'
CI threshold for SchedulingBasic at that size is 270), and only a run through
the whole system says whether it is met: the API server accepting pods, the
scheduler's informers hearing of them, filtering and scoring, the binding
POST, and the watch event that tells the world. The shape follows Kubernetes'
scheduler_perf SchedulingBasic: N nodes (4 cpu, 32Gi, 110 pods), then pods of
100m / 500Mi created as fast as the server takes them while the scheduler runs.

For each size it starts a throw-away `skiff server` (which runs the scheduler
and the controller manager as its child processes; SQLite under /var/tmp;
node lifecycle told to wait an hour since these nodes have no agents), registers the nodes through the API
(object + status), opens a watch on the pods, creates them from this process
at a fixed concurrency, and records for each pod when its create was sent and
when the watch first showed it bound. It prints:

* pods/s scheduled: pods / (last bound - first create sent);
* the create rate alone (the API server's share of the work);
* p50/p99/max create-to-bound latency per pod;
* CPU time per pod and RSS at the end: the API server with the controller
  manager, then the scheduler.

`--algorithm` times the scheduling cycle alone, in this process, with no
server: the scheduler's own ceiling. `--single-process` runs `skiff server
--single-process` instead (scheduler and controllers inside the API server's
process), to show what sharing one process (one core, one event loop) costs. Figures are printed, never
judged: the run does not fail on time.

    .venv/bin/python -m bench.scheduler [--quick] [--sizes 1000x10000,5000x10000] [--single-process]
                                        [--concurrency 64] [--json FILE] [--keep] [--profile PREFIX] [--algorithm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/scheduler.py` as well as `python -m bench.scheduler`
    sys.path.insert(0, str(REPO))

from bench.proc import child_pid, cpu_seconds, free_port, log, rss_mb, terminate  # noqa: E402

from skiff.client import Client  # noqa: E402
from skiff.client import resources as R  # noqa: E402

BIN = Path(sys.executable).parent
TARGET_PODS_PER_S = 500.0  # at 5,000 nodes
K8S_CI_THRESHOLD = 270.0  # SchedulingBasic, 5,000 nodes
NAMESPACE = "bench"
Obj = dict[str, Any]


@dataclass
class Result:
    nodes: int
    pods: int
    mode: str
    node_setup_s: float
    create_s: float
    creates_per_s: float
    schedule_s: float
    pods_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    bound: int
    server_cpu_s: float
    scheduler_cpu_s: float
    apiserver_cpu_s: float  # the API server process alone (server_cpu_s adds the controller manager)
    client_cpu_s: float  # this bench process: the creates and the watch (TLS client work that shares the box)
    server_rss_mb: float
    scheduler_rss_mb: float


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


class Cluster:
    """A throw-away server; unless `single`, its scheduler and controller manager are child processes."""

    def __init__(self, work: Path, *, single: bool, profile: Path | None = None) -> None:
        self.work = work
        self.single = single
        self.profile = profile
        self.port = free_port()
        self.server: asyncio.subprocess.Process | None = None
        self.scheduler_pid: int | None = None
        self.manager_pid: int | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.work / "data" / "kubeconfig.yaml"

    async def start(self) -> None:
        args = [
            *(str(BIN / "skiff"), "server", "--data-dir", str(self.work / "data"), "--port", str(self.port)),
            *("--bind-address", "127.0.0.1", "--node-monitor-grace-period", "3600", "--log-level", "warning"),
            "--disable-agent", "--disable-dns", "--disable-registry",  # (no images here; port 5000 may be taken)
        ]
        if self.single:
            args.append("--single-process")
        if self.profile is not None:
            args = [sys.executable, "-m", "cProfile", "-o", f"{self.profile}-server.prof", *args]
        with (self.work / "server.log").open("ab") as out:
            self.server = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.returncode is not None:
                raise RuntimeError(f"skiff server exited:\n{(self.work / 'server.log').read_text()}")
            if self.kubeconfig.exists():
                try:
                    async with Client.from_kubeconfig(self.kubeconfig) as c:
                        async with c.session().get(c.config.server + "/readyz") as resp:
                            if resp.status == 200:
                                break
                except Exception:
                    pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("skiff server not ready after 60 s")
        if not self.single:
            self.scheduler_pid = child_pid(self.server.pid, "scheduler")
            self.manager_pid = child_pid(self.server.pid, "controller-manager")

    def server_cpu(self) -> float:
        """CPU seconds of the API server and (when it is a child process) the controller manager."""
        return self.apiserver_cpu() + (cpu_seconds(self.manager_pid) if self.manager_pid else 0.0)

    def apiserver_cpu(self) -> float:
        assert self.server is not None
        return cpu_seconds(self.server.pid)

    async def stop(self) -> None:
        await terminate(self.server)


async def gather_limited(n: int, items: list[Any], fn: Any) -> None:
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    await asyncio.gather(*(worker() for _ in range(n)))


async def register_nodes(client: Client, count: int, concurrency: int) -> None:
    allocatable = {"cpu": "4", "memory": "32Gi", "pods": "110"}

    async def one(i: int) -> None:
        name = f"node-{i:05d}"
        meta = {"name": name, "labels": {"kubernetes.io/hostname": name}}
        await client.create(R.NODES, {"metadata": meta})
        status = {"allocatable": allocatable, "capacity": allocatable,
                  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}  # fmt: skip
        for attempt in range(5):
            try:
                await client.patch(R.NODES, name, {"status": status}, subresource="status", patch_type="merge")
                return
            except Exception:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1)

    await gather_limited(concurrency, list(range(count)), one)


def pod_body(i: int) -> Obj:
    return {
        "metadata": {"name": f"pod-{i:06d}", "namespace": NAMESPACE},
        "spec": {
            "containers": [
                {
                    "name": "pause",
                    "image": "registry.k8s.io/pause:3.9",
                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
                }
            ],
        },
    }


async def run_one(
    nodes: int, pods: int, *, single: bool, concurrency: int, keep: bool, profile: Path | None = None
) -> Result:
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-sched-", dir="/var/tmp"))
    cluster = Cluster(work, single=single, profile=profile)
    mode = "single process" if single else "scheduler child process"
    try:
        await cluster.start()
        assert cluster.server is not None
        # the creates take the client's lean HTTP/1.1 path (skiff.client.http11), still over HTTPS with the
        # admin's certificate: the bench's own CPU shares the box with the system under test
        async with Client.from_kubeconfig(cluster.kubeconfig, pool_size=concurrency + 8, lean_requests=True) as client:
            await client.create(R.NAMESPACES, {"metadata": {"name": NAMESPACE}})
            t0 = time.monotonic()
            await register_nodes(client, nodes, concurrency)
            node_setup = time.monotonic() - t0
            log(f"{nodes} nodes registered in {node_setup:.1f}s")
            await asyncio.sleep(3)  # let the scheduler's informer take them in

            sent: dict[str, float] = {}
            bound: dict[str, float] = {}
            done = asyncio.Event()
            rv = (await client.list(R.PODS, namespace=NAMESPACE, limit=1))["metadata"]["resourceVersion"]

            async def watch() -> None:
                nonlocal rv
                while not done.is_set():
                    try:
                        async for _type, obj in client.watch(R.PODS, namespace=NAMESPACE, resource_version=rv,
                                                             timeout_seconds=600):  # fmt: skip
                            meta = obj.get("metadata") or {}
                            rv = meta.get("resourceVersion") or rv
                            name = meta.get("name")  # none on BOOKMARK events
                            if name and obj.get("spec", {}).get("nodeName") and name not in bound:
                                bound[name] = time.monotonic()
                                if len(bound) >= pods:
                                    done.set()
                                    return
                    except Exception as exc:  # a dropped watch: resume from the last resourceVersion
                        log(f"watch ended ({exc}); resuming")
                        await asyncio.sleep(0.2)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.5)
            cpu_before, api_before, client_before = cluster.server_cpu(), cluster.apiserver_cpu(), time.process_time()
            sched_before = cpu_seconds(cluster.scheduler_pid) if cluster.scheduler_pid else 0.0

            async def create(i: int) -> None:
                body = pod_body(i)
                sent[body["metadata"]["name"]] = time.monotonic()
                await client.create(R.PODS, body, namespace=NAMESPACE)

            start = time.monotonic()
            await gather_limited(concurrency, list(range(pods)), create)
            created = time.monotonic()
            log(f"{pods} pods created in {created - start:.1f}s ({pods / (created - start):.0f}/s); "
                f"{len(bound)} bound so far")  # fmt: skip
            try:
                await asyncio.wait_for(done.wait(), timeout=max(120.0, pods / 20))
            except TimeoutError:
                log(f"timed out: {len(bound)}/{pods} bound")
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            end = max(bound.values()) if bound else time.monotonic()
            latencies = [(bound[n] - sent[n]) * 1000 for n in bound if n in sent]
            server_cpu = cluster.server_cpu() - cpu_before
            api_cpu, client_cpu = cluster.apiserver_cpu() - api_before, time.process_time() - client_before
            sched_cpu = (cpu_seconds(cluster.scheduler_pid) - sched_before) if cluster.scheduler_pid else 0.0
            result = Result(
                nodes=nodes,
                pods=pods,
                mode=mode,
                node_setup_s=node_setup,
                create_s=created - start,
                creates_per_s=pods / (created - start),
                schedule_s=end - start,
                pods_per_s=len(bound) / (end - start),
                p50_ms=percentile(latencies, 50),
                p99_ms=percentile(latencies, 99),
                max_ms=max(latencies, default=float("nan")),
                bound=len(bound),
                server_cpu_s=server_cpu,
                scheduler_cpu_s=sched_cpu,
                apiserver_cpu_s=api_cpu,
                client_cpu_s=client_cpu,
                server_rss_mb=rss_mb(cluster.server.pid) + (rss_mb(cluster.manager_pid) if cluster.manager_pid else 0),
                scheduler_rss_mb=rss_mb(cluster.scheduler_pid) if cluster.scheduler_pid else 0.0,
            )
            per = 1000 / max(result.bound, 1)
            log(f"{result.bound}/{pods} bound in {result.schedule_s:.1f}s: {result.pods_per_s:.0f} pods/s, "
                f"p99 {result.p99_ms:.0f} ms; CPU ms/pod: API server {api_cpu * per:.2f}, controller manager "
                f"{(server_cpu - api_cpu) * per:.2f}, scheduler {sched_cpu * per:.2f}, bench client "
                f"{client_cpu * per:.2f}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
            return result
    finally:
        await cluster.stop()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_results(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(f"skiff scheduler benchmark -- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}; create concurrency {args.concurrency}")  # fmt: skip
    print("pods 100m/500Mi on nodes 4 cpu/32Gi/110 pods (scheduler_perf SchedulingBasic shape); SQLite; "
          "latency = create sent -> bound seen on a watch")  # fmt: skip
    print("CPU ms/pod and RSS: the API server with the controller manager (+ the scheduler process, when it "
          "is one)")  # fmt: skip
    header = (f"{'nodes':>6} {'pods':>6}  {'mode':<27} {'creates/s':>9} {'pods/s':>7} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'max ms':>8} {'bound':>6} {'CPU ms/pod':>13} {'RSS MB':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        bound = max(r.bound, 1)
        cpu = f"{r.server_cpu_s / bound * 1000:.2f}"
        rss = f"{r.server_rss_mb:.0f}"
        if r.scheduler_rss_mb:
            cpu += f"+{r.scheduler_cpu_s / bound * 1000:.2f}"
            rss += f"+{r.scheduler_rss_mb:.0f}"
        print(f"{r.nodes:>6} {r.pods:>6}  {r.mode:<27} {r.creates_per_s:>9.0f} {r.pods_per_s:>7.0f} "
              f"{r.p50_ms:>8.0f} {r.p99_ms:>8.0f} {r.max_ms:>8.0f} {r.bound:>6} {cpu:>13} {rss:>9}")  # fmt: skip
    for r in results:
        per = 1000 / max(r.bound, 1)
        print(f"{r.nodes} x {r.pods}: CPU ms/pod -- API server {r.apiserver_cpu_s * per:.2f}, controller manager "
              f"{(r.server_cpu_s - r.apiserver_cpu_s) * per:.2f}, scheduler {r.scheduler_cpu_s * per:.2f}, "
              f"bench client {r.client_cpu_s * per:.2f}")  # fmt: skip
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in results:
        if r.nodes == 5000:
            verdict = "met" if r.pods_per_s >= TARGET_PODS_PER_S else "MISSED"
            print(f"target at 5,000 nodes ({r.mode}): {r.pods_per_s:.0f} pods/s vs >= {TARGET_PODS_PER_S:.0f} "
                  f"({verdict}; Kubernetes CI threshold {K8S_CI_THRESHOLD:.0f})")  # fmt: skip


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        nodes, pods = part.lower().split("x")
        out.append((int(nodes), int(pods)))
    return out


async def main_async(args: argparse.Namespace) -> list[Result]:
    sizes = parse_sizes(args.sizes) if args.sizes else ([(100, 1000)] if args.quick else [(1000, 10000), (5000, 10000)])
    results = []
    for nodes, pods in sizes:
        mode = "single process" if args.single_process else "scheduler child process"
        log(f"== {nodes} nodes x {pods} pods ({mode})")
        profile = Path(f"{args.profile}-{nodes}x{pods}") if args.profile else None
        results.append(await run_one(nodes, pods, single=args.single_process, concurrency=args.concurrency,
                                     keep=args.keep, profile=profile))  # fmt: skip
    return results


def algorithm_only(sizes: list[tuple[int, int]]) -> None:
    """The scheduling cycle alone, in this process, on a cache filled by hand: the scheduler's own ceiling.

    Default profile; each pod is filtered, scored and assumed (no API calls, no informers), so this
    is what the scheduler could do if the API server cost nothing.
    """
    from skiff.scheduler.algorithm import Algorithm
    from skiff.scheduler.cache import SchedulerCache
    from skiff.scheduler.config import Profile
    from skiff.scheduler.framework import CycleState
    from skiff.scheduler.plugins import in_tree
    from skiff.scheduler.podinfo import PodInfo
    from skiff.scheduler.runtime import Framework

    class Services:
        def __init__(self, cache: SchedulerCache) -> None:
            self.cache = cache

        def namespace_labels(self) -> dict[str, dict[str, str]]:
            return {}

        def spawn(self, coro: Any, *, name: str) -> None:
            coro.close()

        async def bind_pod(self, pod: PodInfo, node_name: str) -> None: ...

        async def delete_pod(self, pod: PodInfo, *, reason: str) -> None: ...

        async def set_nominated_node(self, pod: PodInfo, node_name: str | None) -> None: ...

    print()
    print("scheduling cycle alone (no API server): default profile, pods 100m/500Mi, nodes 4 cpu/32Gi/110 pods")
    print(f"{'nodes':>6} {'pods':>6} {'pods/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'nodes looked at':>16}")
    for nodes, pods in sizes:
        cache = SchedulerCache()
        allocatable = {"cpu": "4", "memory": "32Gi", "pods": "110"}
        for i in range(nodes):
            name = f"node-{i:05d}"
            meta = {"name": name, "labels": {"kubernetes.io/hostname": name}}
            cache.add_node({"metadata": meta, "status": {"allocatable": allocatable}})
        fwk = Framework(Profile(), in_tree(), Services(cache))
        algo = Algorithm(cache)
        infos = [PodInfo({**pod_body(i), "spec": {**pod_body(i)["spec"], "schedulerName": "default-scheduler"}})
                 for i in range(pods)]  # fmt: skip
        times = []
        looked = 0
        start = time.perf_counter()
        for info in infos:
            t = time.perf_counter()
            result = algo.schedule(fwk, CycleState(), info)
            cache.assume_pod(info, result.node)
            times.append((time.perf_counter() - t) * 1000)
            looked += result.evaluated
        total = time.perf_counter() - start
        print(f"{nodes:>6} {pods:>6} {pods / total:>8.0f} {percentile(times, 50):>8.2f} {percentile(times, 99):>8.2f} "
              f"{looked / pods:>16.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 nodes x 1,000 pods: a smoke run")
    parser.add_argument("--sizes", help="comma list of NODESxPODS (default: 1000x10000,5000x10000)")
    parser.add_argument("--single-process", action="store_true",
                        help="skiff server --single-process (scheduler and controllers inside)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent pod creates (default: 64)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (server logs) afterwards")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="run server (and scheduler) under cProfile: PREFIX-<nodes>x<pods>-*.prof")  # fmt: skip
    parser.add_argument("--algorithm", action="store_true",
                        help="only time the scheduling cycle in this process (no server)")  # fmt: skip
    args = parser.parse_args()
    if args.algorithm:
        sizes = parse_sizes(args.sizes) if args.sizes else [(1000, 10000), (5000, 10000)]
        algorithm_only(sizes)
        return
    results = asyncio.run(main_async(args))
    print_results(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()

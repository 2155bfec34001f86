"""A Deployment of 1,000 replicas on 100 simulated nodes: time to all Running, time to Available, server RSS.

Why this exists: issue 3 asks how long a user waits between `kubectl apply`
of a big Deployment and every replica running, and what the server costs
in memory meanwhile. Every part of the path is the real one: kubectl apply,
the deployment and replica set controllers creating 1,000 pods through the
API (with admission: priority and default tolerations), the scheduler
binding them, and `skiff sim nodes` (KWOK-like simulated kubelets, no
containers) reporting them Running, seen on a watch.

It starts a throw-away `skiff server` (SQLite under /var/tmp), then `skiff
sim nodes --count 100`, waits for the nodes to be Ready, opens watches on
the pods and the Deployment, runs `kubectl apply` and prints:

* time from apply to N pods Running (as a watch sees them);
* time from apply to the Deployment Available with readyReplicas == N;
* peak RSS of the server: the server process plus all its descendants (the
  controller manager and scheduler, when they run as children), sampled
  from /proc every 100 ms, with each process's share at the peak; also the
  RSS before the apply and the CPU time the server's process tree used
  during the run.

`--single-process` runs `skiff server --single-process` (controller manager
and scheduler inside the API server's process) for comparison.

Figures are printed, never judged.

    .venv/bin/python -m bench.deployment [--replicas 1000] [--nodes 100] [--single-process] [--json FILE] [--keep]
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
if str(REPO) not in sys.path:  # `python bench/deployment.py` as well as `python -m bench.deployment`
    sys.path.insert(0, str(REPO))

from bench.proc import free_port, log, process_tree, rss_kb, stat_fields, terminate  # noqa: E402

from skiff.client import Client  # noqa: E402
from skiff.client import resources as R  # noqa: E402

BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
NAMESPACE = "bench"
NAME = "web"
Obj = dict[str, Any]


@dataclass
class Result:
    replicas: int
    nodes: int
    running: int
    to_first_running_s: float
    to_all_running_s: float
    to_available_s: float
    ready_replicas: int
    mode: str
    idle_rss_mb: float
    peak_rss_mb: float
    peak_rss_mb_by_process: dict[str, float]
    server_cpu_s: float
    sim_nodes_peak_rss_mb: float


# --- /proc: a process tree's memory and CPU ------------------------------------------------------------


def component(pid: int) -> str:
    """What a process of the server's tree runs: the `skiff` subcommand in its command line, else its name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    for known in ("controller-manager", "scheduler", "server"):
        if known in argv:
            return known
    return Path(argv[0]).name if argv else "?"


def tree_sample(root: int) -> tuple[dict[str, int], float]:
    """(RSS in kB by component, summed CPU seconds) of `root`'s tree."""
    rss: dict[str, int] = {}
    cpu = 0.0
    for pid in process_tree(root):
        fields = stat_fields(pid)
        if fields is not None:
            cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
        name = component(pid)
        rss[name] = rss.get(name, 0) + rss_kb(pid)
    return rss, cpu


class PeakRSS:
    """Samples a process tree's summed RSS every `interval` (reads /proc in a thread) and keeps the peak."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root, self.interval = root, interval
        self.peak_kb = 0
        self.at_peak: dict[str, int] = {}  # by component, when the sum peaked
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> tuple[int, float]:
        by_component, cpu = await asyncio.to_thread(tree_sample, self.root)
        total = sum(by_component.values())
        if total > self.peak_kb:
            self.peak_kb, self.at_peak = total, by_component
        return total, cpu

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.sample()
                await asyncio.sleep(self.interval)

        self._task = asyncio.create_task(loop(), name=f"rss sampler {self.root}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()


# --- the cluster ---------------------------------------------------------------------------------------


class Cluster:
    """A throw-away `skiff server` and one `skiff sim nodes` process against it."""

    def __init__(self, work: Path, *, single: bool) -> None:
        self.work = work
        self.single = single
        self.port = free_port()
        self.server: asyncio.subprocess.Process | None = None
        self.sim: asyncio.subprocess.Process | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.work / "data" / "kubeconfig.yaml"

    async def _spawn(self, log_name: str, *args: str) -> asyncio.subprocess.Process:
        with (self.work / log_name).open("ab") as out:
            return await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT)

    async def start_server(self) -> None:
        self.server = await self._spawn(
            "server.log",
            *(str(BIN / "skiff"), "server", "--data-dir", str(self.work / "data"), "--port", str(self.port)),
            *("--bind-address", "127.0.0.1", "--log-level", "warning", "--disable-agent", "--disable-dns"),
            *(("--single-process",) if self.single else ()),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.returncode is not None:
                raise RuntimeError(f"skiff server exited:\n{(self.work / 'server.log').read_text()}")
            if self.kubeconfig.exists():
                with contextlib.suppress(Exception):
                    async with Client.from_kubeconfig(self.kubeconfig) as c:
                        async with c.session().get(c.config.server + "/readyz") as resp:
                            if resp.status == 200:
                                return
            await asyncio.sleep(0.2)
        raise RuntimeError("skiff server not ready after 60 s")

    async def start_nodes(self, client: Client, count: int) -> None:
        self.sim = await self._spawn(
            "sim.log",
            *(str(BIN / "skiff"), "sim", "nodes", "--kubeconfig", str(self.kubeconfig), "--count", str(count)),
            *("--prefix", "sim", "--log-level", "warning"),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.sim.returncode is not None:
                raise RuntimeError(f"skiff sim nodes exited:\n{(self.work / 'sim.log').read_text()}")
            nodes = (await client.list(R.NODES, label_selector="type=simulated"))["items"]
            if sum(1 for n in nodes if _ready(n)) >= count:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{count} simulated nodes not Ready after 120 s")

    async def stop(self) -> None:
        await terminate(self.sim, self.server)


def _ready(node: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions") or []
    )


def deployment(replicas: int) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        }
                    ]
                },
            },
        },
    }


async def watch_until(client: Client, resource: Any, rv: str, done: asyncio.Event, on_event: Any, **kw: Any) -> None:
    """Follow a watch from `rv`, resuming after drops, calling `on_event(obj)` until `done` is set."""
    while not done.is_set():
        try:
            async for _type, obj in client.watch(resource, namespace=NAMESPACE, resource_version=rv,
                                                 timeout_seconds=600, **kw):  # fmt: skip
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                on_event(obj)
                if done.is_set():
                    return
        except Exception as exc:  # a dropped watch: resume from the last resourceVersion
            log(f"watch ended ({exc!r}); resuming")
            await asyncio.sleep(0.2)


async def kubectl_apply(kubeconfig: Path, manifest: Obj) -> None:
    kubectl = BIN / "kubectl" if (BIN / "kubectl").exists() else Path(shutil.which("kubectl") or "kubectl")
    proc = await asyncio.create_subprocess_exec(
        str(kubectl), "apply", "-f", "-", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip
    out, err = await proc.communicate(json.dumps(manifest).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {err.decode()}{out.decode()}")


async def run(replicas: int, nodes: int, *, single: bool, keep: bool, give_up_after: float) -> Result:
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-deploy-", dir="/var/tmp"))
    cluster = Cluster(work, single=single)
    try:
        await cluster.start_server()
        assert cluster.server is not None
        server_rss = PeakRSS(cluster.server.pid)
        server_rss.start()
        async with Client.from_kubeconfig(cluster.kubeconfig) as client:
            await client.create(R.NAMESPACES, {"metadata": {"name": NAMESPACE}})
            t0 = time.monotonic()
            await cluster.start_nodes(client, nodes)
            assert cluster.sim is not None
            sim_rss = PeakRSS(cluster.sim.pid, interval=0.5)
            sim_rss.start()
            log(f"{nodes} simulated nodes Ready in {time.monotonic() - t0:.1f}s")
            await asyncio.sleep(3)  # let the scheduler and controllers settle with the nodes
            idle_kb, cpu_before = await server_rss.sample()

            running: dict[str, float] = {}
            available: list[tuple[float, int]] = []
            pods_done, deploy_done = asyncio.Event(), asyncio.Event()

            def on_pod(pod: Obj) -> None:
                name = (pod.get("metadata") or {}).get("name")
                if name and name not in running and (pod.get("status") or {}).get("phase") == "Running":
                    running[name] = time.monotonic()
                    if len(running) >= replicas:
                        pods_done.set()

            def on_deployment(obj: Obj) -> None:
                status = obj.get("status") or {}
                conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
                ready = int(status.get("readyReplicas") or 0)
                if ready >= replicas and conditions.get("Available") == "True" and not deploy_done.is_set():
                    available.append((time.monotonic(), ready))
                    deploy_done.set()

            pods_rv = (await client.list(R.PODS, namespace=NAMESPACE, limit=1))["metadata"]["resourceVersion"]
            deploy_rv = (await client.list(R.DEPLOYMENTS, namespace=NAMESPACE))["metadata"]["resourceVersion"]
            watchers = [
                asyncio.create_task(watch_until(client, R.PODS, pods_rv, pods_done, on_pod)),
                asyncio.create_task(watch_until(client, R.DEPLOYMENTS, deploy_rv, deploy_done, on_deployment)),
            ]
            await asyncio.sleep(0.5)
            start = time.monotonic()
            await kubectl_apply(cluster.kubeconfig, deployment(replicas))
            log(f"applied a Deployment of {replicas} replicas")
            try:
                await asyncio.wait_for(asyncio.gather(pods_done.wait(), deploy_done.wait()), give_up_after)
            except TimeoutError:
                log(f"timed out after {give_up_after:.0f}s: {len(running)}/{replicas} Running")
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            _, cpu_after = await server_rss.sample()
            await server_rss.stop()
            await sim_rss.stop()
            nan = float("nan")
            result = Result(
                replicas=replicas,
                nodes=nodes,
                running=len(running),
                to_first_running_s=min(running.values()) - start if running else nan,
                to_all_running_s=max(running.values()) - start if len(running) >= replicas else nan,
                to_available_s=available[0][0] - start if available else nan,
                ready_replicas=available[0][1] if available else 0,
                mode="single process" if single else "controller manager and scheduler as child processes",
                idle_rss_mb=idle_kb / 1024,
                peak_rss_mb=server_rss.peak_kb / 1024,
                peak_rss_mb_by_process={k: v / 1024 for k, v in sorted(server_rss.at_peak.items())},
                server_cpu_s=cpu_after - cpu_before,
                sim_nodes_peak_rss_mb=sim_rss.peak_kb / 1024,
            )
            return result
    finally:
        await cluster.stop()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_result(r: Result) -> None:
    print()
    print(f"skiff deployment benchmark -- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}; SQLite")  # fmt: skip
    print(f"Deployment of {r.replicas} replicas (10m/32Mi) on {r.nodes} simulated nodes (skiff sim nodes); "
          "times from `kubectl apply`, as watches see them")  # fmt: skip
    print(f"  first pod Running        {r.to_first_running_s:8.1f} s")
    print(f"  all pods Running         {r.to_all_running_s:8.1f} s   ({r.running}/{r.replicas} seen Running)")
    print(f"  Deployment Available     {r.to_available_s:8.1f} s   (readyReplicas {r.ready_replicas})")
    parts = ", ".join(f"{name} {mb:.0f}" for name, mb in r.peak_rss_mb_by_process.items())
    print(f"  server: `skiff server`, {r.mode}")
    print(f"  server RSS before apply  {r.idle_rss_mb:8.0f} MB  (summed over the server and its descendants)")
    print(f"  server RSS peak          {r.peak_rss_mb:8.0f} MB  ({parts})")
    print(f"  server CPU during run    {r.server_cpu_s:8.1f} s")
    print(f"  sim nodes RSS peak       {r.sim_nodes_peak_rss_mb:8.0f} MB  (not counted above)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--single-process", action="store_true", help="run `skiff server --single-process`")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.replicas, args.nodes, single=args.single_process, keep=args.keep, give_up_after=args.timeout)
    )
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

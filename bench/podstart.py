"""Pod create -> Running through the whole cluster on the local node, beside a bare `runc run` of the same bundle.

Why this exists: issue 4 sets the pod-start target a user notices -- `kubectl create` of a
pod to the pod Running as a watch sees it: p50 <= 300 ms, p99 <= 1 s, and no more than 5x a
bare `runc run` of the same bundle -- and asks what the node agent costs when it just keeps
100 pods running. Every part is the real one: a throw-away `skiff server` (SQLite, its
scheduler and its bundled registry; `--disable-agent`, so that the pods' node is the
agent started here, on its own bridge and pod CIDR), the busybox image pushed there, and a real `skiff agent`
on runc, CNI and cgroups as root.

It creates `--pods` pods one after another (each waits for Running before the next is
created, so every figure is a latency, not a queue), prints p50/p99 and the slowest, then,
with all of them running, samples the agent's RSS and CPU for `--idle` seconds, and last
times `--bare` bare `runc run --detach` of the bundle of one of the agent's containers
(its config.json with fresh namespaces instead of the pod's, the same rootfs and command).
The first pod (the image pull) is a warm-up and not counted. Figures are printed, never judged.

Uses bridge `skbench0`, pod CIDR 10.199.43.0/24, netns prefix `skbench-` and cgroup parent
`skiffbenchpods`, and removes them all at the end.

`--profile DIR` records py-spy profiles of the agent while the pods start and while it idles
(`DIR/agent-start.txt`, `DIR/agent-idle.txt`) and prints its hottest functions.

    sudo .venv/bin/python -m bench.podstart [--pods 100] [--idle 20] [--bare 20] [--profile DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/podstart.py` as well as `python -m bench.podstart`
    sys.path.insert(0, str(REPO))

from bench.api import Profiler, summarize_profile  # noqa: E402
from bench.proc import cpu_seconds, free_port, log, process_tree, rss_kb, terminate  # noqa: E402
from bench.runtime import pct  # noqa: E402

from skiff.client import Client  # noqa: E402
from skiff.client import resources as R  # noqa: E402
from skiff.images.recipes import ensure_builtin_image  # noqa: E402

BIN = Path(sys.executable).parent
NAMESPACE = "podstart"
NODE = "podstart-bench"
POD_CIDR = "10.199.43.0/24"
BRIDGE = "skbench0"
NETNS_PREFIX = "skbench-"
CGROUP_PARENT = "skiffbenchpods"
Obj = dict[str, Any]


class Node:
    """A throw-away `skiff server` (with its registry) and a `skiff agent` for this machine."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port, self.registry = free_port(), f"127.0.0.1:{free_port()}"
        self.server: asyncio.subprocess.Process | None = None
        self.agent: asyncio.subprocess.Process | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.work / "data" / "kubeconfig.yaml"

    @property
    def state_dir(self) -> Path:
        return self.work / "agent"

    async def _spawn(self, log_name: str, *args: str) -> asyncio.subprocess.Process:
        with (self.work / log_name).open("ab") as out:
            return await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT)

    async def start_server(self) -> None:
        self.server = await self._spawn(
            "server.log", str(BIN / "skiff"), "server", "--data-dir", str(self.work / "data"),
            "--port", str(self.port), "--bind-address", "127.0.0.1", "--registry-address", self.registry,
            "--disable-agent", "--log-level", "warning",
        )  # fmt: skip
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

    async def start_agent(self, client: Client) -> None:
        self.agent = await self._spawn(
            "agent.log", str(BIN / "skiff"), "agent", "--kubeconfig", str(self.kubeconfig), "--node-name", NODE,
            "--pod-cidr", POD_CIDR, "--bridge", BRIDGE, "--netns-prefix", NETNS_PREFIX,
            "--cgroup-parent", CGROUP_PARENT, "--state-dir", str(self.state_dir), "--registry", self.registry,
            "--log-level", "warning",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.agent.returncode is not None:
                raise RuntimeError(f"skiff agent exited:\n{(self.work / 'agent.log').read_text()}")
            with contextlib.suppress(Exception):
                node = await client.get(R.NODES, NODE)
                conds = {c.get("type"): c.get("status") for c in node.get("status", {}).get("conditions") or []}
                if conds.get("Ready") == "True":
                    return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"node {NODE} not Ready after 60 s")

    async def stop(self) -> None:
        await terminate(self.agent, self.server)

    def sweep(self) -> None:
        """Remove by force whatever the agent left: containers, namespaces, mounts, NAT rules, bridge, cgroups."""
        root = self.state_dir / "runtime" / "runc"
        if root.is_dir():
            ids = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True).stdout
            for cid in ids.split():
                subprocess.run(["runc", "--root", str(root), "kill", "--all", cid, "KILL"], capture_output=True)
                subprocess.run(["runc", "--root", str(root), "delete", "-f", cid], capture_output=True)
        for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith(NETNS_PREFIX):
                subprocess.run(["ip", "netns", "delete", line.split()[0]], capture_output=True)
        prefix = str(self.work.resolve()) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        net = POD_CIDR.rsplit(".", 1)[0] + "."
        rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout.splitlines()
        for rule in (r for r in rules if net in r and r.startswith("-A")):
            parts = shlex.split(rule)
            subprocess.run(["iptables", "-t", "nat", "-D", *parts[1:]], capture_output=True)
            if "-j" in parts and parts[parts.index("-j") + 1].startswith("CNI-"):
                chain = parts[parts.index("-j") + 1]
                subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
                subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        for base in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]:
            for parent in (base / CGROUP_PARENT, base / "skiffbenchbare"):
                if parent.is_dir():
                    dirs = sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                    for d in [*dirs, parent]:
                        with contextlib.suppress(OSError):
                            d.rmdir()


def pod(name: str, image: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "containers": [{"name": "c", "image": image, "command": ["sleep", "100000"]}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,  # a plain pod: no token volume to project
        },
    }


class Watcher:
    """Follows the namespace's pods on one watch and wakes whoever waits for a pod to be Running."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.running: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        rv = (await self.client.list(R.PODS, namespace=NAMESPACE, limit=1))["metadata"]["resourceVersion"]
        self.task = asyncio.create_task(self._follow(rv), name="pod watch")

    async def _follow(self, rv: str) -> None:
        while True:
            try:
                async for kind, obj in self.client.watch(R.PODS, namespace=NAMESPACE, resource_version=rv,
                                                         timeout_seconds=3600):  # fmt: skip
                    rv = obj["metadata"].get("resourceVersion") or rv
                    name = obj["metadata"].get("name")
                    phase = (obj.get("status") or {}).get("phase")
                    if kind != "BOOKMARK" and name and name not in self.running and phase == "Running":
                        self.running[name] = time.perf_counter()
                        fut = self.waiting.pop(name, None)
                        if fut is not None and not fut.done():
                            fut.set_result(self.running[name])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped watch: resume from the last resourceVersion
                log(f"watch ended ({exc!r}); resuming")
                await asyncio.sleep(0.2)

    async def create_and_wait(self, obj: Obj, limit: float = 120.0) -> float:
        """Seconds from the create request to the watch showing the pod Running."""
        name = obj["metadata"]["name"]
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[name] = fut
        began = time.perf_counter()
        await self.client.create(R.PODS, obj, namespace=NAMESPACE)
        return await asyncio.wait_for(fut, limit) - began

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def idle_cost(pid: int, seconds: float) -> tuple[float, float, float]:
    """(RSS MB of the agent process, CPU % of one core of the agent alone, and with the processes it ran)."""
    cpu0, all0, t0 = cpu_seconds(pid), cpu_seconds(pid, children=True), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, all1, t1 = cpu_seconds(pid), cpu_seconds(pid, children=True), time.monotonic()
    return rss_kb(pid) / 1024, 100 * (cpu1 - cpu0) / (t1 - t0), 100 * (all1 - all0) / (t1 - t0)


def shims_rss_mb(agent_pid: int) -> float:
    """RSS of everything else the agent keeps running (shims, conmon-like helpers), containers excluded."""
    total = 0
    for pid in process_tree(agent_pid)[1:]:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "busybox" not in exe:
            total += rss_kb(pid)
    return total / 1024


async def bare_runs(node: Node, work: Path, n: int) -> list[float]:
    """`runc run --detach` of a copy of one of the agent's container bundles, with namespaces of its own."""
    containers = node.state_dir / "runtime" / "containers"
    bundle_src = next(p for p in sorted(containers.iterdir()) if (p / "config.json").exists()
                      and json.loads((p / "config.json").read_text())["process"]["args"][0] == "sleep")  # fmt: skip
    spec = json.loads((bundle_src / "config.json").read_text())
    spec["root"] = {"path": spec["root"]["path"], "readonly": True}  # the container's rootfs, mounted
    spec["process"]["terminal"] = False
    spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "mount", "network", "ipc", "uts")]
    spec["linux"]["cgroupsPath"] = "/skiffbenchbare/bare"
    spec.pop("hooks", None)
    spec["mounts"] = [m for m in spec.get("mounts", []) if not m["source"].startswith(str(node.work))]
    bundle = work / "bare"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    root = work / "bare-runc"
    times = []
    for i in range(n):
        began = time.perf_counter()
        with (work / "bare.log").open("ab") as err:  # never a pipe: the detached container keeps what it inherits
            proc = await asyncio.create_subprocess_exec(
                "runc", "--root", str(root), "run", "--detach", "--bundle", str(bundle), f"bare{i}",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
            await proc.wait()
        times.append(time.perf_counter() - began)
        killed = await asyncio.create_subprocess_exec("runc", "--root", str(root), "delete", "--force", f"bare{i}")
        await killed.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"bare runc run exited {proc.returncode}: {(work / 'bare.log').read_text()}")
    return times


async def delete_pods(client: Client, names: list[str], limit: float = 120.0) -> None:
    """Delete the pods and give the agent `limit` seconds to tear them down (what is left is swept after)."""
    await asyncio.gather(*(client.delete(R.PODS, n, namespace=NAMESPACE) for n in names), return_exceptions=True)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not (await client.list(R.PODS, namespace=NAMESPACE))["items"]:
            return
        await asyncio.sleep(0.5)


async def run(pods: int, idle: float, bare: int, keep: bool, profile: Path | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-podstart-", dir="/var/tmp"))
    node = Node(work)
    try:
        await node.start_server()
        image = str(await ensure_builtin_image("busybox", node.registry))
        log(f"server up, {image} in the registry")
        async with Client.from_kubeconfig(node.kubeconfig) as client:
            await client.create(R.NAMESPACES, {"metadata": {"name": NAMESPACE}})
            await node.start_agent(client)
            assert node.agent is not None
            log("agent Ready")
            watcher = Watcher(client)
            await watcher.start()
            warm = await watcher.create_and_wait(pod("warmup", image))
            log(f"warm-up pod (image pull) Running after {warm * 1000:.0f} ms")
            latencies = []
            profiler = Profiler(profile, node.agent.pid, "agent")
            with profiler.phase("start"):
                for i in range(pods):
                    latencies.append(await watcher.create_and_wait(pod(f"p{i:03d}", image)))
            log(f"{pods} pods Running")
            await asyncio.sleep(3)  # let the last status writes settle
            with profiler.phase("idle"):
                rss, cpu, cpu_all = await idle_cost(node.agent.pid, idle)
            helpers = shims_rss_mb(node.agent.pid)
            bare_times = await bare_runs(node, work, bare)
            await watcher.stop()
            log("deleting the pods")
            await delete_pods(client, ["warmup", *(f"p{i:03d}" for i in range(pods))])
        ms = sorted(t * 1000 for t in latencies)
        bare_ms = sorted(t * 1000 for t in bare_times)
        print()
        print(f"skiff pod start benchmark -- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {platform.node()}; "
              f"{os.cpu_count()} CPUs; {platform.platform()}; Python {platform.python_version()}")  # fmt: skip
        print(f"{pods} busybox pods created one after another on the local node (server + scheduler + skiff agent, "
              "runc); create request -> Running on a watch")  # fmt: skip
        print(f"  pod create -> Running   p50 {pct(ms, 0.5):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms   "
              f"max {ms[-1]:7.1f} ms   (target p50 <= 300, p99 <= 1000)")  # fmt: skip
        print(f"  bare runc run --detach  p50 {pct(bare_ms, 0.5):7.1f} ms   p99 {pct(bare_ms, 0.99):7.1f} ms   "
              f"(n={bare}, same rootfs and command)")  # fmt: skip
        print(f"  ratio (p50)             {pct(ms, 0.5) / pct(bare_ms, 0.5):7.1f} x   (target <= 5x)")
        print(f"  agent idle, {pods + 1} pods   RSS {rss:6.0f} MB   CPU {cpu:5.1f} % of one core over {idle:.0f} s"
              f" ({cpu_all:.1f} % with the processes it ran: runc, plugins)"
              f"   (+ {helpers:.0f} MB RSS of its helpers: shim server, shims)")  # fmt: skip
        for path, seconds in profiler.files.values():
            print("\n".join(summarize_profile(path, seconds)))
        return 0
    finally:
        await node.stop()
        await asyncio.to_thread(node.sweep)
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds the idle agent is sampled")
    parser.add_argument("--bare", type=int, default=20, help="bare runc runs")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and logs")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record py-spy profiles of the agent here")
    args = parser.parse_args()
    return asyncio.run(run(args.pods, args.idle, args.bare, args.keep, args.profile))


if __name__ == "__main__":
    sys.exit(main())

"""Serverless functions: cold start, warm latency through the gateway against the instance directly,
and the throughput of one warm instance.

Why this exists: issue 7 sets the figures a user of functions notices -- zero to first response
(cold start) p50 <= 500 ms, and the gateway adding <= 1 ms p50 to a warm call. Every part is the
real one: a throw-away `skiff server` (no scheduler: the gateway binds instances to the node), a
test registry with the python runtime image, a real `skiff agent` on runc, and `skiff gateway`
(the harness of tests/e2e). A `hello` function with a 1 s idle timeout is deployed with `skiff fn`;
each cold trial waits until the function has no pod, then times one call. Warm: the same call
`--warm` times through the gateway and straight to the instance's pod IP, alternating. Throughput:
`--clients` concurrent keep-alive clients for `--seconds` against one instance (concurrency 32),
with the gateway process's CPU per call through it (from /proc; `--profile FILE` py-spies it
meanwhile). Figures are printed, never judged.

    sudo .venv/bin/python -m bench.functions [--trials 20] [--warm 300] [--seconds 5] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.agent_node import AgentNode, Registry, wait_for  # noqa: E402
from tests.e2e.cluster import Server, free_port  # noqa: E402
from tests.e2e.test_functions import NODE, POD_CIDR, Gateway, fn_pods, skiff  # noqa: E402

from skiff.images.recipes import ensure_builtin_image  # noqa: E402

HELLO = "def handle(event, context):\n    return {'ok': True}\n"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def show(label: str, ms: list[float]) -> None:
    print(f"{label:<34} n={len(ms):<4} p50 {pct(ms, 0.5):8.2f} ms   p99 {pct(ms, 0.99):8.2f} ms   "
          f"mean {statistics.fmean(ms):8.2f} ms")  # fmt: skip


def call(url: str) -> float:
    t = time.perf_counter()
    req = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
    return (time.perf_counter() - t) * 1000


async def warm(gateway: str, direct: str, n: int) -> tuple[list[float], list[float]]:
    via: list[float] = []
    straight: list[float] = []
    async with aiohttp.ClientSession() as s:
        for url in (gateway, direct):  # warm the connections
            async with s.post(url, data=b"{}") as r:
                await r.read()
        for _ in range(n):
            for url, out in ((gateway, via), (direct, straight)):
                t = time.perf_counter()
                async with s.post(url, data=b"{}") as r:
                    await r.read()
                out.append((time.perf_counter() - t) * 1000)
    return via, straight


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of a process so far (from /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def throughput(url: str, clients: int, seconds: float) -> float:
    done = 0
    end = time.monotonic() + seconds

    async def client(s: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < end:
            async with s.post(url, data=b"{}") as r:
                await r.read()
            done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        await asyncio.gather(*(client(s) for _ in range(clients)))
    return done / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--warm", type=int, default=300)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--warm-pool", type=int, default=1, help="the gateway's --warm-pool (0: every cold start is a pod)")
    p.add_argument("--profile", metavar="FILE",
                   help="py-spy the gateway during its throughput run (a flame graph; collapsed stacks for .txt)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-fn-"))
    print(f"work dir: {tmp}")
    reg = Registry.start(tmp / "registry")
    asyncio.run(ensure_builtin_image("python", reg.host))
    srv = Server(tmp / "server", extra_args=["--disable-scheduler"]).start()
    agent = AgentNode(server=srv, state_dir=tmp / "agent" / "state", registry=reg, node=NODE,
                      pod_cidr=POD_CIDR, bridge="skfn0", netns_prefix="skfn-",
                      cgroup_parent="skifffntest")  # fmt: skip
    gw: Gateway | None = None
    try:
        agent.start()
        gw = Gateway(srv, tmp / "gateway" / "data", free_port(), extra=("--warm-pool", str(args.warm_pool))).start()
        (tmp / "hello.py").write_text(HELLO)
        skiff(gw, "deploy", str(tmp / "hello.py"), "--name", "hello", "--idle-timeout", "1", "--concurrency", "32")
        url = f"{gw.url}/fn/default/hello"
        call(url)  # the first start (image unpacked on the node) is a warm-up
        cold = []
        for _ in range(args.trials):
            wait_for(lambda: fn_pods(srv, "hello") == [], timeout=60, interval=0.1, what="scale to zero")
            cold.append(call(url))
        show("cold start (zero -> response)", cold)
        skiff(gw, "deploy", str(tmp / "hello.py"), "--name", "hello", "--idle-timeout", "600", "--concurrency", "32")
        call(url)  # direct calls do not count as activity: the instance must stay while they run
        ip = fn_pods(srv, "hello")[0]["status"]["podIP"]
        via, direct = asyncio.run(warm(url, f"http://{ip}:8080/", args.warm))
        show("warm, through the gateway", via)
        show("warm, instance directly", direct)
        print(f"{'gateway overhead':<34} p50 {pct(via, 0.5) - pct(direct, 0.5):8.2f} ms")
        assert gw.proc is not None
        for label, target in (("through the gateway", url), ("instance directly", f"http://{ip}:8080/")):
            spy = None
            if args.profile and target == url:
                exe = Path(sys.executable).parent / "py-spy"
                fmt = "raw" if args.profile.endswith(".txt") else "flamegraph"  # raw: collapsed stacks
                spy = subprocess.Popen([str(exe) if exe.exists() else "py-spy", "record", "-o", args.profile,
                                        "--format", fmt, "--pid", str(gw.proc.pid), "--duration",
                                        str(int(args.seconds)), "--nonblocking"])  # fmt: skip
            cpu = cpu_seconds(gw.proc.pid)
            rps = asyncio.run(throughput(target, args.clients, args.seconds))
            print(f"throughput, one instance, {label:<20} {rps:8.0f} calls/s ({args.clients} clients)")
            if target == url:
                (user, system), calls = cpu_seconds(gw.proc.pid), max(1.0, rps * args.seconds)
                user, system = (user - cpu[0]) * 1000 / calls, (system - cpu[1]) * 1000 / calls
                print(f"{'gateway CPU ms/op':<34} {user + system:8.3f} ms (user {user:.3f}, system {system:.3f}; "
                      "its process, under the throughput load)")  # fmt: skip
            if spy is not None:
                spy.wait(60)
        usage = json.loads(skiff(gw, "usage", "-o", "json").stdout)
        print("metered:", usage)
    finally:
        if gw is not None:
            gw.stop()
        agent.cleanup()
        srv.stop()
        reg.stop()


if __name__ == "__main__":
    main()

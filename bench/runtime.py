"""How long the node runtime takes to get a pod's container running, beside a bare `runc run`.

Why this exists: issue 4's pod-start target (p50 <= 300 ms, p99 <= 1 s, <= 5x a bare runc run)
is mostly spent here, below the agent: namespaces, CNI, overlay rootfs, the shim, runc. This
times, on this machine, as root, with a busybox rootfs built from /bin/busybox:

* sandbox: create_sandbox (netns, IPC/UTS namespaces, CNI ADD);
* container: create_container + start (overlay, config.json, shim + runc create, runc start);
* pod: both, i.e. a one-container pod from nothing to a running process;
* bare: `runc run --detach` of a plain bundle (same rootfs, no network, no shim) -- the floor;
* teardown: remove_sandbox (kill, runc delete, unmount, CNI DEL, namespaces, cgroups).

Pods are started one after another (`--pods N`) and then `--parallel N` at once. It prints
figures and never fails on time. Uses bridge `skiffbench0` on 10.199.1.0/24 and removes it.

    .venv/bin/python -m bench.runtime [--pods 20] [--parallel 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from skiff.node.runtime.cni import NetworkConfig
from skiff.node.runtime.proc import run
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerConfig, SandboxConfig

BRIDGE = "skiffbench0"


def busybox_rootfs(root: Path) -> Path:
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split():
        if not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    return root


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"{name:<28} n={len(ms):<4} p50={pct(ms, 0.5):7.1f} ms  p99={pct(ms, 0.99):7.1f} ms  "
            f"mean={statistics.mean(ms):7.1f} ms")


async def one_pod(rt: Runtime, rootfs: Path) -> tuple[float, float, str]:
    began = time.perf_counter()
    sandbox = await rt.create_sandbox(SandboxConfig(uid=str(uuid.uuid4()), name="bench", namespace="default"))
    made = time.perf_counter()
    cid = await rt.create_container(sandbox, ContainerConfig(name="c", args=["sleep", "1000"]), rootfs)
    await rt.start(cid)
    done = time.perf_counter()
    return made - began, done - made, sandbox.uid


async def bare_runs(work: Path, rootfs: Path, n: int) -> list[float]:
    bundle = work / "bare"
    bundle.mkdir()
    await run("runc", "spec", "--bundle", str(bundle))
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"] |= {"terminal": False, "args": ["sleep", "1000"]}
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["linux"]["cgroupsPath"] = "/skiffbench/bare"
    (bundle / "config.json").write_text(json.dumps(spec))
    root = work / "bare-runc"
    times = []
    for i in range(n):
        began = time.perf_counter()
        # stdio to /dev/null: a detached container keeps whatever it inherits open
        proc = await asyncio.create_subprocess_exec(
            "runc", "--root", str(root), "run", "--detach", "--bundle", str(bundle), f"bare{i}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()
        times.append(time.perf_counter() - began)
        await run("runc", "--root", str(root), "delete", "--force", f"bare{i}")
        if proc.returncode != 0:
            raise RuntimeError(f"bare runc run exited {proc.returncode}")
    return times


async def main(pods: int, parallel: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="skiff-bench-runtime-", dir="/var/tmp"))
    rootfs = busybox_rootfs(work / "rootfs")
    network = NetworkConfig(name="skiffbench", bridge=BRIDGE, subnet="10.199.1.0/24", state_dir=work / "state/cni")
    rt = Runtime(state_dir=work / "state", network=network, cgroup_parent="skiffbench", netns_prefix="skiffbench-")
    sandboxes, containers, whole, teardown = [], [], [], []
    try:
        for _ in range(pods):
            s, c, uid = await one_pod(rt, rootfs)
            sandboxes.append(s)
            containers.append(c)
            whole.append(s + c)
            began = time.perf_counter()
            await rt.remove_sandbox(uid)
            teardown.append(time.perf_counter() - began)
        began = time.perf_counter()
        results = await asyncio.gather(*(one_pod(rt, rootfs) for _ in range(parallel)))
        burst = time.perf_counter() - began
        for _, _, uid in results:
            await rt.remove_sandbox(uid)
        bare = await bare_runs(work, rootfs, pods)
    finally:
        for uid in rt.list_sandboxes():
            await rt.remove_sandbox(uid)
        await rt.cni.remove_bridge()
        await asyncio.to_thread(rt.cgroups.remove, "/skiffbench")
        await asyncio.to_thread(shutil.rmtree, work, True)
    print(f"node runtime, {pods} pods one after another, then {parallel} at once")
    for name, values in (("sandbox (netns+CNI)", sandboxes), ("container create+start", containers),
                         ("pod total", whole), ("bare runc run --detach", bare), ("teardown", teardown)):  # fmt: skip
        print(row(name, values))
    print(f"ratio pod/bare (p50)          {pct(whole, 0.5) / pct(bare, 0.5):.1f}x   (target <= 5x)")
    print(f"{parallel} pods at once              {burst * 1000:.0f} ms for all")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.pods, args.parallel))

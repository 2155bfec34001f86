"""Containers on real runc: logs in CRI format, exit codes, OOM, stop with grace, exec, tty, privileges."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from skiff.node.runtime import crilog
from skiff.node.runtime.runc import resize_tty
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerConfig, ContainerState, Mount, Resources
from tests.node.conftest import sandbox_config, wait_for

MiB = 1024 * 1024


Outcome = tuple[int | None, str, list[crilog.LogEntry]]


async def run_once(runtime: Runtime, rootfs: Path, config: ContainerConfig) -> Outcome:
    sandbox = await runtime.create_sandbox(sandbox_config())
    cid = await runtime.create_container(sandbox, config, rootfs)
    await runtime.start(cid)
    status = await runtime.wait(cid, 30)
    log_path = next(i.log_path for i in await runtime.list() if i.id == cid)
    return status.exit_code, status.reason, crilog.parse(log_path.read_bytes())


async def test_echo_lands_in_the_log_in_cri_format(runtime: Runtime, busybox_rootfs: Path) -> None:
    config = ContainerConfig(name="echo", args=["sh", "-c", "echo hello world; echo oops >&2; printf tail"])
    code, reason, entries = await run_once(runtime, busybox_rootfs, config)
    assert (code, reason) == (0, "Completed")
    expected = [("stdout", b"hello world"), ("stderr", b"oops"), ("stdout", b"tail")]
    assert [(e.stream, e.text) for e in entries] == expected
    assert all(len(e.timestamp) == len("2026-01-01T00:00:00.000000000Z") and e.timestamp.endswith("Z") for e in entries)


async def test_exit_code_and_error_reason(runtime: Runtime, busybox_rootfs: Path) -> None:
    code, reason, _ = await run_once(runtime, busybox_rootfs, ContainerConfig(name="fail", args=["sh", "-c", "exit 3"]))
    assert (code, reason) == (3, "Error")


async def test_memory_hog_is_oom_killed(runtime: Runtime, busybox_rootfs: Path) -> None:
    config = ContainerConfig(name="hog", args=["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                             resources=Resources(memory_limit_bytes=32 * MiB))  # fmt: skip
    code, reason, _ = await run_once(runtime, busybox_rootfs, config)
    assert (code, reason) == (137, "OOMKilled")


async def test_within_the_limit_is_not_oom_killed(runtime: Runtime, busybox_rootfs: Path) -> None:
    config = ContainerConfig(name="small", args=["dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=1"],
                             resources=Resources(memory_limit_bytes=32 * MiB))  # fmt: skip
    code, reason, _ = await run_once(runtime, busybox_rootfs, config)
    assert (code, reason) == (0, "Completed")


async def test_stop_sigterm_then_sigkill_after_grace(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    polite = ContainerConfig(name="polite", args=["sh", "-c", "trap 'echo bye; exit 0' TERM; sleep 1000 & wait"])
    stubborn = ContainerConfig(name="stubborn", args=["sh", "-c", "trap '' TERM; sleep 1000 & wait; sleep 1000"])
    ids = [await runtime.create_container(sandbox, c, busybox_rootfs) for c in (polite, stubborn)]
    for cid in ids:
        await runtime.start(cid)
        assert (await runtime.status(cid)).state == ContainerState.RUNNING
    await asyncio.sleep(0.3)  # let the shells install their traps
    began = time.monotonic()
    status = await runtime.stop(ids[0], grace_period=10)
    assert (status.exit_code, time.monotonic() - began < 5) == (0, True)
    began = time.monotonic()
    status = await runtime.stop(ids[1], grace_period=1.5)
    assert status.exit_code == 137 and status.reason == "Error"
    assert time.monotonic() - began >= 1.5
    assert status.finished_at is not None and status.started_at is not None


async def test_exec_in_a_running_container(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config(name="web-1"))
    cid = await runtime.create_container(sandbox, ContainerConfig(name="c", args=["sleep", "1000"]), busybox_rootfs)
    await runtime.start(cid)
    result = await runtime.exec(cid, ["sh", "-c", "echo $((20+22)); hostname; echo err >&2; exit 5"], time_limit=20)
    assert (result.exit_code, result.stdout, result.stderr) == (5, b"42\nweb-1\n", b"err\n")
    result = await runtime.exec(cid, ["cat"], stdin=b"piped in", time_limit=20)
    assert result.stdout == b"piped in"
    tty = await runtime.exec(cid, ["tty"], tty=True, time_limit=20)
    assert tty.exit_code == 0 and b"/dev/pts/" in tty.stdout


async def test_tty_container_logs_its_terminal(runtime: Runtime, busybox_rootfs: Path) -> None:
    code, _, entries = await run_once(runtime, busybox_rootfs, ContainerConfig(name="t", args=["tty"], tty=True))
    assert code == 0
    assert [e.stream for e in entries] == ["stdout"] and entries[0].text.strip() == b"/dev/pts/0"


async def test_readonly_rootfs_and_capability_drop(runtime: Runtime, busybox_rootfs: Path) -> None:
    ro = ContainerConfig(name="ro", args=["sh", "-c", "touch /x"], readonly_rootfs=True)
    code, _, entries = await run_once(runtime, busybox_rootfs, ro)
    assert code != 0 and b"Read-only file system" in b"".join(e.text for e in entries)
    rw = ContainerConfig(name="rw", args=["sh", "-c", "touch /x && chown 65534 /x"])
    assert (await run_once(runtime, busybox_rootfs, rw))[0] == 0
    no_chown = ContainerConfig(name="nochown", args=["sh", "-c", "touch /x && chown 65534 /x"], cap_drop=["CHOWN"])
    code, _, entries = await run_once(runtime, busybox_rootfs, no_chown)
    assert code != 0 and b"Operation not permitted" in b"".join(e.text for e in entries)


async def test_user_and_no_new_privs(runtime: Runtime, busybox_rootfs: Path) -> None:
    config = ContainerConfig(name="u", args=["sh", "-c", "id -u; id -g; grep NoNewPrivs /proc/self/status"],
                             uid=65534, gid=65534, no_new_privs=True)  # fmt: skip
    code, _, entries = await run_once(runtime, busybox_rootfs, config)
    assert code == 0
    assert [e.text for e in entries][:2] == [b"65534", b"65534"] and entries[2].text.split() == [b"NoNewPrivs:", b"1"]


async def test_mounts_bind_and_tmpfs(runtime: Runtime, busybox_rootfs: Path, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "in.txt").write_text("from the host\n")

    config = ContainerConfig(name="m", args=["sh", "-c", "cat /data/in.txt; echo out > /data/out.txt; "
                                             "grep ' /scratch ' /proc/mounts | cut -d' ' -f3"],
                             mounts=[Mount(destination="/data", source=str(volume)),
                                     Mount(destination="/scratch", type="tmpfs")])  # fmt: skip
    code, _, entries = await run_once(runtime, busybox_rootfs, config)
    assert code == 0 and [e.text for e in entries] == [b"from the host", b"tmpfs"]
    assert (volume / "out.txt").read_text() == "out\n"


async def test_a_new_runtime_finds_and_controls_running_containers(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    cid = await runtime.create_container(
        sandbox, ContainerConfig(name="ticker", args=["sh", "-c", "while true; do echo tick; sleep 0.1; done"]),
        busybox_rootfs,
    )  # fmt: skip
    await runtime.start(cid)
    shim_pid = int((runtime.containers_dir / cid / "shim.pid").read_text())
    with open(f"/proc/{shim_pid}/stat") as stat:  # noqa: ASYNC230 - procfs
        assert int(stat.read().split()[3]) != os.getpid()  # the shim is not our child: it outlives us
    again = Runtime(state_dir=runtime.state_dir, network=runtime.network, cgroup_parent=runtime.cgroups.parent,
                    netns_prefix=runtime.sandboxes.netns_prefix)  # fmt: skip
    [info] = await again.list()
    assert (info.id, info.name, info.pod_uid, info.state) == (cid, "ticker", sandbox.uid, ContainerState.RUNNING)
    stats = await again.container_stats(cid)
    assert stats.memory_working_set_bytes > 0 and stats.cpu_usage_ns > 0
    rotated = info.log_path.with_name("container.log.1")
    info.log_path.rename(rotated)
    again.reopen_log(cid)
    for _ in range(100):
        if info.log_path.exists() and info.log_path.stat().st_size > 0:
            break
        await asyncio.sleep(0.05)
    status = await again.stop(cid, grace_period=0)
    assert status.exit_code == 137
    assert crilog.parse(rotated.read_bytes())[0].text == b"tick"
    assert {e.text for e in crilog.parse(info.log_path.read_bytes())} == {b"tick"}


AGENT = """
import asyncio, json, sys, uuid
from pathlib import Path
from skiff.node.runtime.cni import NetworkConfig
from skiff.node.runtime.runc import resize_tty
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerConfig, SandboxConfig

async def main(state, rootfs, bridge, subnet, parent, prefix):
    rt = Runtime(state_dir=Path(state), network=NetworkConfig(name="skifftest", bridge=bridge, subnet=subnet,
                 state_dir=Path(state) / "cni"), cgroup_parent=parent, netns_prefix=prefix)
    sandbox = await rt.create_sandbox(SandboxConfig(uid=str(uuid.uuid4()), name="survivor", namespace="default"))
    config = ContainerConfig(name="ticker", args=["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    cid = await rt.create_container(sandbox, config, Path(rootfs))
    await rt.start(cid)
    print(json.dumps({"id": cid, "uid": sandbox.uid}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_containers_outlive_a_killed_agent(runtime: Runtime, busybox_rootfs: Path) -> None:
    from tests.node.conftest import BRIDGE, CGROUP_PARENT, NETNS_PREFIX, SUBNET

    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, str(runtime.state_dir), str(busybox_rootfs), BRIDGE, SUBNET, CGROUP_PARENT,
        NETNS_PREFIX, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        made = json.loads(await asyncio.wait_for(agent.stdout.readline(), 60))  # type: ignore[union-attr]
    finally:
        agent.kill()
        await agent.wait()
    assert agent.returncode == -signal.SIGKILL
    [info] = await runtime.list()
    assert (info.id, info.pod_uid, info.state) == (made["id"], made["uid"], ContainerState.RUNNING)
    size = info.log_path.stat().st_size
    await wait_for(lambda: info.log_path.stat().st_size > size)  # the shim still writes the log
    assert runtime.sandbox(made["uid"]).name == "survivor"
    status = await runtime.stop(info.id, grace_period=0)
    assert (status.state, status.exit_code) == (ContainerState.EXITED, 137)


async def test_resources_reach_the_cgroup_and_are_enforced(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    limits = Resources(cpu_request_milli=250, cpu_limit_milli=500, memory_limit_bytes=48 * MiB, pids_limit=20)
    forks = "sleep 1; for i in $(seq 40); do sleep 100 & done; echo forked; sleep 100"
    cid = await runtime.create_container(
        sandbox, ContainerConfig(name="limited", args=["sh", "-c", forks], resources=limits), busybox_rootfs
    )
    await runtime.start(cid)
    cg, path = runtime.cgroups, runtime.cgroups.container_path(sandbox.uid, cid)

    def read(controller: str, name: str) -> str:
        return (cg.controller_dir(path, controller) / name).read_text().strip()

    if cg.version == 1:
        assert (read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")) == ("50000", "100000")
        assert read("cpu", "cpu.shares") == "256" and read("memory", "memory.limit_in_bytes") == str(48 * MiB)
    else:
        assert read("cpu", "cpu.max") == "50000 100000" and read("memory", "memory.max") == str(48 * MiB)
    assert read("pids", "pids.max") == "20"
    pod = await runtime.pod_stats(sandbox.uid)
    assert pod.memory_usage_bytes > 0 and pod.cpu_usage_ns > 0
    log_path = next(i.log_path for i in await runtime.list() if i.id == cid)
    for _ in range(100):
        text = b"\n".join(e.text for e in crilog.parse(log_path.read_bytes()))
        if b"fork" in text:
            break
        await asyncio.sleep(0.1)
    assert b"can't fork" in text or b"Resource temporarily unavailable" in text, text
    assert int(read("pids", "pids.current")) <= 20


async def test_the_image_rootfs_is_never_written(runtime: Runtime, busybox_rootfs: Path) -> None:
    config = ContainerConfig(name="w", args=["sh", "-c", "echo changed > /etc/passwd && touch /new && rm /bin/ls"])
    before = (busybox_rootfs / "etc/passwd").read_text()
    assert (await run_once(runtime, busybox_rootfs, config))[0] == 0
    assert (busybox_rootfs / "etc/passwd").read_text() == before
    assert not (busybox_rootfs / "new").exists() and (busybox_rootfs / "bin/ls").is_symlink()


async def test_copy_when_overlay_cannot_mount(runtime: Runtime, busybox_rootfs: Path, tmp_path: Path) -> None:
    odd = tmp_path / "image,with-a-comma"  # a comma ends overlay's lowerdir= option: the mount fails
    await asyncio.to_thread(shutil.copytree, busybox_rootfs, odd, symlinks=True)
    sandbox = await runtime.create_sandbox(sandbox_config())
    cid = await runtime.create_container(sandbox, ContainerConfig(name="c", args=["sh", "-c", "touch /x; ls /x"]), odd)
    assert (runtime.containers_dir / cid / "rootfs.kind").read_text() == "copy"
    await runtime.start(cid)
    assert (await runtime.wait(cid, 30)).exit_code == 0
    assert not (odd / "x").exists()
    await runtime.remove(cid)
    assert not (runtime.containers_dir / cid).exists() and (odd / "bin/busybox").exists()


async def test_a_created_container_can_be_stopped_and_removed_unstarted(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    cid = await runtime.create_container(sandbox, ContainerConfig(name="c", args=["echo", "never"]), busybox_rootfs)
    assert (await runtime.status(cid)).state == ContainerState.CREATED
    status = await runtime.stop(cid, grace_period=5)
    assert status.state == ContainerState.EXITED and status.started_at is None
    log_path = next(i.log_path for i in await runtime.list() if i.id == cid)
    assert b"never" not in log_path.read_bytes()
    await runtime.remove(cid)
    await runtime.remove(cid)  # idempotent
    assert await runtime.list() == [] and await runtime.runc.list_ids() == []


async def test_exec_tty_size_and_resize(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    cid = await runtime.create_container(sandbox, ContainerConfig(name="c", args=["sleep", "1000"]), busybox_rootfs)
    await runtime.start(cid)
    # runc sizes the container's console from its own terminal only after the process has
    # started, so the first `stty size` waits for that (a user's shell reads it later too)
    script = ["sh", "-c", "sleep 0.5; stty size; sleep 1; stty size"]
    handle = await runtime.exec_process(cid, script, tty=True, tty_size=(40, 100))
    assert handle.pty_master is not None
    try:
        first = await asyncio.to_thread(os.read, handle.pty_master, 1024)
        resize_tty(handle.pty_master, 50, 120)
        rest = b""
        while b"50 120" not in rest:
            try:
                chunk = await asyncio.wait_for(asyncio.to_thread(os.read, handle.pty_master, 1024), 60)
            except OSError:
                break
            if not chunk:
                break
            rest += chunk
    finally:
        await asyncio.wait_for(handle.process.wait(), 60)
        os.close(handle.pty_master)
    assert first.strip() == b"40 100" and rest.strip() == b"50 120"
    assert handle.process.returncode == 0

"""The runtime facade the node agent drives: pod sandboxes and their containers on runc.

A typed, CRI-shaped API (create/start/stop/status/exec/remove, list for reconciling after a
restart). All state lives on disk under `state_dir` (sandbox records, container bundles, shim
files, runc's --root) and in the kernel (namespaces, cgroups, mounts), never only in this object:
a new `Runtime` on the same `state_dir` sees and controls what an earlier agent made.

    <state_dir>/sandboxes/<pod uid>/    sandbox.json, hosts, hostname, resolv.conf, shm, ipc, uts
    <state_dir>/containers/<id>/        config.json, rootfs (overlay), upper, work, meta.json,
                                        ready.json, exit.json, container.log (default log path)
    <state_dir>/runc/                   runc --root
    <state_dir>/cni/                    host-local leases, saved CNI results
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from skiff.node.runtime import rootfs
from skiff.node.runtime.cgroups import Cgroups, Usage
from skiff.node.runtime.cni import CNI, NetworkConfig
from skiff.node.runtime.oci_spec import build_spec
from skiff.node.runtime.runc import ExecHandle, Runc
from skiff.node.runtime.sandbox import Sandboxes
from skiff.node.runtime.types import (
    ContainerConfig,
    ContainerId,
    ContainerInfo,
    ContainerState,
    ContainerStatus,
    ExecResult,
    Sandbox,
    SandboxConfig,
)


class ContainerNotFound(Exception):
    pass


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value


def _proc_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, None if it is gone or a zombie; with the
    pid it names one process for good (pids are reused), as runc's own state check does."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(pid_file: Path) -> bool:
    """Is the process in `pid_file` running? A zombie is not: the shim's reaper may be slow to reap."""
    try:
        pid = int(pid_file.read_text().strip())
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def _read_pty(master: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


async def _talk_to_pty(master: int, stdin: bytes | None, proc: asyncio.subprocess.Process) -> bytes:
    if stdin:
        await asyncio.to_thread(os.write, master, stdin)
    reader = asyncio.create_task(asyncio.to_thread(_read_pty, master), name="exec-pty-reader")
    await proc.wait()
    return await reader


class Runtime:
    def __init__(
        self, *, state_dir: Path, network: NetworkConfig | None = None, cgroup_parent: str = "skiff",
        runc_binary: str = "runc", netns_prefix: str = "skiff-", pod_pids_limit: int | None = None,
    ) -> None:  # fmt: skip
        self.state_dir = state_dir
        self.pod_pids_limit = pod_pids_limit  # pids.max of each pod's cgroup; None: no limit
        self.network = network or NetworkConfig(state_dir=state_dir / "cni")
        self.cni = CNI(self.network)
        self.cgroups = Cgroups(cgroup_parent)
        self.runc = Runc(state_dir / "runc", binary=runc_binary)
        self.sandboxes = Sandboxes(state_dir, self.cni, netns_prefix=netns_prefix)
        self.containers_dir = state_dir / "containers"
        # what is immutable or only this object writes, kept in memory: id -> meta.json, and id -> ready.json
        # (with the init's start time) once the shim wrote it; a listing re-reads only the exit and /proc
        self._metas: dict[str, dict[str, Any]] = {}
        self._ready: dict[str, dict[str, Any]] = {}
        self._scanned = False

    # sandboxes

    async def create_sandbox(self, config: SandboxConfig) -> Sandbox:
        return await self.sandboxes.create(config)

    def sandbox(self, pod_uid: str) -> Sandbox:
        return self.sandboxes.get(pod_uid)

    def list_sandboxes(self) -> list[str]:
        return self.sandboxes.list_uids()

    async def remove_sandbox(self, pod_uid: str) -> None:
        """Kill and remove the pod's containers, free its IP, drop namespaces, files and cgroups."""
        ids = [info.id for info in await self.list() if info.pod_uid == pod_uid]
        results = await asyncio.gather(*(self.remove(cid) for cid in ids), return_exceptions=True)
        if errors := [r for r in results if isinstance(r, BaseException)]:
            raise errors[0]
        await self.sandboxes.remove(pod_uid)
        await asyncio.to_thread(self.cgroups.remove, self.cgroups.pod_path(pod_uid))

    # containers

    def _dir(self, container_id: str) -> Path:
        d = self.containers_dir / container_id
        if not (d / "meta.json").exists():
            raise ContainerNotFound(container_id)
        return d

    def _meta(self, container_id: str) -> dict[str, Any]:
        meta = self._metas.get(container_id)
        if meta is not None:
            return meta
        meta = _read_json(self._dir(container_id) / "meta.json")
        if meta is None:
            raise ContainerNotFound(container_id)
        self._metas[container_id] = meta
        return meta

    def _write_meta(self, d: Path, meta: dict[str, Any]) -> None:
        tmp = d / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(d / "meta.json")
        self._metas[d.name] = meta

    def _ready_info(self, container_id: str, d: Path) -> dict[str, Any] | None:
        """The shim's ready.json (None until `runc create` is done), with `start`, the container init's start
        time, read the first time; kept, as neither changes."""
        ready = self._ready.get(container_id)
        if ready is None:
            ready = _read_json(d / "ready.json")
            if ready is not None and ready.get("pid"):
                ready["start"] = _proc_start(int(ready["pid"]))
                self._ready[container_id] = ready
        return ready

    async def create_container(self, sandbox: Sandbox, config: ContainerConfig, image_rootfs: Path) -> ContainerId:
        """Prepare the rootfs and bundle and `runc create` the container (not started yet)."""
        cid = ContainerId(uuid.uuid4().hex)
        d = self.containers_dir / cid
        d.mkdir(parents=True)
        log_path = config.log_path or d / "container.log"
        cgroups_path = self.cgroups.container_path(sandbox.uid, cid)
        meta = {"id": cid, "pod_uid": sandbox.uid, "name": config.name, "attempt": config.attempt,
                "log_path": str(log_path), "cgroups_path": cgroups_path, "created_at": time.time(),
                "started_at": None}  # fmt: skip
        self._write_meta(d, meta)
        try:
            root = await rootfs.prepare(d, image_rootfs)
            spec = build_spec(config, sandbox=sandbox, rootfs=root, cgroups_path=cgroups_path)
            (d / "config.json").write_text(json.dumps(spec, indent=1))
            log_path.parent.mkdir(parents=True, exist_ok=True)
            await self.runc.create(
                cid, bundle=d, state_dir=d, log_path=log_path, tty=config.tty,
                stdin=("--stdin-once" if config.stdin_once else "--stdin") if config.stdin else "",
                cgroup_dirs=[self.cgroups.controller_dir(cgroups_path, "memory")],
            )  # fmt: skip
            if self.pod_pids_limit is not None:  # before its process runs: the pod's cgroup exists now
                await asyncio.to_thread(self.cgroups.limit_pids, self.cgroups.pod_path(sandbox.uid),
                                        self.pod_pids_limit)  # fmt: skip
        except BaseException:
            await asyncio.shield(self._destroy(cid, d, cgroups_path))
            raise
        return cid

    async def start(self, container_id: str) -> None:
        d = self._dir(container_id)
        await self.runc.start(container_id)
        meta = dict(self._meta(container_id))
        meta["started_at"] = time.time()
        self._write_meta(d, meta)

    async def status(self, container_id: str) -> ContainerStatus:
        """The container's state from its files and /proc: exit.json once the shim recorded the exit; else
        running while its init process lives and it was started. Only a container created and not (yet)
        started asks runc (`runc state`), so that a listing of N containers runs no process."""
        d = self._dir(container_id)
        meta = self._meta(container_id)
        common: dict[str, Any] = {"id": ContainerId(container_id), "created_at": meta["created_at"],
                                  "started_at": meta.get("started_at")}  # fmt: skip
        exit_info = _read_json(d / "exit.json")
        if exit_info is not None:
            return self._exited(common, exit_info)
        ready = self._ready_info(container_id, d)
        if ready is None:
            return ContainerStatus(state=ContainerState.UNKNOWN, **common)
        pid = int(ready["pid"]) if ready.get("pid") else None
        if pid is not None and ready.get("start") is not None and _proc_start(pid) == ready["start"]:
            if meta.get("started_at"):
                return ContainerStatus(state=ContainerState.RUNNING, pid=pid, **common)
            state = await self.runc.state(container_id)  # created, or started by another Runtime on this dir
            if state is not None and state.get("status") == "created":
                return ContainerStatus(state=ContainerState.CREATED, pid=pid, **common)
            if state is not None and state.get("status") in ("running", "paused"):
                return ContainerStatus(state=ContainerState.RUNNING, pid=pid, **common)
        if _alive(d / "shim.pid"):  # the init exited: the shim is draining the logs before it writes exit.json
            return ContainerStatus(state=ContainerState.RUNNING, pid=pid, **common)
        exit_info = _read_json(d / "exit.json")  # the shim may have finished in between
        if exit_info is not None:
            return self._exited(common, exit_info)
        return ContainerStatus(state=ContainerState.EXITED, exit_code=255, reason="Unknown",
                               message="the container's shim ended without recording an exit", **common)  # fmt: skip

    @staticmethod
    def _exited(common: dict[str, Any], exit_info: dict[str, Any]) -> ContainerStatus:
        code = int(exit_info["exit_code"])
        reason = "OOMKilled" if exit_info.get("oom_killed") else ("Completed" if code == 0 else "Error")
        return ContainerStatus(state=ContainerState.EXITED, exit_code=code, reason=reason,
                               finished_at=exit_info.get("finished_at"), **common)  # fmt: skip

    async def wait(self, container_id: str, within: float | None = None) -> ContainerStatus:
        """Wait until the container has exited (its exit recorded by the shim) and return its status."""
        deadline = None if within is None else time.monotonic() + within
        while True:
            status = await self.status(container_id)
            if status.state in (ContainerState.EXITED, ContainerState.UNKNOWN):
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"container {container_id} still {status.state} after {within}s")
            await asyncio.sleep(0.05)

    async def stop(self, container_id: str, grace_period: float = 30.0) -> ContainerStatus:
        """SIGTERM, then SIGKILL to every process of the container after `grace_period` seconds."""
        status = await self.status(container_id)
        if status.state == ContainerState.EXITED:
            return status
        if status.state == ContainerState.RUNNING and grace_period > 0:
            await self.runc.kill(container_id, "TERM")
            try:
                return await self.wait(container_id, grace_period)
            except TimeoutError:
                pass
        await self.runc.kill(container_id, "KILL", all_processes=True)
        return await self.wait(container_id, 30.0)

    async def exec_process(
        self, container_id: str, argv: list[str], *, tty: bool = False, tty_size: tuple[int, int] | None = None
    ) -> ExecHandle:
        """A process in the running container, for streaming exec (pipes, or a pty master with `tty`).

        Resize its terminal with `skiff.node.runtime.runc.resize_tty(handle.pty_master, rows, cols)`.
        """
        self._dir(container_id)
        return await self.runc.exec_process(container_id, argv, tty=tty, tty_size=tty_size)

    async def exec(
        self, container_id: str, argv: list[str], *, stdin: bytes | None = None, tty: bool = False,
        time_limit: float | None = None,
    ) -> ExecResult:  # fmt: skip
        """Run `argv` in the container to completion; its output and exit code (a tty's output is stdout)."""
        handle = await self.exec_process(container_id, argv, tty=tty)
        proc = handle.process
        try:
            if handle.pty_master is None:
                out, err = await asyncio.wait_for(proc.communicate(stdin or b""), time_limit)
            else:
                out, err = await asyncio.wait_for(_talk_to_pty(handle.pty_master, stdin, proc), time_limit), b""
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        finally:
            if handle.pty_master is not None:
                os.close(handle.pty_master)
        return ExecResult(exit_code=proc.returncode if proc.returncode is not None else -1, stdout=out, stderr=err)

    def reopen_log(self, container_id: str) -> None:
        """After the agent renamed the log file (rotation), make the shim write to a new one at its path."""
        d = self._dir(container_id)
        try:
            os.kill(int((d / "shim.pid").read_text().strip()), signal.SIGUSR1)
        except (OSError, ValueError) as exc:
            raise ContainerNotFound(f"{container_id}: no running shim") from exc

    async def remove(self, container_id: str) -> None:
        """Kill if needed, delete from runc, unmount and delete its files and cgroup (idempotent)."""
        d = self.containers_dir / container_id
        meta = self._metas.get(container_id) or _read_json(d / "meta.json") or {}
        await self._destroy(container_id, d, meta.get("cgroups_path"))

    async def _destroy(self, container_id: str, d: Path, cgroups_path: str | None) -> None:
        if await self.runc.state(container_id) is not None:
            await self.runc.kill(container_id, "KILL", all_processes=True)
            await self.runc.delete(container_id, force=True)
        for _ in range(250):  # let the shim record the exit before the files go (at most 5 s)
            if not _alive(d / "shim.pid"):
                break
            await asyncio.sleep(0.02)
        await rootfs.remove(d)
        self._metas.pop(container_id, None)
        self._ready.pop(container_id, None)
        if cgroups_path:
            await asyncio.to_thread(self.cgroups.remove, cgroups_path)

    async def list(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        """Every container on disk (or only the pod's) with its state, for the agent to reconcile with. One
        directory read; meta.json is read once per container (kept in memory), the state as `status` says."""
        return [info for info, _ in await self.statuses(pod_uid)]

    def _scan(self) -> None:
        """Bring the in-memory index up to date with the containers directory (one listdir, and meta.json of
        the containers not seen before)."""
        names = set(os.listdir(self.containers_dir)) if self.containers_dir.is_dir() else set()
        for gone in [cid for cid in self._metas if cid not in names]:
            self._metas.pop(gone, None)
            self._ready.pop(gone, None)
        for name in names - self._metas.keys():
            meta = _read_json(self.containers_dir / name / "meta.json")
            if meta is not None:
                self._metas[name] = meta
        self._scanned = True

    async def statuses(self, pod_uid: str | None = None) -> builtins.list[tuple[ContainerInfo, ContainerStatus]]:
        """`list` with each container's full status. A whole listing re-reads the directory; a pod's is
        answered from the index (complete after the first listing: every container made since is in it)."""
        if pod_uid is None or not self._scanned:
            self._scan()
        out = []
        for name in sorted(self._metas):
            meta = self._metas[name]
            if pod_uid is not None and meta["pod_uid"] != pod_uid:
                continue
            try:
                status = await self.status(name)
            except ContainerNotFound:
                continue
            out.append((ContainerInfo(id=ContainerId(name), pod_uid=meta["pod_uid"], name=meta["name"],
                                      attempt=meta["attempt"], log_path=Path(meta["log_path"]),
                                      state=status.state), status))  # fmt: skip
        return out

    # stats

    async def container_stats(self, container_id: str) -> Usage:
        return await asyncio.to_thread(self.cgroups.usage, self._meta(container_id)["cgroups_path"])

    async def pod_stats(self, pod_uid: str) -> Usage:
        return await asyncio.to_thread(self.cgroups.usage, self.cgroups.pod_path(pod_uid))

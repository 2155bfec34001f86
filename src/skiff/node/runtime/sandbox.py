"""Pod sandboxes: a pod's namespaces, its network (CNI) and its /etc files, with no pause process.

Per pod: a network namespace at /run/netns/<prefix><pod uid> (where `ip netns` finds it), and IPC
and UTS namespaces, all three made by one `unshare --net=FILE --ipc=FILE --uts=FILE`, which keeps
them alive by bind-mounting them on those files; the shell it runs sets the pod's hostname in the
UTS namespace, brings the loopback up in the network namespace (what the CNI `loopback` plugin
would do, without a plugin process) and mounts the pod's /dev/shm, a tmpfs in the sandbox directory
bound into every container, so the pod's containers share it as in Kubernetes. (Until `ip netns`
has made /run/netns its shared mount point, the first sandbox is made with `ip netns add`.) One
process tree instead of four processes started one after another by the agent.
Containers join the three namespaces by path (see `oci_spec.py`).

Everything is recorded in `<state>/sandboxes/<uid>/sandbox.json` before it is made, so teardown
finds it after an agent restart; teardown is idempotent and also undoes a half-made sandbox.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from skiff.node.runtime.cni import CNI
from skiff.node.runtime.proc import run
from skiff.node.runtime.rootfs import is_mountpoint
from skiff.node.runtime.types import Sandbox, SandboxConfig

SHM_SIZE = 64 * 1024 * 1024


class SandboxNotFound(Exception):
    pass


def hosts_file(config: SandboxConfig, ip: str) -> str:
    """The pod's /etc/hosts, laid out as the kubelet writes it."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    name = config.pod_hostname
    if config.subdomain:
        fqdn = f"{name}.{config.subdomain}.{config.namespace}.svc.{config.cluster_domain}"
        lines.append(f"{ip}\t{fqdn}\t{name}")
    else:
        lines.append(f"{ip}\t{name}")
    if config.host_aliases:
        lines.append("\n# Entries added by HostAliases.")
        lines += [f"{alias_ip}\t{chr(9).join(names)}" for alias_ip, names in config.host_aliases]
    return "\n".join(lines) + "\n"


class Sandboxes:
    """Creates, finds and tears down the pod sandboxes of one agent."""

    def __init__(self, state_dir: Path, cni: CNI, *, netns_prefix: str = "skiff-") -> None:
        self.dir = state_dir / "sandboxes"
        self.cni = cni
        self.netns_prefix = netns_prefix
        self._netns_mounted = False  # /run/netns is a mount point (as `ip netns add` leaves it)

    def _paths(self, config: SandboxConfig, ip: str = "") -> Sandbox:
        d = self.dir / config.uid
        return Sandbox(
            uid=config.uid, name=config.name, namespace=config.namespace, ip=ip,
            netns=Path("/run/netns") / f"{self.netns_prefix}{config.uid}",
            ipc_ns=d / "ipc", uts_ns=d / "uts", directory=d, shm=d / "shm",
            etc_hosts=d / "hosts", etc_hostname=d / "hostname", resolv_conf=d / "resolv.conf",
        )  # fmt: skip

    def _save(self, sandbox: Sandbox, config: SandboxConfig, status: str) -> None:
        record = {"status": status, "sandbox": {k: str(v) for k, v in asdict(sandbox).items()},
                  "config": asdict(config)}  # fmt: skip
        tmp = sandbox.directory / "sandbox.json.tmp"
        tmp.write_text(json.dumps(record, default=str))
        tmp.replace(sandbox.directory / "sandbox.json")

    async def create(self, config: SandboxConfig) -> Sandbox:
        sandbox = self._paths(config)
        record = sandbox.directory / "sandbox.json"
        if record.exists():
            if json.loads(record.read_text()).get("status") == "ready":
                raise FileExistsError(f"sandbox for pod {config.uid} exists")
            await self.remove(config.uid)  # half made by an agent that died meanwhile: start over
        sandbox.directory.mkdir(parents=True)
        self._save(sandbox, config, "creating")
        try:
            await self._namespaces(sandbox, config.pod_hostname)
            ports = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
                      "hostIP": p.host_ip} for p in config.port_mappings]  # fmt: skip
            attachment = await self.cni.add(config.uid, sandbox.netns, port_mappings=ports, loopback=False)
            sandbox = self._paths(config, attachment.ip)
            sandbox.etc_hosts.write_text(hosts_file(config, attachment.ip))
            sandbox.etc_hostname.write_text(config.pod_hostname + "\n")
            sandbox.resolv_conf.write_text(config.resolv_conf)
            self._save(sandbox, config, "ready")
        except BaseException:
            await asyncio.shield(self.remove(config.uid))
            raise
        return sandbox

    async def _namespaces(self, sandbox: Sandbox, hostname: str) -> None:
        """The pod's network, IPC and UTS namespaces (hostname set, loopback up) and its /dev/shm."""
        netns = [f"--net={sandbox.netns}"]
        if not self._netns_mounted:  # once it is, it stays (mountinfo grows with the pods: not read each time)
            self._netns_mounted = await asyncio.to_thread(is_mountpoint, sandbox.netns.parent)
        if not self._netns_mounted:
            await run("ip", "netns", "add", sandbox.netns.name)  # also makes /run/netns a shared mount point
            netns = ["nsenter", f"--net={sandbox.netns}", "--"]  # unshare then joins it (the shell, that is)
        else:
            sandbox.netns.touch()
        sandbox.ipc_ns.touch()
        sandbox.uts_ns.touch()
        sandbox.shm.mkdir()
        script = ('printf %s "$1" > /proc/sys/kernel/hostname && ip link set lo up && '
                  f'mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size={SHM_SIZE} shm "$2"')  # fmt: skip
        if netns[0] == "nsenter":
            argv = ["unshare", f"--ipc={sandbox.ipc_ns}", f"--uts={sandbox.uts_ns}", *netns]
        else:
            argv = ["unshare", *netns, f"--ipc={sandbox.ipc_ns}", f"--uts={sandbox.uts_ns}"]
        await run(*argv, "sh", "-c", script, "sh", hostname, str(sandbox.shm))

    def get(self, uid: str) -> Sandbox:
        try:
            record = json.loads((self.dir / uid / "sandbox.json").read_text())
        except (OSError, ValueError) as exc:
            raise SandboxNotFound(uid) from exc
        s = record["sandbox"]
        paths = {k: Path(s[k]) for k in ("netns", "ipc_ns", "uts_ns", "directory", "shm", "etc_hosts",
                                          "etc_hostname", "resolv_conf")}  # fmt: skip
        return Sandbox(uid=s["uid"], name=s["name"], namespace=s["namespace"], ip=s["ip"], **paths)

    def list_uids(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir()) if self.dir.is_dir() else []

    async def remove(self, uid: str) -> None:
        """Free the IP, drop the namespaces and files; safe to repeat and after a restart."""
        d = self.dir / uid
        netns = Path("/run/netns") / f"{self.netns_prefix}{uid}"
        await self.cni.delete(uid, netns)
        for mounted in (d / "shm", d / "ipc", d / "uts"):
            if await asyncio.to_thread(is_mountpoint, mounted):
                await run("umount", str(mounted))
        if netns.exists():
            await run("ip", "netns", "delete", netns.name)
        await asyncio.to_thread(shutil.rmtree, d, True)

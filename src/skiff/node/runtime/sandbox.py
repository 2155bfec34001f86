"""Pod sandboxes: a pod's namespaces, its network (CNI) and its /etc files, with no pause process.

Per pod: a network namespace made by `ip netns add` (/run/netns/<prefix><pod uid>), and IPC and
UTS namespaces made by `unshare --ipc=FILE --uts=FILE`, which keeps them alive by bind-mounting
them on files in the sandbox directory (the pod's hostname is set inside the UTS namespace there).
Containers join all three by path (see `oci_spec.py`). /dev/shm is a tmpfs mounted in the sandbox
directory and bound into every container, so the pod's containers share it as in Kubernetes.

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
            await run("ip", "netns", "add", sandbox.netns.name)
            sandbox.ipc_ns.touch()
            sandbox.uts_ns.touch()
            await run("unshare", f"--ipc={sandbox.ipc_ns}", f"--uts={sandbox.uts_ns}", "sh", "-c",
                      'printf %s "$1" > /proc/sys/kernel/hostname', "sh", config.pod_hostname)  # fmt: skip
            sandbox.shm.mkdir()
            await run("mount", "-t", "tmpfs", "-o", f"nosuid,nodev,noexec,mode=1777,size={SHM_SIZE}", "shm",
                      str(sandbox.shm))  # fmt: skip
            ports = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
                      "hostIP": p.host_ip} for p in config.port_mappings]  # fmt: skip
            attachment = await self.cni.add(config.uid, sandbox.netns, port_mappings=ports)
            sandbox = self._paths(config, attachment.ip)
            sandbox.etc_hosts.write_text(hosts_file(config, attachment.ip))
            sandbox.etc_hostname.write_text(config.pod_hostname + "\n")
            sandbox.resolv_conf.write_text(config.resolv_conf)
            self._save(sandbox, config, "ready")
        except BaseException:
            await asyncio.shield(self.remove(config.uid))
            raise
        return sandbox

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

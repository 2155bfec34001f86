"""Build runc's config.json (OCI runtime spec 1.0) for one container of a pod. Pure logic.

Namespaces: a pod has no pause process. Its network, IPC and UTS namespaces are created once per
pod and kept alive by bind mounts on files (as `ip netns` does); every container of the pod joins
them by path. Each container gets its own PID and mount namespaces (Kubernetes' default without
shareProcessNamespace). The pod's hostname is set in its UTS namespace when the sandbox is made,
so the spec carries none. /dev/shm is the pod's shared tmpfs, /etc/hosts, /etc/hostname and
/etc/resolv.conf are the sandbox's files. The seccomp filter is `seccomp.py`'s; a privileged
container runs without one, whatever its profile says (as containerd).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from skiff.node.runtime import seccomp
from skiff.node.runtime.types import ContainerConfig, Mount, Resources, Sandbox

# The container runtime default capability set Kubernetes pods get (containerd's and CRI-O's).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

# Every capability up to CAP_CHECKPOINT_RESTORE (Linux 5.9), in bit order.
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000
MIN_SHARES = 2
MAX_SHARES = 262_144


def normalize_capability(name: str) -> str:
    """`chown`, `CHOWN` and `CAP_CHOWN` all name CAP_CHOWN (Kubernetes writes them without CAP_)."""
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def capabilities_of_mask(mask: int) -> list[str]:
    """The names of the capability bits set in `mask` (as /proc/<pid>/status prints it, in hex)."""
    return [name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1]


@functools.cache
def current_capabilities() -> tuple[str, ...]:
    """The agent's own effective capabilities: what `privileged` and `add: [ALL]` give, as containerd's
    (cap.Current()); a host or a container that lacks some (e.g. CAP_SYS_RESOURCE) cannot grant them.
    Read once from /proc/self/status; every capability when it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            line = next((x for x in f if x.startswith("CapEff:")), "")
        return tuple(capabilities_of_mask(int(line.split()[1], 16)))
    except (OSError, ValueError, IndexError):
        return ALL_CAPABILITIES


def capabilities(config: ContainerConfig) -> list[str]:
    """The default set, minus drops, plus adds; `ALL` in either works as in Kubernetes."""
    if config.privileged:
        return list(current_capabilities())
    drops = {normalize_capability(c) for c in config.cap_drop}
    adds = {normalize_capability(c) for c in config.cap_add}
    caps = [] if "CAP_ALL" in drops else [c for c in DEFAULT_CAPABILITIES if c not in drops]
    extra = current_capabilities() if "CAP_ALL" in adds else sorted(adds - {"CAP_ALL"})
    caps += [c for c in extra if c not in caps]
    return caps


def cpu_shares(request_milli: int | None) -> int:
    """The kubelet's MilliCPUToShares: 1024 shares per CPU requested, at least 2."""
    if not request_milli:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, request_milli * 1024 // 1000))


def cpu_quota(limit_milli: int | None, period_us: int = CPU_PERIOD_US) -> int | None:
    """The kubelet's MilliCPUToQuota: the limit's share of the period, at least 1 ms."""
    if not limit_milli:
        return None
    return max(MIN_QUOTA_US, limit_milli * period_us // 1000)


def linux_resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    cpu: dict[str, Any] = {"shares": cpu_shares(resources.cpu_request_milli)}
    quota = cpu_quota(resources.cpu_limit_milli)
    if quota is not None:
        cpu |= {"quota": quota, "period": CPU_PERIOD_US}
    out["cpu"] = cpu
    if resources.memory_limit_bytes:
        # swap == limit: no swap on top of the limit, so a hog is OOM-killed rather than swapped
        out["memory"] = {"limit": resources.memory_limit_bytes, "swap": resources.memory_limit_bytes}
    if resources.pids_limit:
        out["pids"] = {"limit": resources.pids_limit}
    return out


def _mount(mount: Mount) -> dict[str, Any]:
    if mount.type == "tmpfs":
        options = ["nosuid", "nodev", "mode=1777"]
        if mount.size_bytes:
            options.append(f"size={mount.size_bytes}")
        if mount.readonly:
            options.append("ro")
        return {"destination": mount.destination, "type": "tmpfs", "source": "tmpfs", "options": options}
    options = ["rbind", "rprivate"] + (["ro"] if mount.readonly else ["rw"])
    return {"destination": mount.destination, "type": "bind", "source": mount.source, "options": options}


def _bind(source: Path, destination: str, *, readonly: bool = False) -> dict[str, Any]:
    return _mount(Mount(destination=destination, source=str(source), readonly=readonly))


def default_mounts(sandbox: Sandbox, *, privileged: bool) -> list[dict[str, Any]]:
    sys_mode = "rw" if privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_mode]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        _bind(sandbox.shm, "/dev/shm"),
        _bind(sandbox.etc_hosts, "/etc/hosts"),
        _bind(sandbox.etc_hostname, "/etc/hostname"),
        _bind(sandbox.resolv_conf, "/etc/resolv.conf"),
    ]  # fmt: skip


def process_env(env: dict[str, str]) -> list[str]:
    merged = {"PATH": DEFAULT_PATH} | env if "PATH" not in env else dict(env)
    return [f"{k}={v}" for k, v in merged.items()]


def build_spec(
    config: ContainerConfig, *, sandbox: Sandbox, rootfs: Path, cgroups_path: str
) -> dict[str, Any]:
    """The config.json for `config` in `sandbox`, its root at `rootfs`, its cgroup at `cgroups_path`."""
    if not config.args:
        raise ValueError(f"container {config.name!r} has nothing to run")
    caps = capabilities(config)
    process: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": config.uid, "gid": config.gid, "additionalGids": list(config.additional_gids)},
        "args": list(config.args),
        "env": process_env(config.env),
        "cwd": config.cwd or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": config.no_new_privs and not config.privileged,
    }
    if config.oom_score_adj is not None:
        process["oomScoreAdj"] = config.oom_score_adj
    resources = linux_resources(config.resources)
    if config.privileged:
        resources["devices"] = [{"allow": True, "access": "rwm"}]
    linux: dict[str, Any] = {
        "namespaces": [
            {"type": "pid"},
            {"type": "mount"},
            {"type": "network", "path": str(sandbox.netns)},
            {"type": "ipc", "path": str(sandbox.ipc_ns)},
            {"type": "uts", "path": str(sandbox.uts_ns)},
        ],
        "cgroupsPath": cgroups_path,
        "resources": resources,
    }
    if not config.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if config.seccomp.type == "RuntimeDefault":
            linux["seccomp"] = seccomp.runtime_default(caps)
        elif config.seccomp.type == "Localhost" and config.seccomp.localhost is not None:
            linux["seccomp"] = config.seccomp.localhost
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(rootfs), "readonly": config.readonly_rootfs},
        "mounts": default_mounts(sandbox, privileged=config.privileged) + [_mount(m) for m in config.mounts],
        "linux": linux,
    }

"""The `linux.seccomp` section of a container's config.json. Pure logic.

Kubernetes names three kinds of profile (CRI's SecurityProfile): `Unconfined` (no filter),
`Localhost` (a file on the node, in the Docker/Kubernetes JSON form, turned here into the OCI form)
and `RuntimeDefault`, the runtime's own. Ours is a deny-list: every system call is allowed except
those that reach past the container (mounts and namespaces, kernel keyrings, modules, kexec, reboot,
the clock, tracing other processes, BPF, perf, io_uring, handles to host files...), which fail with
EPERM. As containerd's and moby's defaults do, a group of calls is allowed again when the container
holds the capability that guards it (mount and unshare with CAP_SYS_ADMIN, ptrace with
CAP_SYS_PTRACE...), so adding a capability means what the user asked for; `clone` and `clone3`
are filtered too, since they create namespaces as `unshare` does.
"""

from __future__ import annotations

import platform
from collections.abc import Collection, Mapping
from typing import Any

EPERM = 1
ENOSYS = 38

# Namespace flags of clone(2): a new mount, cgroup, UTS, IPC, user, PID, network or time namespace.
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                         0x00000080)  # fmt: skip

# (system calls, capabilities any one of which allows them again); an empty tuple: denied to everyone.
DENIED: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("mount", "umount", "umount2", "pivot_root", "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick",
      "move_mount", "open_tree", "mount_setattr", "sethostname", "setdomainname", "quotactl", "quotactl_fd",
      "lookup_dcookie", "fanotify_init", "name_to_handle_at", "nfsservctl"), ("CAP_SYS_ADMIN",)),
    (("bpf",), ("CAP_SYS_ADMIN", "CAP_BPF")),
    (("perf_event_open",), ("CAP_SYS_ADMIN", "CAP_PERFMON")),
    (("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
      "userfaultfd"), ("CAP_SYS_PTRACE",)),
    (("init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"),
     ("CAP_SYS_MODULE",)),
    (("reboot", "kexec_load", "kexec_file_load"), ("CAP_SYS_BOOT",)),
    (("settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64",
      "adjtimex"), ("CAP_SYS_TIME",)),
    (("syslog",), ("CAP_SYSLOG",)),
    (("acct",), ("CAP_SYS_PACCT",)),
    (("iopl", "ioperm"), ("CAP_SYS_RAWIO",)),
    (("vhangup",), ("CAP_SYS_TTY_CONFIG",)),
    (("open_by_handle_at",), ("CAP_DAC_READ_SEARCH",)),
    (("mbind", "set_mempolicy", "get_mempolicy", "move_pages", "migrate_pages"), ("CAP_SYS_NICE",)),
    (("keyctl", "add_key", "request_key", "swapon", "swapoff", "uselib", "ustat", "sysfs", "_sysctl", "vm86",
      "vm86old", "io_uring_setup", "io_uring_enter", "io_uring_register"), ()),
)  # fmt: skip

# The native architecture and the ones its kernel also runs (whose system calls must be filtered too).
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}


def _errno(names: list[str], errno: int = EPERM, args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}
    if args:
        rule["args"] = args
    return rule


def runtime_default(capabilities: Collection[str], machine: str | None = None) -> dict[str, Any]:
    """The RuntimeDefault profile for a container holding `capabilities` (CAP_ names)."""
    held = set(capabilities)
    rules = [_errno(sorted(names)) for names, allowed_by in DENIED if not held.intersection(allowed_by)]
    if "CAP_SYS_ADMIN" not in held:
        # clone's flags are its first argument (second on s390): one rule per namespace flag, any one denies;
        # clone3 passes them in memory seccomp cannot read, so it is "not implemented" and libc falls back to clone
        index = 1 if (machine or platform.machine()) == "s390x" else 0
        rules += [_errno(["clone"], args=[{"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}])
                  for bit in CLONE_NAMESPACE_FLAGS]  # fmt: skip
        rules.append(_errno(["clone3"], ENOSYS))
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES.get(machine or platform.machine(), []),
        "syscalls": rules,
    }


class ProfileError(ValueError):
    """A Localhost profile that is not a seccomp profile."""


def from_profile_file(profile: Any) -> dict[str, Any]:
    """A Localhost profile (Docker's JSON form, as Kubernetes documents it, or the OCI form) as `linux.seccomp`.

    Docker's form differs in `archMap` (an architecture and its sub-architectures) and in a rule's single
    `name`; its `includes`/`excludes` conditions (capabilities, kernel versions) are not evaluated, as in
    containerd's loading of a localhost profile."""
    if not isinstance(profile, Mapping) or not isinstance(profile.get("defaultAction"), str):
        raise ProfileError("a seccomp profile is a JSON object with a defaultAction")
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = int(profile["defaultErrnoRet"])
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        arches += [entry.get("architecture", ""), *(entry.get("subArchitectures") or [])]
    if arches:
        out["architectures"] = [a for a in dict.fromkeys(arches) if a]
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    rules = []
    for i, rule in enumerate(profile.get("syscalls") or []):
        if not isinstance(rule, Mapping) or not isinstance(rule.get("action"), str):
            raise ProfileError(f"syscalls[{i}] has no action")
        names = list(rule.get("names") or []) + ([rule["name"]] if rule.get("name") else [])
        if not names:
            raise ProfileError(f"syscalls[{i}] names no system call")
        out_rule: dict[str, Any] = {"names": names, "action": rule["action"]}
        if "errnoRet" in rule:
            out_rule["errnoRet"] = int(rule["errnoRet"])
        if rule.get("args"):
            out_rule["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in rule["args"]]
        rules.append(out_rule)
    if rules:
        out["syscalls"] = rules
    return out

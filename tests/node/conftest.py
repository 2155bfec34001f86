"""Fixtures for the runc runtime tests: a busybox rootfs, a Runtime on a test-only bridge and CIDR.

These tests need root, runc, the CNI plugins and /bin/busybox (the CI machine has them). Every
test cleans up what it made even when it fails; the session removes the test bridge and the
cgroup parent.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from skiff.node.runtime.cni import NetworkConfig
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import Sandbox, SandboxConfig

BRIDGE = "skifftest0"
SUBNET = "10.199.0.0/24"
CGROUP_PARENT = "skifftest"
NETNS_PREFIX = "skifftest-"
BUSYBOX = Path("/bin/busybox")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not BUSYBOX.exists():
        return "needs /bin/busybox (busybox-static)"
    if not Path("/usr/lib/cni/bridge").exists() and not Path("/opt/cni/bin/bridge").exists():
        return "needs the CNI plugins"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if reason and "tests/node/" in str(item.fspath) and "unit" not in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image rootfs: /bin/busybox, a symlink per applet, and the usual empty directories."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "tmp").chmod(0o1777)
    return root


@pytest.fixture(scope="session")
def host_net_state() -> Iterator[None]:
    """At the end: drop the test bridge and the test cgroup parent.

    Not undone: net.ipv4.ip_forward, which the bridge plugin turns on for a gateway bridge; it is
    node-wide and other pod networks on the machine may need it.
    """
    yield
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    for controller in Path("/sys/fs/cgroup").iterdir():
        parent = controller / CGROUP_PARENT
        if parent.is_dir():
            for dirpath, _, _ in sorted(os.walk(parent), key=lambda item: -len(item[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


PORTMAP_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def _nat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-t", "nat", *args], capture_output=True, text=True)


@pytest.fixture
def portmap_cleanup() -> Iterator[None]:
    """portmap leaves its top-level chains behind after the last DEL: drop them once unused.

    They are unused when CNI-HOSTPORT-DNAT holds no per-pod jump (MASQ and SETMARK keep one fixed
    rule each). If some other pod network on this machine still maps host ports, they all stay.
    """
    yield
    dnat = _nat("-S", PORTMAP_CHAINS[0])
    if dnat.returncode == 0 and dnat.stdout.strip() != f"-N {PORTMAP_CHAINS[0]}":
        return
    for rule in _nat("-S").stdout.splitlines():
        if rule.startswith("-A ") and rule.split()[-2:] in ([["-j", c] for c in PORTMAP_CHAINS]):
            if rule.split()[1] not in PORTMAP_CHAINS:
                _nat("-D", *shlex.split(rule[3:]))
    for chain in PORTMAP_CHAINS:
        _nat("-F", chain)
        _nat("-X", chain)


@pytest.fixture
async def runtime(tmp_path: Path, host_net_state: None) -> AsyncIterator[Runtime]:
    """A Runtime on a fresh state dir; everything it made is removed afterwards, even on failure."""
    state = tmp_path / "state"
    rt = Runtime(
        state_dir=state, network=NetworkConfig(name="skifftest", bridge=BRIDGE, subnet=SUBNET, state_dir=state / "cni"),
        cgroup_parent=CGROUP_PARENT, netns_prefix=NETNS_PREFIX,
    )  # fmt: skip
    yield rt
    for info in await rt.list():
        await rt.remove(info.id)
    for uid in rt.list_sandboxes():
        await rt.remove_sandbox(uid)


def sandbox_config(name: str = "pod", **kwargs: object) -> SandboxConfig:
    return SandboxConfig(uid=str(uuid.uuid4()), name=name, namespace="default",
                         resolv_conf="nameserver 10.199.0.1\n", **kwargs)  # type: ignore[arg-type]  # fmt: skip


async def wait_for(predicate: object, within: float = 60.0) -> None:
    assert callable(predicate)
    for _ in range(int(within / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


__all__ = ["Sandbox", "sandbox_config", "wait_for"]

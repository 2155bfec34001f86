"""Pod sandboxes on real CNI plugins and runc: pod IPs, pod-to-pod traffic, localhost within a pod,
isolation between pods, IPs freed and reused, and nothing left behind after teardown."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from skiff.node.runtime import crilog
from skiff.node.runtime.cni import NetworkConfig
from skiff.node.runtime.proc import run
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import ContainerConfig, ContainerState, PortMapping, Sandbox
from tests.node.conftest import BRIDGE, SUBNET, sandbox_config

HOST_PORT = 31987
WGET_RETRY = "for i in $(seq 50); do wget -q -O- {url} && exit 0; sleep 0.2; done; exit 1"


async def start(runtime: Runtime, sandbox: Sandbox, rootfs: Path, name: str, script: str) -> str:
    cid = await runtime.create_container(sandbox, ContainerConfig(name=name, args=["sh", "-c", script]), rootfs)
    await runtime.start(cid)
    return cid


async def output(runtime: Runtime, cid: str) -> bytes:
    path = next(i.log_path for i in await runtime.list() if i.id == cid)
    return b"\n".join(e.text for e in crilog.parse(path.read_bytes()))


def serve(text: str, port: int = 8080, address: str = "") -> str:
    return f"mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && exec httpd -f -p {address}{port} -h /tmp/www"


async def test_containers_of_a_pod_talk_over_localhost(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    server = await start(runtime, sandbox, busybox_rootfs, "server", serve("hello-from-server", address="127.0.0.1:"))
    client = await start(runtime, sandbox, busybox_rootfs, "client",
                         WGET_RETRY.format(url="http://127.0.0.1:8080/index.html"))  # fmt: skip
    status = await runtime.wait(client, 30)
    logs = await output(runtime, client), await output(runtime, server), await runtime.status(server)
    assert status.exit_code == 0 and b"hello-from-server" in logs[0], logs


async def test_pods_get_ips_from_the_cidr_and_reach_each_other(runtime: Runtime, busybox_rootfs: Path) -> None:
    first = await runtime.create_sandbox(sandbox_config("first"))
    second = await runtime.create_sandbox(sandbox_config("second"))
    network = ipaddress.ip_network(SUBNET)
    assert ipaddress.ip_address(first.ip) in network and ipaddress.ip_address(second.ip) in network
    assert first.ip != second.ip and sorted(runtime.cni.allocated_ips()) == sorted([first.ip, second.ip])
    await start(runtime, first, busybox_rootfs, "server", serve("hello-from-first"))
    client = await start(runtime, second, busybox_rootfs, "client",
                         WGET_RETRY.format(url=f"http://{first.ip}:8080/index.html"))  # fmt: skip
    status = await runtime.wait(client, 30)
    assert status.exit_code == 0 and b"hello-from-first" in await output(runtime, client)
    # a second pod's container reaching the first pod's localhost-only server must fail
    await start(runtime, first, busybox_rootfs, "local", serve("private", port=9090, address="127.0.0.1:"))
    local = "for i in $(seq 50); do wget -q -O- http://127.0.0.1:9090/ && exit 0; sleep 0.2; done; exit 1"
    assert (await runtime.exec(client_of_first := await start(runtime, first, busybox_rootfs, "c2", "exec sleep 100"),
                               ["sh", "-c", local], time_limit=30)).stdout == b"private\n"  # fmt: skip
    probe = await start(runtime, second, busybox_rootfs, "probe", f"wget -O- http://{first.ip}:9090/")
    assert (await runtime.wait(probe, 30)).exit_code == 1 and b"refused" in await output(runtime, probe)
    assert (await runtime.status(client_of_first)).state == ContainerState.RUNNING

    await runtime.remove_sandbox(first.uid)
    assert first.ip not in runtime.cni.allocated_ips() and not first.netns.exists()


async def test_a_freed_ip_is_handed_out_again(runtime: Runtime, tmp_path: Path) -> None:
    one = NetworkConfig(name="skifftest-one", bridge=BRIDGE, subnet=SUBNET, range_start="10.199.0.250",
                        range_end="10.199.0.250", state_dir=runtime.network.state_dir)  # fmt: skip
    single = Runtime(state_dir=runtime.state_dir, network=one, cgroup_parent=runtime.cgroups.parent,
                     netns_prefix=runtime.sandboxes.netns_prefix)  # fmt: skip
    sandbox = await single.create_sandbox(sandbox_config())
    try:
        assert sandbox.ip == "10.199.0.250"
        await single.remove_sandbox(sandbox.uid)
        await single.remove_sandbox(sandbox.uid)  # idempotent
        sandbox = await single.create_sandbox(sandbox_config())
        assert sandbox.ip == "10.199.0.250"
    finally:
        await single.remove_sandbox(sandbox.uid)


async def test_a_pod_cannot_see_another_pods_processes_or_files(runtime: Runtime, busybox_rootfs: Path) -> None:
    first = await runtime.create_sandbox(sandbox_config("first"))
    second = await runtime.create_sandbox(sandbox_config("second"))
    secret = await start(runtime, first, busybox_rootfs, "secret", "echo s3cret > /tmp/secret; exec sleep 777")
    spy = await start(runtime, second, busybox_rootfs, "spy", "exec sleep 1000")
    assert (await runtime.exec(secret, ["cat", "/tmp/secret"], time_limit=20)).stdout == b"s3cret\n"
    ps = await runtime.exec(spy, ["ps", "-o", "pid,args"], time_limit=20)
    assert ps.exit_code == 0 and b"sleep 1000" in ps.stdout and b"sleep 777" not in ps.stdout
    look = await runtime.exec(spy, ["sh", "-c", "ls /tmp; cat /proc/*/cmdline | tr '\\0' ' '"], time_limit=20)
    assert b"secret" not in look.stdout and b"777" not in look.stdout
    assert (await runtime.exec(secret, ["hostname"], time_limit=20)).stdout == b"first\n"
    assert (await runtime.exec(spy, ["hostname"], time_limit=20)).stdout == b"second\n"


async def test_the_pod_files_and_shared_shm(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config("files"))
    a = await start(runtime, sandbox, busybox_rootfs, "a", "echo shared > /dev/shm/x; exec sleep 1000")
    b = await start(runtime, sandbox, busybox_rootfs, "b", "exec sleep 1000")
    result = await runtime.exec(b, ["sh", "-c", "cat /dev/shm/x /etc/hostname /etc/resolv.conf; grep files /etc/hosts"],
                                time_limit=20)  # fmt: skip
    assert result.stdout == f"shared\nfiles\nnameserver 10.199.0.1\n{sandbox.ip}\tfiles\n".encode()
    assert (await runtime.status(a)).state == ContainerState.RUNNING


async def test_teardown_leaves_no_netns_cgroup_mount_or_rule(runtime: Runtime, busybox_rootfs: Path) -> None:
    sandbox = await runtime.create_sandbox(sandbox_config())
    cid = await start(runtime, sandbox, busybox_rootfs, "c", "exec sleep 1000")
    cgroup_dirs = runtime.cgroups.directories(runtime.cgroups.pod_path(sandbox.uid))
    assert any(d.is_dir() for d in cgroup_dirs)
    await runtime.remove_sandbox(sandbox.uid)
    assert not sandbox.netns.exists() and not sandbox.directory.exists()
    assert not (runtime.containers_dir / cid).exists()
    assert not any(d.exists() for d in cgroup_dirs)
    with open("/proc/self/mountinfo") as f:  # noqa: ASYNC230 - procfs
        assert str(runtime.state_dir) not in f.read()
    assert await runtime.runc.list_ids() == [] and runtime.cni.allocated_ips() == []
    with os.scandir("/run/netns") as entries:
        assert sandbox.netns.name not in [e.name for e in entries]


def _host_address() -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if ipaddress.ip_address(address) not in ipaddress.ip_network(SUBNET):
            return address
    raise AssertionError("no global IPv4 address on this host")


async def test_host_port_reaches_the_pod(runtime: Runtime, busybox_rootfs: Path, portmap_cleanup: None) -> None:
    sandbox = await runtime.create_sandbox(
        sandbox_config(port_mappings=[PortMapping(host_port=HOST_PORT, container_port=8080)])
    )
    await start(runtime, sandbox, busybox_rootfs, "server", serve("hello-through-hostport"))
    address = await asyncio.to_thread(_host_address)
    body = b""
    for _ in range(300):  # the server starts listening a moment after its container starts: up to a minute
        try:
            reader, writer = await asyncio.open_connection(address, HOST_PORT)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
        body = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        if body:
            break
        await asyncio.sleep(0.2)
    assert b"hello-through-hostport" in body
    await runtime.remove_sandbox(sandbox.uid)
    _, rules, _ = await run("iptables", "-t", "nat", "-S")
    assert f"--dport {HOST_PORT}".encode() not in rules


async def test_a_half_made_sandbox_is_redone_and_a_ready_one_refused(runtime: Runtime) -> None:
    config = sandbox_config("again")
    first = await runtime.create_sandbox(config)
    with pytest.raises(FileExistsError):
        await runtime.create_sandbox(config)
    record = first.directory / "sandbox.json"
    record.write_text(record.read_text().replace('"status": "ready"', '"status": "creating"'))  # died midway
    second = await runtime.create_sandbox(config)
    assert second.netns.exists() and runtime.cni.allocated_ips() == [second.ip]

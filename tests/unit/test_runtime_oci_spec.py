"""The runc config.json built for a pod's container, and the CRI log format (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.node.runtime import crilog
from skiff.node.runtime.oci_spec import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    build_spec,
    capabilities,
    capabilities_of_mask,
    cpu_quota,
    cpu_shares,
    current_capabilities,
)
from skiff.node.runtime.types import ContainerConfig, Mount, Resources, Sandbox

SANDBOX = Sandbox(
    uid="u1", name="p", namespace="default", ip="10.42.0.2", netns=Path("/run/netns/skiff-u1"),
    ipc_ns=Path("/s/u1/ipc"), uts_ns=Path("/s/u1/uts"), directory=Path("/s/u1"), shm=Path("/s/u1/shm"),
    etc_hosts=Path("/s/u1/hosts"), etc_hostname=Path("/s/u1/hostname"), resolv_conf=Path("/s/u1/resolv.conf"),
)  # fmt: skip


def spec(**kwargs: object) -> dict:
    config = ContainerConfig(name="c", args=["sh"], **kwargs)  # type: ignore[arg-type]
    return build_spec(config, sandbox=SANDBOX, rootfs=Path("/c/rootfs"), cgroups_path="/skiff/podu1/cid")


def test_namespaces_join_the_pods_and_own_pid_and_mount() -> None:
    namespaces = {n["type"]: n.get("path") for n in spec()["linux"]["namespaces"]}
    assert namespaces == {"pid": None, "mount": None, "network": "/run/netns/skiff-u1", "ipc": "/s/u1/ipc",
                          "uts": "/s/u1/uts"}  # fmt: skip
    assert "hostname" not in spec()


def test_process_user_env_cwd_tty() -> None:
    s = spec(env={"A": "1"}, cwd="/work", uid=1000, gid=2000, additional_gids=[3], tty=True)
    process = s["process"]
    assert process["user"] == {"uid": 1000, "gid": 2000, "additionalGids": [3]}
    assert process["env"][0].startswith("PATH=/usr/local/sbin") and "A=1" in process["env"]
    assert (process["cwd"], process["terminal"], process["args"]) == ("/work", True, ["sh"])
    assert spec(env={"PATH": "/x"})["process"]["env"] == ["PATH=/x"]


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        ([], [], list(DEFAULT_CAPABILITIES)),
        ([], ["chown", "CAP_KILL"], [c for c in DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")]),
        (["NET_ADMIN"], [], [*DEFAULT_CAPABILITIES, "CAP_NET_ADMIN"]),
        (["NET_BIND_SERVICE"], ["ALL"], ["CAP_NET_BIND_SERVICE"]),
        (["ALL"], [], [*DEFAULT_CAPABILITIES, *(c for c in current_capabilities() if c not in DEFAULT_CAPABILITIES)]),
    ],
    ids=["default", "drop", "add", "drop-all-add-one", "add-all"],
)
def test_capabilities(add: list[str], drop: list[str], expected: list[str]) -> None:
    assert capabilities(ContainerConfig(name="c", args=["x"], cap_add=add, cap_drop=drop)) == expected
    caps = spec(cap_add=add, cap_drop=drop)["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == expected


def test_privileged() -> None:
    s = spec(privileged=True, no_new_privs=True, cap_drop=["ALL"])
    assert s["process"]["capabilities"]["bounding"] == list(current_capabilities())  # the agent's own
    assert s["process"]["noNewPrivileges"] is False
    assert "maskedPaths" not in s["linux"] and s["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sysfs = next(m for m in s["mounts"] if m["destination"] == "/sys")
    assert "rw" in sysfs["options"]


def test_capability_masks_name_bits_in_order() -> None:
    assert set(capabilities_of_mask(0xA80425FB)) == set(DEFAULT_CAPABILITIES)  # containerd's default set
    assert capabilities_of_mask((1 << 41) - 1) == list(ALL_CAPABILITIES)
    assert "CAP_SYS_RESOURCE" not in capabilities_of_mask(0x1FFFEFFFFFF)


def test_unprivileged_defaults() -> None:
    s = spec(no_new_privs=True)
    assert s["process"]["noNewPrivileges"] is True
    assert s["linux"]["maskedPaths"] == list(MASKED_PATHS) and "/proc/sys" in s["linux"]["readonlyPaths"]
    assert s["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert s["root"] == {"path": "/c/rootfs", "readonly": False}
    assert spec(readonly_rootfs=True)["root"]["readonly"] is True
    assert s["linux"]["cgroupsPath"] == "/skiff/podu1/cid"


@pytest.mark.parametrize(
    ("milli", "shares"), [(None, 2), (0, 2), (1, 2), (100, 102), (250, 256), (1000, 1024), (2500, 2560)],
)
def test_cpu_shares_like_the_kubelet(milli: int | None, shares: int) -> None:
    assert cpu_shares(milli) == shares


@pytest.mark.parametrize(("milli", "quota"), [(None, None), (5, 1000), (100, 10_000), (500, 50_000), (2000, 200_000)])
def test_cpu_quota_like_the_kubelet(milli: int | None, quota: int | None) -> None:
    assert cpu_quota(milli) == quota


def test_resources() -> None:
    r = spec(resources=Resources(cpu_request_milli=250, cpu_limit_milli=500, memory_limit_bytes=32 << 20,
                                 pids_limit=100))["linux"]["resources"]  # fmt: skip
    assert r["cpu"] == {"shares": 256, "quota": 50_000, "period": 100_000}
    assert r["memory"] == {"limit": 32 << 20, "swap": 32 << 20} and r["pids"] == {"limit": 100}
    assert spec()["linux"]["resources"]["cpu"] == {"shares": 2} and "memory" not in spec()["linux"]["resources"]


def test_mounts() -> None:
    s = spec(mounts=[Mount(destination="/data", source="/host/data", readonly=True),
                     Mount(destination="/cache", type="tmpfs", size_bytes=1024)])  # fmt: skip
    by_dest = {m["destination"]: m for m in s["mounts"]}
    assert by_dest["/data"] == {"destination": "/data", "type": "bind", "source": "/host/data",
                                "options": ["rbind", "rprivate", "ro"]}  # fmt: skip
    assert by_dest["/cache"]["type"] == "tmpfs" and "size=1024" in by_dest["/cache"]["options"]
    assert by_dest["/dev/shm"]["source"] == "/s/u1/shm" and by_dest["/etc/hosts"]["source"] == "/s/u1/hosts"
    assert by_dest["/etc/resolv.conf"]["source"] == "/s/u1/resolv.conf"
    assert {"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} <= set(by_dest)


def test_empty_args_are_refused() -> None:
    with pytest.raises(ValueError, match="nothing to run"):
        build_spec(ContainerConfig(name="c", args=[]), sandbox=SANDBOX, rootfs=Path("/r"), cgroups_path="/x")


def test_cri_log_lines_round_trip() -> None:
    ns = 1_700_000_000_123_456_789
    encoded, rest = crilog.format_lines("stdout", b"one\ntwo\npart", final=False, ns=ns)
    assert encoded == b"2023-11-14T22:13:20.123456789Z stdout F one\n2023-11-14T22:13:20.123456789Z stdout F two\n"
    assert rest == b"part"
    flushed, rest = crilog.format_lines("stderr", rest, final=True, ns=ns)
    assert (flushed, rest) == (b"2023-11-14T22:13:20.123456789Z stderr F part\n", b"")
    long, rest = crilog.format_lines("stdout", b"x" * (crilog.MAX_LINE + 10) + b"\n", final=False, ns=ns)
    entries = crilog.parse(long)
    assert rest == b"" and long.count(b" P ") == 1 and [e.text for e in entries] == [b"x" * (crilog.MAX_LINE + 10)]
    assert crilog.parse(encoded + flushed)[2].stream == "stderr"
    with pytest.raises(ValueError):
        crilog.parse_line(b"garbage")

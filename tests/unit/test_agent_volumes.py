"""Volumes on disk: the kubelet's layout, atomic ConfigMap/Secret/downward API files, mounts into containers."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import pytest

from skiff.node.agent.podspec import PodContext
from skiff.node.agent.volumes import VolumeError, container_mounts, setup_volumes, teardown, write_atomic


def pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"b": "2", "a": "1"}},
        "spec": {"nodeName": "n1", "volumes": volumes,
                 "containers": [{"name": "c", "volumeMounts": mounts or [],
                                 "resources": {"limits": {"memory": "32Mi"}}}]},
    }  # fmt: skip


CTX = PodContext(
    configmaps={"cm": {"data": {"a.conf": "A", "b.conf": "B"}}, "gone": None},
    secrets={"sec": {"data": {"token": base64.b64encode(b"t0k").decode()}}},
    node_name="n1",
)


def setup(p: dict[str, Any], root: Path) -> dict[str, Path]:
    return asyncio.run(setup_volumes(p, root, CTX, tmpfs=False))


def test_layout_and_contents(tmp_path: Path) -> None:
    host = tmp_path / "host" / "dir"
    p = pod([
        {"name": "scratch", "emptyDir": {}},
        {"name": "config", "configMap": {"name": "cm"}},
        {"name": "picked", "configMap": {"name": "cm", "items": [{"key": "b.conf", "path": "sub/b", "mode": 0o600}]}},
        {"name": "creds", "secret": {"secretName": "sec", "defaultMode": 0o400}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                   {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                                                   {"path": "mem", "resourceFieldRef": {"containerName": "c",
                                                    "resource": "limits.memory", "divisor": "1Mi"}}]}},
        {"name": "host", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
    ])  # fmt: skip
    root = tmp_path / "pods" / "u1"
    paths = setup(p, root)
    vols = root / "volumes"
    assert paths["scratch"] == vols / "kubernetes.io~empty-dir" / "scratch" and paths["scratch"].is_dir()
    config = vols / "kubernetes.io~configmap" / "config"
    assert (config / "a.conf").read_text() == "A" and (config / "b.conf").read_text() == "B"
    assert os.readlink(config / "a.conf") == "..data/a.conf" and (config / "..data").is_symlink()
    picked = vols / "kubernetes.io~configmap" / "picked"
    assert (picked / "sub" / "b").read_text() == "B" and not (picked / "a.conf").exists()
    assert (picked / "sub" / "b").stat().st_mode & 0o777 == 0o600
    token = vols / "kubernetes.io~secret" / "creds" / "token"
    assert token.read_bytes() == b"t0k" and token.stat().st_mode & 0o777 == 0o400
    info = vols / "kubernetes.io~downward-api" / "info"
    assert (info / "labels").read_text() == 'a="1"\nb="2"'
    assert (info / "name").read_text() == "p" and (info / "mem").read_text() == "32"
    assert paths["host"] == host and host.is_dir()
    asyncio.run(teardown(root))
    assert not root.exists()


def test_rewrites_are_atomic_swaps_and_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "v"
    assert write_atomic(target, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    assert not write_atomic(target, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    first = os.readlink(target / "..data")
    assert write_atomic(target, {"a": (b"new", 0o644)})
    assert os.readlink(target / "..data") != first
    assert (target / "a").read_text() == "new" and not (target / "b").exists()
    assert sorted(p.name for p in target.iterdir()) == sorted(["..data", os.readlink(target / "..data"), "a"])


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"name": "v", "configMap": {"name": "gone"}}, 'configmap "gone" not found'),
        ({"name": "v", "secret": {"secretName": "nope"}}, 'secret "nope" not found'),
        ({"name": "v", "configMap": {"name": "cm", "items": [{"key": "x", "path": "x"}]}},
         "configmap references non-existent config key: x"),
        ({"name": "v", "hostPath": {"path": "/nonexistent/skiff", "type": "Directory"}},
         "hostPath type check failed: /nonexistent/skiff is not a directory"),
        ({"name": "v", "persistentVolumeClaim": {"claimName": "c"}},
         'error processing PVC ns/c: persistentvolumeclaim "c" not found'),
    ],
    ids=["configmap", "secret", "key", "hostpath", "pvc"],
)  # fmt: skip
def test_failures_name_the_volume(tmp_path: Path, volume: dict[str, Any], message: str) -> None:
    with pytest.raises(VolumeError) as info:
        setup(pod([volume]), tmp_path / "pod")
    assert str(info.value) == message
    assert info.value.event_message() == f'MountVolume.SetUp failed for volume "v" : {message}'


def test_optional_missing_configmap_is_an_empty_volume(tmp_path: Path) -> None:
    paths = setup(pod([{"name": "v", "configMap": {"name": "gone", "optional": True}}]), tmp_path / "pod")
    assert [e.name for e in paths["v"].iterdir() if not e.name.startswith("..")] == []


def test_container_mounts(tmp_path: Path) -> None:
    p = pod(
        [{"name": "scratch", "emptyDir": {}}, {"name": "config", "configMap": {"name": "cm"}}],
        [{"name": "scratch", "mountPath": "/data", "subPath": "x"}, {"name": "config", "mountPath": "/etc/app"}],
    )
    paths = setup(p, tmp_path / "pod")
    mounts = container_mounts(p, p["spec"]["containers"][0], paths)
    assert [(m.destination, m.source, m.readonly) for m in mounts] == [
        ("/data", str(paths["scratch"] / "x"), False),
        ("/etc/app", str(paths["config"]), True),
    ]


def test_projected_merges_its_sources(tmp_path: Path) -> None:
    p = pod([{"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "cm", "items": [{"key": "a.conf", "path": "conf/a"}]}},
        {"secret": {"name": "sec"}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}])  # fmt: skip
    paths = setup(p, tmp_path / "pod")
    root = paths["all"]
    assert root == tmp_path / "pod" / "volumes" / "kubernetes.io~projected" / "all"
    assert (root / "conf" / "a").read_text() == "A" and (root / "token").read_bytes() == b"t0k"
    assert (root / "ns").read_text() == "ns" and (root / "token").stat().st_mode & 0o777 == 0o440


def test_claims_mount_their_bound_volume_and_wait_while_unbound(tmp_path: Path) -> None:
    data = tmp_path / "storage" / "ns_c_pvc-1"
    pv = {"metadata": {"name": "pvc-1"}, "spec": {"hostPath": {"path": str(data), "type": "DirectoryOrCreate"}}}
    bound = ({"status": {"phase": "Bound"}, "spec": {"volumeName": "pvc-1"}}, pv)
    volume = {"name": "v", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}}
    p = pod([volume], [{"name": "v", "mountPath": "/data"}])
    paths = asyncio.run(setup_volumes(p, tmp_path / "pod", PodContext(claims={"c": bound}), tmpfs=False))
    assert paths["v"] == data and data.is_dir() and data.stat().st_mode & 0o777 == 0o777
    [mount] = container_mounts(p, p["spec"]["containers"][0], paths)
    assert mount.source == str(data) and mount.readonly
    pending = PodContext(claims={"c": ({"status": {"phase": "Pending"}, "spec": {}}, None)})
    with pytest.raises(VolumeError, match="error processing PVC ns/c: PVC is not bound"):
        asyncio.run(setup_volumes(p, tmp_path / "pod", pending, tmpfs=False))


def test_projected_service_account_token(tmp_path: Path) -> None:
    volume = {"name": "api", "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "cm", "items": [{"key": "a.conf", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}  # fmt: skip
    ctx = PodContext(configmaps=CTX.configmaps, tokens={"api/0": "jwt-1"})
    paths = asyncio.run(setup_volumes(pod([volume]), tmp_path / "pod", ctx, tmpfs=False))
    files = {name: (paths["api"] / name).read_text() for name in ("token", "ca.crt", "namespace")}
    assert files == {"token": "jwt-1", "ca.crt": "A", "namespace": "ns"}
    refreshed = PodContext(configmaps=CTX.configmaps, tokens={"api/0": "jwt-2"})
    asyncio.run(setup_volumes(pod([volume]), tmp_path / "pod", refreshed, tmpfs=False))
    assert (paths["api"] / "token").read_text() == "jwt-2"
    with pytest.raises(VolumeError, match="failed to fetch token"):
        asyncio.run(setup_volumes(pod([volume]), tmp_path / "pod2", PodContext(configmaps=CTX.configmaps),
                                  tmpfs=False))  # fmt: skip

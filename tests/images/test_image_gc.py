"""Image GC on a real ImageStore: images pulled from a real registry onto a small tmpfs of their own,
thresholds chosen so that GC triggers; the unused image goes, the used one stays, and when what may
go is not enough the kubelet's FreeDiskSpaceFailed event says so."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.images.build import build_image
from skiff.images.reference import parse_reference
from skiff.images.registry import RegistryInfo
from skiff.images.store import ImageStore
from skiff.node.agent.imagegc import GCFailed, ImageGC, ImageGCPolicy, disk_usage


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, so that a few MB of images are a large share of their filesystem."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


async def push_image(tmp_path: Path, registry: RegistryInfo, name: str) -> str:
    """A FROM-scratch image with 2 MB of its own incompressible data."""
    ctx = tmp_path / f"ctx-{name}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY data /data\nCMD ["/data"]\n')
    (ctx / "data").write_bytes(os.urandom(2_000_000))
    await build_image(ctx, parse_reference(name, default_registry=registry.host), registry=registry.host)
    return f"{registry.host}/{name}:latest"


async def test_gc_removes_the_unused_image_and_keeps_the_used_one(
    tmp_path: Path, registry: RegistryInfo, small_fs: Path
) -> None:
    store = ImageStore(small_fs / "images", default_registry=registry.host)
    old = await store.pull(await push_image(tmp_path, registry, "old"))
    used = await store.pull(await push_image(tmp_path, registry, "used"))
    assert {i.digest for i in await store.list()} == {old.digest, used.digest}

    events: list[tuple[str, str, str]] = []

    async def event(type_: str, reason: str, message: str) -> None:
        events.append((type_, reason, message))

    async def in_use() -> set[str]:
        return {used.digest}

    clock = [1_000_000.0]
    capacity, available = disk_usage(store.root)
    usage = 100 - available * 100 // capacity
    assert usage > 40  # two images of ~4 MB (blob + unpacked files) on 16 MiB
    # GC at the current usage, down to a level that removing one image reaches
    policy = ImageGCPolicy(high_threshold_percent=usage, low_threshold_percent=usage - 15, min_age=120)
    gc = ImageGC(store, in_use=in_use, event=event, policy=policy, clock=lambda: clock[0])

    # both images were first detected just now: younger than imageMinimumGCAge, nothing goes
    with pytest.raises(GCFailed):
        await gc.collect()
    assert {i.digest for i in await store.list()} == {old.digest, used.digest}
    assert events[-1][:2] == ("Warning", "FreeDiskSpaceFailed")

    clock[0] += 121
    events.clear()
    done = await gc.collect()
    assert done.remove == (old.digest,)
    assert [i.digest for i in await store.list()] == [used.digest]
    assert not old.rootfs.exists() and used.rootfs.is_dir()
    assert await store.get(f"{registry.host}/old:latest") is None
    assert events == []
    assert 100 - disk_usage(store.root)[1] * 100 // capacity <= policy.low_threshold_percent

    # what is left is in use: asked for more than it may free, GC fails as the kubelet says
    gc.policy = ImageGCPolicy(high_threshold_percent=0, low_threshold_percent=0, min_age=0)
    with pytest.raises(GCFailed):
        await gc.collect()
    assert used.rootfs.is_dir()
    assert events[-1][:2] == ("Warning", "FreeDiskSpaceFailed")
    assert events[-1][2].startswith("Failed to garbage collect required amount of images. Attempted to free ")
    assert events[-1][2].endswith(" bytes, but only found 0 bytes eligible to free.")

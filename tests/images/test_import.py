"""`import_archive`: OCI and docker archives written by skopeo, pushed to a real registry and pulled back."""

from __future__ import annotations

import asyncio
import tarfile
from pathlib import Path

import pytest

from skiff.images.errors import ArchiveError
from skiff.images.importing import import_archive, inspect_archive, local_name
from skiff.images.registry import RegistryInfo
from skiff.images.store import ImageStore


async def skopeo_copy(src: str, dest: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "skopeo", "copy", "--src-tls-verify=false", src, dest, stdout=asyncio.subprocess.DEVNULL
    )
    assert await proc.wait() == 0


async def test_docker_archive_named_by_its_repo_tags(
    tmp_path: Path, registry: RegistryInfo, store: ImageStore, busybox: str
) -> None:
    tar = tmp_path / "saved.tar"
    await skopeo_copy(f"docker://{busybox}", f"docker-archive:{tar}:docker.io/library/mybox:1.0")
    assert [i.name for i in inspect_archive(tar)] == ["docker.io/library/mybox:1.0"]
    ((ref, digest),) = await import_archive(tar, registry.host)
    assert str(ref) == f"{registry.host}/mybox:1.0" and digest.startswith("sha256:")
    image = await store.pull("mybox:1.0")
    assert (image.rootfs / "bin" / "busybox").is_file()
    assert image.config.cmd == ("sh",)


async def test_oci_archive_needs_a_name_unless_it_carries_one(
    tmp_path: Path, registry: RegistryInfo, store: ImageStore, busybox: str
) -> None:
    tar = tmp_path / "image.oci.tar"
    await skopeo_copy(f"docker://{busybox}", f"oci-archive:{tar}:latest")  # the annotation holds a tag only
    with pytest.raises(ArchiveError, match="give one with -t NAME"):
        await import_archive(tar, registry.host)
    lines: list[str] = []
    ((ref, _),) = await import_archive(tar, registry.host, name="team/tools:v2", progress=lines.append)
    assert str(ref) == f"{registry.host}/team/tools:v2"
    assert any("importing oci-archive:" in line for line in lines)
    assert (await store.pull("team/tools:v2")).config.cmd == ("sh",)

    named = tmp_path / "named.oci.tar"
    await skopeo_copy(f"docker://{busybox}", f"oci-archive:{named}:quay.example/org/app:3")
    ((ref, _),) = await import_archive(named, registry.host)
    assert str(ref) == f"{registry.host}/org/app:3"


async def test_not_an_image_archive(tmp_path: Path, registry: RegistryInfo) -> None:
    plain = tmp_path / "plain.tar"
    (tmp_path / "f").write_text("x")
    with tarfile.open(plain, "w") as t:
        t.add(tmp_path / "f", "f")
    with pytest.raises(ArchiveError, match="neither an OCI archive"):
        await import_archive(plain, registry.host)
    (tmp_path / "junk").write_text("not a tar")
    with pytest.raises(ArchiveError, match="not a readable tar"):
        await import_archive(tmp_path / "junk", registry.host)


def test_local_names() -> None:
    assert str(local_name("busybox:latest", "r:5000")) == "r:5000/busybox:latest"
    assert str(local_name("docker.io/library/nginx:1", "r:5000")) == "r:5000/nginx:1"
    assert str(local_name("docker.io/bitnami/redis:7", "r:5000")) == "r:5000/bitnami/redis:7"
    assert str(local_name("ghcr.io/org/x", "r:5000")) == "r:5000/org/x:latest"

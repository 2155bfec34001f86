"""The bundled registry, the busybox recipe and a node's image store, with the real tools."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from skiff.images import remote
from skiff.images.build import build_image
from skiff.images.errors import ImageNotFound, ImageNotPresent, InvalidReference, RegistryError, RegistryUnavailable
from skiff.images.recipes import ensure_builtin_image
from skiff.images.reference import parse_reference
from skiff.images.registry import RegistryInfo, run_registry
from skiff.images.store import ImageStore, auth_file
from tests.ports import free_port


async def test_registry_starts_answers_and_stops(tmp_path: Path) -> None:
    async with run_registry(tmp_path, f"127.0.0.1:{free_port()}") as reg:
        assert (tmp_path / "registry" / "config.yml").is_file()
        async with aiohttp.ClientSession() as s, s.get(f"{reg.url}/v2/") as resp:
            assert resp.status == 200
        pid = reg.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_registry_that_cannot_listen_says_why(tmp_path: Path, registry: RegistryInfo) -> None:
    with pytest.raises(RegistryError, match=r"(?i)address already in use"):
        async with run_registry(tmp_path / "second", registry.host):
            pass


async def test_busybox_built_pushed_pulled_and_unpacked(registry: RegistryInfo, store: ImageStore) -> None:
    lines: list[str] = []
    ref = await ensure_builtin_image("busybox", registry.host, progress=lines.append)
    assert str(ref) == f"{registry.host}/busybox:latest"
    assert any("layer busybox" in line for line in lines)
    assert [(i.repository, i.tag) for i in await remote.list_images(registry.url)] == [("busybox", "latest")]

    image = await store.pull("busybox", progress=lines.append)
    assert image.digest.startswith("sha256:")
    root = image.rootfs
    assert (root / "bin" / "busybox").is_file() and os.access(root / "bin" / "busybox", os.X_OK)
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"
    assert os.readlink(root / "usr" / "bin" / "wget") == "/bin/busybox"
    assert "nobody:x:65534" in (root / "etc" / "passwd").read_text()
    assert (root / "tmp").stat().st_mode & 0o1777 == 0o1777
    assert image.config.cmd == ("sh",)
    assert image.config.env_dict()["PATH"].endswith("/bin")
    assert f"{registry.host}/busybox:latest" in image.names
    assert image.size > 1_000_000

    # cached: IfNotPresent and Never use it; Always asks the registry and finds the same digest
    assert (await store.pull("busybox", "Never")).digest == image.digest
    assert (await store.pull(f"{registry.host}/busybox:latest", "Always")).digest == image.digest
    assert (await store.pull(f"busybox@{image.digest}", "IfNotPresent")).rootfs == root
    # a second store on the same directory finds it again
    again = ImageStore(store.root, default_registry=registry.host)
    assert [i.digest for i in await again.list()] == [image.digest]

    # a builtin already in the registry is not rebuilt
    lines.clear()
    await ensure_builtin_image("busybox:latest", registry.host, progress=lines.append)
    assert lines == []


async def test_missing_image_carries_the_registrys_reason(store: ImageStore, busybox: str) -> None:
    with pytest.raises(ImageNotFound, match="manifest unknown") as e:
        await store.pull("busybox:no-such-tag")
    assert e.value.reference.endswith("/busybox:no-such-tag")
    with pytest.raises(ImageNotFound, match="unknown"):
        await store.pull("nothing-here")
    with pytest.raises(ImageNotPresent, match="pull policy of Never"):
        await store.pull("nothing-here", "Never")
    with pytest.raises(InvalidReference):
        await store.pull("Not A Name")
    with pytest.raises(ValueError, match="unknown image pull policy"):
        await store.pull("busybox", "Sometimes")  # type: ignore[arg-type]
    assert await store.list() == []


async def test_unreachable_registry(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store", default_registry=f"127.0.0.1:{free_port()}")
    with pytest.raises(RegistryUnavailable, match="connection refused"):
        await store.pull("busybox")


async def test_gc_keeps_images_in_use_and_removes_the_rest(store: ImageStore, busybox: str) -> None:
    image = await store.pull(busybox)
    assert await store.gc({image.digest}, keep_bytes=0) == []
    assert image.rootfs.is_dir()
    assert await store.gc(set(), keep_bytes=image.size) == []  # within budget
    assert await store.gc(set(), keep_bytes=0) == [image.digest]
    assert not image.rootfs.exists()
    assert await store.list() == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    assert (await store.pull(busybox)).digest == image.digest  # pulls again after removal


async def test_credentials_are_passed_as_an_auth_file(store: ImageStore, busybox: str) -> None:
    # the bundled registry has no auth: a pull with credentials still works, and the file format is right
    creds = {
        "auths": {
            "https://index.docker.io/v1/": {"username": "u", "password": "p"},
            busybox.split("/")[0]: {"auth": "dTpw"},
        }
    }
    assert auth_file(creds) == {"auths": {"docker.io": {"auth": "dTpw"}, busybox.split("/")[0]: {"auth": "dTpw"}}}
    image = await store.pull(busybox, "Always", credentials=creds)
    assert (image.rootfs / "bin" / "busybox").is_file()
    assert not list((store.root / "pulls").iterdir())  # the auth file does not outlive the pull


def test_reference_resolution_uses_the_default_registry() -> None:
    assert parse_reference("busybox", default_registry="10.0.0.1:5000").name == "10.0.0.1:5000/busybox"


async def test_concurrent_pulls_share_one_download(store: ImageStore, busybox: str) -> None:
    lines: list[str] = []
    images = await asyncio.gather(*(store.pull(busybox, progress=lines.append) for _ in range(3)))
    assert len({(i.digest, i.rootfs) for i in images}) == 1
    assert sum(1 for line in lines if line.startswith("pulling ")) == 1  # one skopeo run for all three
    assert len(await store.list()) == 1


async def test_always_pulls_a_tag_that_moved_and_not_one_that_did_not(
    tmp_path: Path, registry: RegistryInfo, store: ImageStore, busybox: str
) -> None:
    """imagePullPolicy Always asks the registry what the tag is now: the same digest reuses the stored image
    (nothing copied), a tag pushed anew is pulled."""
    ref = parse_reference("moving:v1", default_registry=registry.host)
    for n, message in enumerate(["one", "two"]):
        ctx = tmp_path / f"ctx{n}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM busybox\nENV MESSAGE={message}\n")
        built = await build_image(ctx, ref, registry=registry.host)
        first = await store.pull(str(ref), "Always")
        again = await store.pull(str(ref), "Always")
        assert first.digest == again.digest == built.digest
        assert first.config.env_dict()["MESSAGE"] == message

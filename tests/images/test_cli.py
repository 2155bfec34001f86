"""`skiff image build/import/push/ls` as a user runs them: the real command against a real registry."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from skiff.images.registry import RegistryInfo
from skiff.images.store import ImageStore

SKIFF = [sys.executable, "-m", "skiff.cli.main"]


async def skiff(*args: str, registry: RegistryInfo) -> tuple[int, str, str]:
    env = {**os.environ, "SKIFF_REGISTRY": registry.host}
    proc = await asyncio.create_subprocess_exec(
        *SKIFF, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_recipe_build_push_ls_and_pull(tmp_path: Path, registry: RegistryInfo, store: ImageStore) -> None:
    rc, out, err = await skiff("image", "build", "--recipe", "busybox", "-t", "busybox:latest", registry=registry)
    assert rc == 0, err
    assert out.startswith(f"{registry.host}/busybox:latest@sha256:")
    assert "layer busybox" in err and "pushing" in err

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM busybox\nCOPY hello.txt /srv/\nCMD ["cat", "/srv/hello.txt"]\n')
    (ctx / "hello.txt").write_text("hello\n")
    layout = tmp_path / "layout"
    rc, out, err = await skiff("image", "build", str(ctx), "-t", "hello:1", "--output", str(layout), registry=registry)
    assert rc == 0, err
    assert "step 2/3: COPY hello.txt /srv/" in err

    rc, out, err = await skiff("image", "push", f"{layout}:build", "hello:copy", registry=registry)
    assert rc == 0, err

    rc, out, err = await skiff("image", "ls", "--registry", registry.url, registry=registry)
    assert rc == 0, err
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert rows == [
        [f"{registry.host}/busybox", "latest"],
        [f"{registry.host}/hello", "1"],
        [f"{registry.host}/hello", "copy"],
    ]
    image = await store.pull("hello:copy")
    assert (image.rootfs / "srv" / "hello.txt").read_text() == "hello\n"
    assert image.config.cmd == ("cat", "/srv/hello.txt")


async def test_errors_are_clear_and_exit_non_zero(tmp_path: Path, registry: RegistryInfo) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN echo hi\n")
    rc, out, err = await skiff("image", "build", str(ctx), "-t", "x", registry=registry)
    assert rc == 1 and out == ""
    assert f"skiff: error: {ctx / 'Dockerfile'}:2: RUN is not supported" in err

    rc, _, err = await skiff("image", "import", str(tmp_path / "missing.tar"), registry=registry)
    assert rc == 1 and "not a readable tar archive" in err

    rc, _, err = await skiff("image", "push", "docker://" + registry.host + "/nope:1", "y", registry=registry)
    assert rc == 1 and "manifest unknown" in err

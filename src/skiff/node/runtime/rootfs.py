"""A container's writable root on top of an image's read-only unpacked rootfs.

Overlayfs: lower = the image's rootfs (shared by every container of that image, never written),
upper and work = per-container directories, merged at `<container dir>/rootfs`. Where overlay
cannot be mounted (a filesystem that refuses to be an upper layer, no overlay module) the image
is copied instead (`cp -a`), slower but equivalent. Removal unmounts and deletes it all.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from skiff.node.runtime.proc import CommandError, run

log = logging.getLogger(__name__)


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _make_dirs(image_rootfs: Path, dirs: tuple[Path, ...]) -> Path:
    if not image_rootfs.is_dir():
        raise FileNotFoundError(f"image rootfs {image_rootfs} is not a directory")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return image_rootfs.resolve()


async def prepare(container_dir: Path, image_rootfs: Path) -> Path:
    """Make `<container_dir>/rootfs` a writable view of `image_rootfs`; return it."""
    target = container_dir / "rootfs"
    upper, work = container_dir / "upper", container_dir / "work"
    lower = await asyncio.to_thread(_make_dirs, image_rootfs, (target, upper, work))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    try:
        await run("mount", "-t", "overlay", "overlay", "-o", options, str(target))
        (container_dir / "rootfs.kind").write_text("overlay")
    except CommandError as exc:
        log.warning("overlay mount failed (%s); copying the image rootfs instead", exc)
        await run("cp", "-a", f"{image_rootfs}/.", str(target), time_limit=600)
        (container_dir / "rootfs.kind").write_text("copy")
    return target


async def remove(container_dir: Path) -> None:
    """Unmount the container's rootfs if mounted and delete the container directory (idempotent)."""
    target = container_dir / "rootfs"
    for _ in range(5):
        if not await asyncio.to_thread(is_mountpoint, target):
            break
        try:
            await run("umount", str(target))
        except CommandError:
            await asyncio.sleep(0.1)
    else:
        await run("umount", "-l", str(target), check=False)
    await asyncio.to_thread(shutil.rmtree, container_dir, True)

"""A container's writable root on top of an image's read-only unpacked rootfs.

Overlayfs: lower = the image's rootfs (shared by every container of that image, never written),
upper and work = per-container directories, merged at `<container dir>/rootfs`. Where overlay
cannot be mounted (a filesystem that refuses to be an upper layer, no overlay module) the image
is copied instead (`cp -a`), slower but equivalent. Removal unmounts and deletes it all. The overlay
is mounted and unmounted by the mount(2)/umount2(2) calls themselves, in a thread, not by running
mount(8): a process spawn fewer per container start (~10 ms, more on a busy machine).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
from pathlib import Path

from skiff.node.runtime.proc import run

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)


class MountFailed(OSError):
    """mount(2) or umount2(2) refused (its errno kept: an OSError subclass is not remapped to ENOENT's)."""


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _mount_overlay(container_dir: Path, image_rootfs: Path) -> None:
    """mkdir rootfs, upper, work; mount the overlay on rootfs (OSError when the kernel refuses it)."""
    if not image_rootfs.is_dir():
        raise FileNotFoundError(f"image rootfs {image_rootfs} is not a directory")
    target, upper, work = container_dir / "rootfs", container_dir / "upper", container_dir / "work"
    for d in (target, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={image_rootfs.resolve()},upperdir={upper},workdir={work}"
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise MountFailed(errno, f"mount overlay on {target}: {os.strerror(errno)}")
    (container_dir / "rootfs.kind").write_text("overlay")


def _umount(target: Path) -> None:
    if _libc.umount2(os.fsencode(target), 0) != 0:
        errno = ctypes.get_errno()
        raise MountFailed(errno, f"umount {target}: {os.strerror(errno)}")


async def prepare(container_dir: Path, image_rootfs: Path) -> Path:
    """Make `<container_dir>/rootfs` a writable view of `image_rootfs`; return it."""
    target = container_dir / "rootfs"
    try:
        await asyncio.to_thread(_mount_overlay, container_dir, image_rootfs)
    except MountFailed as exc:
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
            await asyncio.to_thread(_umount, target)
        except MountFailed:
            await asyncio.sleep(0.1)
    else:
        await run("umount", "-l", str(target), check=False)
    await asyncio.to_thread(shutil.rmtree, container_dir, True)

"""The built-in python image: built from this host's Debian Python, pulled, and (as root) run in a chroot."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

from skiff.images.recipes import ensure_builtin_image
from skiff.images.registry import RegistryInfo
from skiff.images.store import ImageStore


async def test_python_image_runs_the_standard_library(registry: RegistryInfo, store: ImageStore) -> None:
    await ensure_builtin_image("python", registry.host)
    image = await store.pull("python")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = image.rootfs
    assert (root / "usr" / "bin" / f"python{version}").is_file()
    assert os.readlink(root / "usr" / "bin" / "python3") == f"python{version}"
    assert (root / "usr" / "lib" / f"python{version}" / "json" / "__init__.py").is_file()
    assert not (root / "usr" / "lib" / f"python{version}" / "idlelib").exists()
    assert (root / "bin" / "busybox").is_file()  # on top of the busybox layer
    assert image.config.cmd == ("python3",)
    assert image.config.env_dict()["PYTHONUNBUFFERED"] == "1"
    # byte code compiled in for what a function instance imports: unchecked hash-based .pyc (PEP 552 flags 0b01)
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    lib = root / "usr" / "lib" / f"python{version}"
    for module in ("json/__init__", "asyncio/base_events", "concurrent/futures/thread", "urllib/request"):
        pyc = lib / f"{module.rsplit('/', 1)[0]}/__pycache__/{module.rsplit('/', 1)[1]}.{tag}.pyc"
        assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01, pyc
    if os.geteuid() != 0:
        return  # running it needs chroot; CI runs as root
    script = "import json, ssl, sqlite3, zlib, hashlib, asyncio, urllib.request; print(json.dumps([1, 2]))"
    proc = await asyncio.create_subprocess_exec(
        shutil.which("chroot") or "/usr/sbin/chroot", str(root), "/usr/bin/python3", "-c", script,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "[1, 2]"

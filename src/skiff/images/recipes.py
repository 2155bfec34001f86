"""Built-in images made from this machine's Debian packages, so a cluster without internet has images.

`busybox`: Debian's statically linked `busybox-static` as `/bin/busybox`, a symbolic link for
each of its applets where `busybox --list-full` puts them (`/bin/sh`, `/usr/bin/wget`,
`/sbin/ifconfig`...), `/etc/passwd` and `/etc/group` with root and nobody, `/tmp` (1777), `/root`
and the usual empty mount points; `CMD ["sh"]`. About 1 MB compressed.

`python`: see `skiff.images.python_recipe` — the busybox layer plus a Python runtime.

`etcd`: see `skiff.images.etcd_recipe` — the busybox layer plus Debian's etcd, etcdctl (and etcdutl).

`ensure_builtin_image` builds and pushes one of them the first time it is asked for (the tag is
missing from the registry), so tests and examples can simply say `busybox`.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from skiff.images import remote
from skiff.images.errors import BuildError
from skiff.images.layers import Entry, write_layer
from skiff.images.layout import Draft, Layout
from skiff.images.reference import Reference, parse_reference
from skiff.images.tools import Progress, require, run

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"

Recipe = Callable[[Layout, Draft, Progress], Awaitable[None]]


def base_entries() -> list[Entry]:
    """The skeleton every built-in image starts with: directories, passwd, group."""
    dirs = {
        "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
        "home": 0o755, "root": 0o700, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777, "var/www": 0o755,
        "proc": 0o555, "sys": 0o555, "dev": 0o755, "run": 0o755,
    }  # fmt: skip
    entries = [Entry(path, "dir", mode=mode) for path, mode in dirs.items()]
    entries.append(Entry("etc/passwd", "file", data=PASSWD.encode()))
    entries.append(Entry("etc/group", "file", data=GROUP.encode()))
    return entries


async def busybox_entries() -> list[Entry]:
    """`base_entries` plus /bin/busybox and a link per applet."""
    busybox = Path("/bin/busybox")
    if not await asyncio.to_thread(busybox.is_file):
        busybox = Path(require("busybox", "busybox-static"))
    if "statically linked" not in await _file_kind(busybox):
        raise BuildError(f"{busybox} is not statically linked: install the Debian package busybox-static")
    listing = await run([str(busybox), "--list-full"])
    entries = base_entries()
    entries.append(Entry("bin/busybox", "file", mode=0o755, source=busybox))
    have = {e.path for e in entries}
    for applet in sorted(set(listing.split())):
        path = applet.strip("/")
        if path and path not in have:
            entries.append(Entry(path, "symlink", mode=0o777, target="/bin/busybox"))
            have.add(path)
    return entries


async def _file_kind(path: Path) -> str:
    """Enough of `file`: whether an ELF binary has a PT_INTERP (dynamic loader) program header."""

    def read() -> str:
        with path.open("rb") as f:
            data = f.read(65536)
        if data[:4] != b"\x7fELF":
            return "not ELF"
        wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
        if wide:
            phoff, phentsize, phnum = (
                struct.unpack_from(order + "Q", data, 32)[0],
                *struct.unpack_from(order + "HH", data, 54),
            )
        else:
            phoff, phentsize, phnum = (
                struct.unpack_from(order + "I", data, 28)[0],
                *struct.unpack_from(order + "HH", data, 42),
            )
        for i in range(phnum):
            offset = phoff + i * phentsize
            if offset + 4 <= len(data) and struct.unpack_from(order + "I", data, offset)[0] == 3:  # PT_INTERP
                return "dynamically linked"
        return "statically linked"

    return await asyncio.to_thread(read)


async def busybox_recipe(layout: Layout, draft: Draft, progress: Progress) -> None:
    entries = await busybox_entries()
    blob = await asyncio.to_thread(write_layer, layout.blobs, entries)
    progress(f"layer busybox: {len(entries)} entries, {blob.size / 1e6:.1f} MB compressed")
    draft.add_layer(blob, "skiff recipe busybox: /bin/busybox from busybox-static and its applets")
    draft.settings["Cmd"] = ["sh"]
    draft.settings.setdefault("Labels", {})["org.opencontainers.image.title"] = "busybox (skiff recipe)"


def _recipes() -> dict[str, Recipe]:
    from skiff.images.etcd_recipe import etcd_recipe
    from skiff.images.python_recipe import python_recipe

    return {"busybox": busybox_recipe, "etcd": etcd_recipe, "python": python_recipe}


def recipe_names() -> list[str]:
    return sorted(_recipes())


async def build_recipe(
    name: str, dest: Reference, *, insecure: bool | None = None, progress: Progress | None = None
) -> str:
    """Build the built-in image `name` and push it to `dest`; return the pushed digest."""
    recipes = _recipes()
    if name not in recipes:
        raise BuildError(f"no built-in recipe {name!r} (there are: {', '.join(sorted(recipes))})")
    say = progress or (lambda _line: None)
    tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="skiff-recipe-")
    try:
        layout = await asyncio.to_thread(Layout(Path(tmp)).init)
        draft = Draft()
        say(f"recipe {name}")
        await recipes[name](layout, draft, say)
        await asyncio.to_thread(draft.commit, layout, "build")
        say(f"pushing {dest}")
        return await remote.push(f"oci:{tmp}:build", dest, insecure=insecure, progress=progress)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def ensure_builtin_image(
    name: str, registry: str, *, insecure: bool | None = None, progress: Progress | None = None
) -> Reference:
    """`registry/name` (e.g. `busybox`, `busybox:latest`, `python`), built and pushed if the registry lacks it."""
    ref = parse_reference(name, default_registry=registry)
    recipe = ref.repository.rsplit("/", 1)[-1]
    if await remote.exists(ref, insecure=insecure):
        return ref
    await build_recipe(recipe, ref, insecure=insecure, progress=progress)
    return ref

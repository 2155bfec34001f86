"""The built-in `etcd` image: the busybox image plus Debian's etcd server and client, taken from this host.

Databases on skiff (the etcd operator of examples/etcd-operator) need an etcd image that a
machine without internet can have. This one holds the busybox layer (a shell for start-up
scripts) and one layer with `/usr/bin/etcd` from the Debian package `etcd-server`, `etcdctl`
from `etcd-client` (and `etcdutl` when the installed etcd has one: etcd 3.5 moved
`snapshot restore` there) with the shared libraries they load (found with `ldd`: Debian builds
them with cgo, so libc and its loader), plus `/var/lib/etcd`. Ports 2379 (clients) and 2380
(peers) are exposed, `CMD ["etcd"]`, and the image is labelled with the etcd version, which the
tag should carry too (`skiff image build --recipe etcd -t etcd:3.4.23`).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from skiff.images.errors import BuildError
from skiff.images.layers import Entry, write_layer
from skiff.images.layout import Draft, Layout
from skiff.images.python_recipe import _add_host_path, _shared_libraries
from skiff.images.recipes import busybox_recipe
from skiff.images.tools import Progress, run

TOOLS = {"etcd": "etcd-server", "etcdctl": "etcd-client", "etcdutl": "etcd-client"}
REQUIRED = ("etcd", "etcdctl")


async def etcd_version() -> str:
    """The installed etcd's version (`etcd --version` says `etcd Version: 3.4.23`)."""
    etcd = shutil.which("etcd")
    if etcd is None:
        raise BuildError("the etcd recipe copies Debian's etcd: install etcd-server")
    out = await run([etcd, "--version"])
    m = re.search(r"etcd Version:\s*(\S+)", out)
    if m is None:
        raise BuildError(f"cannot read the version of {etcd}: {out.strip()!r}")
    return m.group(1)


async def etcd_recipe(layout: Layout, draft: Draft, progress: Progress) -> None:
    await busybox_recipe(layout, draft, progress)
    version = await etcd_version()
    binaries = await asyncio.to_thread(_find_binaries)
    libs = await _shared_libraries(binaries)
    entries = await asyncio.to_thread(_entries, binaries, libs)
    blob = await asyncio.to_thread(write_layer, layout.blobs, entries)
    progress(f"layer etcd {version}: {len(entries)} entries, {blob.size / 1e6:.1f} MB compressed")
    draft.add_layer(blob, f"skiff recipe etcd: Debian etcd {version} ({', '.join(Path(b).name for b in binaries)})")
    draft.settings["ExposedPorts"] = {"2379/tcp": {}, "2380/tcp": {}}
    draft.settings["Cmd"] = ["etcd"]
    labels = draft.settings.setdefault("Labels", {})
    labels["org.opencontainers.image.title"] = "etcd (skiff recipe)"
    labels["org.opencontainers.image.version"] = version


def _find_binaries() -> list[str]:
    """The real paths of etcd, etcdctl and (when there is one) etcdutl on this host."""
    binaries: list[str] = []
    for tool, package in TOOLS.items():
        found = shutil.which(tool)
        if found is None:
            if tool in REQUIRED:
                raise BuildError(f"the etcd recipe needs {tool}: install the Debian package {package}")
            continue
        binaries.append(str(Path(found).resolve()))
    return binaries


def _entries(binaries: list[str], libs: set[str]) -> list[Entry]:
    out: dict[str, Entry] = {}
    for path in [*binaries, *sorted(libs)]:
        _add_host_path(out, path)
    for binary in binaries:  # on the PATH as /usr/bin/<tool>, wherever Debian keeps the file
        name = Path(binary).name
        if f"usr/bin/{name}" not in out:
            out[f"usr/bin/{name}"] = Entry(f"usr/bin/{name}", "symlink", mode=0o777, target=binary)
    out.setdefault("var/lib", Entry("var/lib", "dir", mode=0o755))
    out["var/lib/etcd"] = Entry("var/lib/etcd", "dir", mode=0o700)
    return list(out.values())

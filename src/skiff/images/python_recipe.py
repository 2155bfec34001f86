"""The built-in `python` image: the busybox image plus Debian's Python 3 runtime, taken from this host.

What it holds: the busybox layer (a shell and the usual tools), then one layer with the files of
the Debian packages `python3.X-minimal`, `libpython3.X-minimal` and `libpython3.X-stdlib` as
installed here (the interpreter and the whole standard library, extension modules included),
the `python3`/`python` links, the shared libraries they load (found with `ldd`: libc, libm, libz,
libexpat, libssl, libcrypto, libffi, libsqlite3, ...) at the paths Debian keeps them, the
merged-/usr links (`/lib` → `usr/lib`), and the CA bundle when present. Left out to keep it
small (about 13 MB compressed, 37 MB unpacked): documentation, IDLE, tkinter, turtledemo, ensurepip, lib2to3,
pydoc's data, the host's byte-code caches. No pip, no site packages: copy pure-Python code in with COPY.

Byte code is compiled in for the modules a function instance imports (`skiff.functions.runtime`:
asyncio, json, concurrent.futures...) and the usual next ones (`PRECOMPILED`, and what they import):
without it every container compiles them again at its start (~0.4 s of CPU): each starts from
the image's files, so the caches one writes are lost to the next. They are unchecked hash-based
.pyc files (PEP 552), valid whatever the layer's mtimes, compiled by the image's interpreter.
`CMD ["python3"]`, `PYTHONUNBUFFERED=1` so logs arrive at once, `LANG=C.UTF-8`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from skiff.images.errors import BuildError
from skiff.images.layers import Entry, write_layer
from skiff.images.layout import Draft, Layout
from skiff.images.recipes import busybox_recipe
from skiff.images.tools import Progress, ToolFailed, run

_LEFT_OUT = re.compile(
    r"^/usr/(share/(doc|man|lintian|binfmts|applications|pixmaps|python3)|lib/binfmt\.d)/|/(idlelib|tkinter|turtledemo|ensurepip|"
    r"lib2to3|pydoc_data|__pycache__|test|tests)/|^/usr/bin/(pydoc|2to3|idle)"
)
_LDD_RE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PRECOMPILED = ("asyncio", "concurrent.futures.thread", "contextvars", "importlib", "json", "signal", "traceback",
               "types", "uuid", "urllib.request", "http.client", "http.server", "logging", "datetime", "dataclasses",
               "typing", "base64", "hashlib", "random", "subprocess", "tempfile", "shutil", "decimal")  # fmt: skip
# run by the image's interpreter: import the modules, compile every stdlib source now loaded, print the .pyc paths
_COMPILE = """
import importlib, importlib.util, json, os, py_compile, sys
lib, out = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    importlib.import_module(name)
done = []
for mod in list(sys.modules.values()):
    src = getattr(mod, "__file__", None) or ""
    if src.endswith(".py") and src.startswith(lib + "/") and os.path.isfile(src):
        cfile = importlib.util.cache_from_source(src)
        py_compile.compile(src, cfile=out + cfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        done.append(cfile)
print(json.dumps(sorted(done)))
"""


def packages(version: str) -> list[str]:
    return [f"python{version}-minimal", f"libpython{version}-minimal", f"libpython{version}-stdlib"]


async def python_recipe(layout: Layout, draft: Draft, progress: Progress) -> None:
    await busybox_recipe(layout, draft, progress)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        listing = await run(["dpkg", "-L", *packages(version)])
    except (ToolFailed, FileNotFoundError) as e:
        raise BuildError(
            f"the python recipe copies Debian's Python {version}: install {' '.join(packages(version))} ({e})"
        ) from e
    entries = await asyncio.to_thread(_package_entries, listing.splitlines(), version)
    binaries = [e.source for e in entries if e.source is not None and (e.path.endswith(".so") or "/bin/" in e.path)]
    libs = await _shared_libraries([str(b) for b in binaries if b is not None])
    entries = await asyncio.to_thread(_with_libraries, entries, libs)
    with tempfile.TemporaryDirectory(prefix="skiff-pyc-") as tmp:
        compiled = await _precompile(version, tmp)
        entries += await asyncio.to_thread(_byte_code_entries, compiled, tmp, {e.path for e in entries})
    blob = await asyncio.to_thread(write_layer, layout.blobs, entries)
    progress(f"layer python{version}: {len(entries)} entries, {blob.size / 1e6:.1f} MB compressed")
    draft.add_layer(blob, f"skiff recipe python: Debian python{version} and the libraries it loads")
    draft.set_env("LANG", "C.UTF-8")
    draft.set_env("PYTHONUNBUFFERED", "1")
    draft.settings["Cmd"] = ["python3"]
    draft.settings.setdefault("Labels", {})["org.opencontainers.image.title"] = f"python {version} (skiff recipe)"


async def _precompile(version: str, out: str) -> list[str]:
    """Compile the byte code of `PRECOMPILED` (and what they import) with the image's interpreter into `out`."""
    try:
        printed = await run([f"/usr/bin/python{version}", "-I", "-c", _COMPILE, f"/usr/lib/python{version}", out,
                             *PRECOMPILED])  # fmt: skip
    except (ToolFailed, FileNotFoundError) as e:
        raise BuildError(f"compiling the byte code of the python image failed: {e}") from e
    paths: list[str] = json.loads(printed.strip().splitlines()[-1])
    return [p for p in paths if not _LEFT_OUT.search(p.replace("/__pycache__/", "/"))]


def _byte_code_entries(compiled: list[str], out: str, present: set[str]) -> list[Entry]:
    entries: list[Entry] = []
    for cfile in compiled:
        rel = cfile.lstrip("/")
        cache_dir = os.path.dirname(rel)
        if cache_dir not in present:
            present.add(cache_dir)
            entries.append(Entry(cache_dir, "dir", mode=0o755))
        entries.append(Entry(rel, "file", mode=0o644, data=Path(out + cfile).read_bytes()))
    return entries


def _package_entries(paths: list[str], version: str) -> list[Entry]:
    """Entries for the packages' files and links (and the directories on the way), minus what is left out."""
    out: dict[str, Entry] = {}
    for raw in paths:
        path = raw.strip()
        if not path.startswith("/") or path in ("/.", "/") or _LEFT_OUT.search(path + ("/" if _is_dir(path) else "")):
            continue
        if os.path.islink(path) or os.path.isfile(path):
            _add_host_path(out, path)
    for name in ("python3", "python"):
        out.setdefault(f"usr/bin/{name}", Entry(f"usr/bin/{name}", "symlink", mode=0o777, target=f"python{version}"))
    if not any(p == f"usr/bin/python{version}" for p in out):
        raise BuildError(f"/usr/bin/python{version} is not installed")
    if CA_BUNDLE.is_file():
        _add_host_path(out, str(CA_BUNDLE.resolve()))
        _add_host_path(out, str(CA_BUNDLE))
    return list(out.values())


def _is_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _add_host_path(out: dict[str, Entry], path: str) -> None:
    """Add `path` as on this host: each parent directory or link on the way, then the file or link itself."""
    parts = Path(path).parts[1:]
    current = "/"
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        rel = current.lstrip("/")
        if rel in out:
            if out[rel].kind == "symlink" and i < len(parts) - 1:  # follow a link met before, e.g. /lib
                _add_host_path(out, os.path.realpath(current) + "/" + "/".join(parts[i + 1 :]))
                return
            continue
        st = os.lstat(current)
        if os.path.islink(current):
            out[rel] = Entry(rel, "symlink", mode=0o777, target=os.readlink(current))
            if i < len(parts) - 1:
                _add_host_path(out, os.path.realpath(current) + "/" + "/".join(parts[i + 1 :]))
                return
            target = os.path.realpath(current)
            if os.path.isfile(target):
                _add_host_path(out, target)
        elif os.path.isdir(current):
            out[rel] = Entry(rel, "dir", mode=st.st_mode & 0o7777)
        elif os.path.isfile(current):
            out[rel] = Entry(rel, "file", mode=st.st_mode & 0o7777, source=Path(current), mtime=st.st_mtime)


async def _shared_libraries(binaries: list[str]) -> set[str]:
    """Every library path `ldd` names for these binaries (one ldd run; not-dynamic files are fine)."""
    found: set[str] = set()
    for start in range(0, len(binaries), 200):
        proc = await asyncio.create_subprocess_exec(
            "ldd", *binaries[start : start + 200], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()  # ldd exits 1 when some file is not dynamic: the rest is still listed
        for line in out.decode(errors="replace").splitlines():
            m = _LDD_RE.search(line)
            if m and "not found" not in line:
                found.add(m.group(1))
    if not found:
        raise BuildError("ldd found no shared libraries for python: is ldd (libc-bin) installed?")
    return found


def _with_libraries(entries: list[Entry], libs: set[str]) -> list[Entry]:
    out = {e.path: e for e in entries}
    for lib in sorted(libs):
        _add_host_path(out, lib)
    return list(out.values())

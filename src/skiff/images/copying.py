"""COPY for a build that runs no container: what the image already holds, and which entries a COPY adds.

`ImageTree` knows the paths of the image so far (read from the base image's layer headers, then
kept up to date with each new layer) so that a COPY into an existing directory neither resets
that directory's owner and mode (`/tmp` stays 1777) nor needs it created, and so that
`--chown=name` finds users and groups in the image's own /etc/passwd and /etc/group.
`plan_copy` applies Docker's rules: sources are relative to (and may not leave) the context,
wildcards expand, a directory's contents are copied, several sources need a DEST ending in `/`.
Blocking: call from a thread.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

from skiff.images.errors import BuildError
from skiff.images.layers import Entry, entries_from_host
from skiff.images.layout import Layout

_USER_FILES = ("etc/passwd", "etc/group")


@dataclass(frozen=True, slots=True)
class Node:
    kind: str  # "dir", "file", "symlink", "other"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


class ImageTree:
    """The paths of an image being built (relative, no leading slash) and its passwd/group text."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.files: dict[str, bytes] = {}

    @classmethod
    def from_layers(cls, layout: Layout, layers: list[dict[str, object]]) -> ImageTree:
        tree = cls()
        for layer in layers:
            path = layout.blob_path(str(layer["digest"]))
            mode = "r:gz" if str(layer.get("mediaType", "")).endswith("gzip") else "r:*"
            with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
                for info in tar:
                    tree._apply(info, tar)
        return tree

    def _apply(self, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = info.name[2:] if info.name.startswith("./") else info.name
        name = posixpath.normpath(name.lstrip("/")) if name.strip("/") else ""
        if not name or name == ".":
            return
        base = posixpath.basename(name)
        if base.startswith(".wh."):  # a whiteout: the lower path (or, for .wh..wh..opq, the contents) is gone
            parent = posixpath.dirname(name)
            gone = parent if base == ".wh..wh..opq" else posixpath.join(parent, base[4:])
            prefix = gone + "/"
            for path in [p for p in self.nodes if p.startswith(prefix) or (p == gone and base != ".wh..wh..opq")]:
                del self.nodes[path]
            return
        kind = "dir" if info.isdir() else "symlink" if info.issym() else "file" if info.isreg() else "other"
        self.nodes[name] = Node(kind, info.mode, info.uid, info.gid)
        if name in _USER_FILES and info.isreg():
            f = tar.extractfile(info)
            if f is not None:
                self.files[name] = f.read()

    def add(self, entries: list[Entry]) -> None:
        for e in entries:
            path = e.path.strip("/")
            self.nodes[path] = Node(e.kind if e.kind != "hardlink" else "file", e.mode, e.uid, e.gid)
            if path in _USER_FILES:
                if e.data is not None:
                    self.files[path] = e.data
                elif e.source is not None:
                    self.files[path] = e.source.read_bytes()

    def is_dir(self, path: str) -> bool:
        node = self.nodes.get(path.strip("/"))
        return node is not None and node.kind in ("dir", "symlink")  # a link to a directory counts

    def missing_parents(self, path: str) -> list[Entry]:
        """Directory entries (root, 0755) for the ancestors of `path` the image lacks."""
        out: list[Entry] = []
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.nodes:
                out.append(Entry(parent, "dir", mode=0o755))
        return out

    def lookup(self, what: str, name: str) -> int:
        """The id of a user (`what="passwd"`) or group in the image; BuildError if unknown."""
        if name.isdigit():
            return int(name)
        text = self.files.get(f"etc/{what}", b"").decode(errors="replace")
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
        kind = "user" if what == "passwd" else "group"
        raise BuildError(f"unknown {kind} {name!r}: not in the image's /etc/{what}")

    def owner(self, chown: str) -> tuple[int, int]:
        """`--chown=user[:group]` → (uid, gid); a user alone means the same number for the group (as Docker)."""
        user, _, group = chown.partition(":")
        uid = self.lookup("passwd", user)
        return uid, (self.lookup("group", group) if group else uid)


def plan_copy(
    tree: ImageTree,
    context: Path,
    sources: list[str],
    dest: str,
    *,
    workdir: str,
    owner: tuple[int, int] | None = None,
    mode: int | None = None,
) -> list[Entry]:
    """The entries of `COPY sources... dest`, with any missing parent directories first."""
    root = context.resolve()
    paths: list[Path] = []
    for src in sources:
        rel = src.lstrip("/") or "."
        if any(c in rel for c in "*?["):
            found = sorted(root.glob(rel))
            if not found:
                raise BuildError(f"COPY {src}: no file in the build context matches")
            paths.extend(found)
        else:
            paths.append(root / rel)
    for path in paths:
        try:
            path.resolve().relative_to(root)
        except ValueError:
            raise BuildError(f"COPY {path}: outside the build context {context}") from None
        if not path.exists():
            raise BuildError(f"COPY {path.relative_to(root)}: no such file or directory in the build context")
    target = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    as_dir = dest.endswith("/") or dest in (".", "./") or tree.is_dir(target)
    if len(paths) > 1 and not as_dir:
        raise BuildError(f"COPY with more than one source needs a destination directory ending in '/', not {dest!r}")
    uid, gid = owner if owner is not None else (None, None)
    entries: list[Entry] = []
    for path in paths:
        where = posixpath.normpath(target).lstrip("/")
        if not path.is_dir() and as_dir:
            where = posixpath.join(where, path.name)
        try:
            added = entries_from_host(path, where, uid=uid, gid=gid)
        except ValueError as error:
            raise BuildError(f"COPY: {error}") from None
        if path.is_dir() and tree.is_dir(where):  # copying into an existing directory keeps its owner and mode
            added = [a for a in added if a.path != where]
        entries.extend(added)
    if mode is not None:
        entries = [_with_mode(e, mode) for e in entries]
    planned = {e.path for e in entries}
    parents: list[Entry] = []
    for e in entries:
        for parent in tree.missing_parents(e.path):
            if parent.path not in planned:
                planned.add(parent.path)
                parents.append(parent)
    return parents + entries


def _with_mode(e: Entry, mode: int) -> Entry:
    if e.kind in ("symlink",):
        return e
    return Entry(e.path, e.kind, mode, e.uid, e.gid, e.mtime, e.source, e.data, e.target, e.uname, e.gname)

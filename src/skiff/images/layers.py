"""Writing image layers: a list of filesystem entries → a gzip-compressed tar with its two digests.

A layer is identified twice: by the sha256 of the compressed blob (its *digest*, in the manifest)
and by the sha256 of the uncompressed tar (its *diff_id*, in the config's rootfs). Both are
computed in one pass while the tar is written. Entries are written in the order given, as root
unless said otherwise, with POSIX (pax) headers so long names and big ids survive. Blocking:
call from a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"

EntryKind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a layer. `path` is relative to the root (no leading slash).

    A file's content comes from `source` (a host file) or `data`; a symlink or hard link points at `target`.
    """

    path: str
    kind: EntryKind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    source: Path | None = None
    data: bytes | None = None
    target: str = ""
    uname: str = ""
    gname: str = ""


@dataclass(frozen=True, slots=True)
class LayerBlob:
    digest: str
    size: int
    diff_id: str
    media_type: str = LAYER_MEDIA_TYPE

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: BinaryIO | _Hashing | None) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.hash.update(b)
        self.size += len(b)
        if self.sink is not None:
            self.sink.write(b)
        return len(b)


def write_layer(blobs_dir: Path, entries: list[Entry]) -> LayerBlob:
    """Write `entries` as a tar.gz blob into `blobs_dir` (the layout's blobs/sha256); return its digests."""
    blobs_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=blobs_dir, prefix=".layer-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = _Hashing(raw)
            with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
                plain = _Hashing(gz)  # type: ignore[arg-type]
                with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                    for entry in entries:
                        _add(tar, entry)
        digest = compressed.hash.hexdigest()
        tmp.replace(blobs_dir / digest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return LayerBlob(digest=f"sha256:{digest}", size=compressed.size, diff_id=f"sha256:{plain.hash.hexdigest()}")


def _add(tar: tarfile.TarFile, entry: Entry) -> None:
    info = tarfile.TarInfo(entry.path.strip("/") + ("/" if entry.kind == "dir" else ""))
    info.mode = entry.mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname, info.gname = entry.uname, entry.gname
    info.mtime = int(entry.mtime)
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        tar.addfile(info)
    elif entry.kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = entry.target.strip("/")
        tar.addfile(info)
    elif entry.data is not None:
        info.size = len(entry.data)
        tar.addfile(info, io.BytesIO(entry.data))
    elif entry.source is not None:
        with entry.source.open("rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, f)
    else:
        raise ValueError(f"layer entry {entry.path!r}: a file needs a source or data")


def entries_from_host(
    source: Path, dest: str, *, uid: int | None = None, gid: int | None = None, follow_top: bool = True
) -> list[Entry]:
    """Entries for a host file or the *contents* of a host directory placed at `dest` (Docker's COPY rules).

    Symbolic links inside a directory stay links; a top-level link is followed. Ownership is
    `uid`/`gid` if given, else root. Hard-linked files are written once and linked after.
    """
    dest = dest.strip("/")
    out: list[Entry] = []
    seen_inodes: dict[tuple[int, int], str] = {}

    def one(path: Path, target: str, st: os.stat_result) -> None:
        owner = {"uid": uid or 0, "gid": gid or 0, "mtime": st.st_mtime}
        mode = st.st_mode & 0o7777
        if path.is_symlink() and not (follow_top and path == source):
            out.append(Entry(target, "symlink", mode=0o777, target=os.readlink(path), **owner))  # type: ignore[arg-type]
        elif path.is_dir():
            if target:
                out.append(Entry(target, "dir", mode=mode, **owner))  # type: ignore[arg-type]
        elif path.is_file():
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                out.append(Entry(target, "hardlink", mode=mode, target=seen_inodes[key], **owner))  # type: ignore[arg-type]
            else:
                seen_inodes[key] = target
                out.append(Entry(target, "file", mode=mode, source=path, **owner))  # type: ignore[arg-type]
        else:
            raise ValueError(f"{path}: only files, directories and symbolic links can be copied")

    top = source.stat() if follow_top else source.lstat()
    one(source, dest, top)
    if source.is_dir() and not (source.is_symlink() and not follow_top):
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(source)
            for name in [*dirnames, *sorted(filenames)]:
                path = Path(dirpath) / name
                target = "/".join(p for p in (dest, str(rel_dir) if str(rel_dir) != "." else "", name) if p)
                one(path, target, path.lstat())
    return out

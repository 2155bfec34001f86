"""`skiff image import`: tarballs from elsewhere (OCI archives, `docker save` output) into the registry.

Two formats are recognised by their members: an OCI archive (`oci-layout` and `index.json`, as
`skopeo copy ... oci-archive:` or `buildah push` write) and a docker archive (`manifest.json`
with `RepoTags`, as `docker save` or `skopeo copy ... docker-archive:` write). Each image's name
comes from `-t NAME` or from the archive (`RepoTags`; the `io.containerd.image.name` or
`org.opencontainers.image.ref.name` annotation). An archive name from another registry lands in
ours without its host, and Docker Hub's `library/` prefix is dropped, so that a pod asking for
`busybox` finds an archive saved as `docker.io/library/busybox:latest`. skopeo does the copy.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.images import remote
from skiff.images.errors import ArchiveError, InvalidReference
from skiff.images.reference import Reference, parse_reference
from skiff.images.tools import Progress

_CONTAINERD_NAME = "io.containerd.image.name"
_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class ArchiveImage:
    """One image in an archive: the skopeo source that selects it and the name it carries (if any)."""

    source: str
    name: str | None


def inspect_archive(path: Path) -> list[ArchiveImage]:
    """The images of an OCI or docker archive. Blocking: call from a thread."""
    try:
        with tarfile.open(path) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            if "index.json" in members and "oci-layout" in members:
                return _oci_images(path, _read_json(tar, members["index.json"]))
            if "manifest.json" in members:
                return _docker_images(path, _read_json(tar, members["manifest.json"]))
    except (OSError, tarfile.TarError) as e:
        raise ArchiveError(f"{path}: not a readable tar archive: {e}") from e
    raise ArchiveError(f"{path}: neither an OCI archive (index.json, oci-layout) nor a docker archive (manifest.json)")


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    f = tar.extractfile(member)
    if f is None:
        raise ArchiveError(f"{member.name} is not a file")
    try:
        return json.loads(f.read())
    except ValueError as e:
        raise ArchiveError(f"{member.name}: not JSON: {e}") from e


def _oci_images(path: Path, index: dict[str, Any]) -> list[ArchiveImage]:
    manifests = index.get("manifests") or []
    if not manifests:
        raise ArchiveError(f"{path}: the OCI archive's index.json lists no image")
    out = []
    for m in manifests:
        notes = m.get("annotations") or {}
        ref_name = notes.get(_REF_NAME)
        full = notes.get(_CONTAINERD_NAME) or (ref_name if ref_name and (":" in ref_name or "/" in ref_name) else None)
        if ref_name:
            source = f"oci-archive:{path}:{ref_name}"
        elif len(manifests) == 1:
            source = f"oci-archive:{path}"
        else:
            raise ArchiveError(f"{path}: several images in the archive and one of them has no name")
        out.append(ArchiveImage(source, full))
    return out


def _docker_images(path: Path, manifest: Any) -> list[ArchiveImage]:
    if not isinstance(manifest, list) or not manifest:
        raise ArchiveError(f"{path}: the docker archive's manifest.json lists no image")
    out: list[ArchiveImage] = []
    for i, item in enumerate(manifest):
        tags = item.get("RepoTags") or []
        if tags:
            out.extend(ArchiveImage(f"docker-archive:{path}:{tag}", tag) for tag in tags)
        else:
            out.append(ArchiveImage(f"docker-archive:{path}@{i}", None))
    return out


def local_name(name: str, registry: str) -> Reference:
    """Where an archive's image name lands in `registry`: its repository path (without Docker Hub's `library/`)."""
    ref = parse_reference(name)
    repository = ref.repository
    if ref.registry in (None, "docker.io", "index.docker.io", "registry-1.docker.io"):
        repository = repository.removeprefix("library/")
    return Reference(parse_reference("x", default_registry=registry).registry, repository, ref.tag, None)


async def import_archive(
    path: Path,
    registry: str,
    *,
    name: str | None = None,
    insecure: bool | None = None,
    progress: Progress | None = None,
) -> list[tuple[Reference, str]]:
    """Push every image of the archive at `path`; return (reference, digest) per image pushed."""
    say = progress or (lambda _line: None)
    images = await asyncio.to_thread(inspect_archive, path)
    if name is not None:
        if len(images) != 1:
            raise ArchiveError(f"{path} holds {len(images)} images: -t names only one; import without -t")
        try:
            targets = [(images[0], parse_reference(name, default_registry=registry))]
        except InvalidReference as e:
            raise ArchiveError(str(e)) from e
    else:
        unnamed = [i for i in images if not i.name]
        if unnamed:
            raise ArchiveError(f"{path}: the archive does not name its image; give one with -t NAME")
        targets = [(i, local_name(i.name or "", registry)) for i in images]
    done = []
    for image, ref in targets:
        say(f"importing {image.source} as {ref}")
        digest = await remote.push(image.source, ref, insecure=insecure, progress=progress)
        done.append((ref, digest))
    return done

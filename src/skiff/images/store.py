"""A node's local images: pulled with skopeo, unpacked with umoci, kept per digest, garbage-collected.

The node agent asks `ImageStore.pull(ref, policy)` for each container and gets an `Image` whose
`rootfs` it hands to the runtime. On disk, under `root`:

    blobs/sha256/<hex>     every layer, config and manifest, shared by all images
    pulls/<id>/            a pull in progress: an OCI layout whose `blobs` links to ../../blobs
    rootfs/<hex>/          an unpacked image, named by its manifest digest; never written after unpack
    images/<hex>.json      what is known of it: names, config, blobs, size, last use

skopeo skips blobs the store already has, so `Always` costs a manifest fetch when nothing
changed. imagePullPolicy follows Kubernetes: `IfNotPresent` uses a stored image of that name (or
digest), `Never` never contacts a registry (`ImageNotPresent`), `Always` asks the registry every
time and reuses the unpacked rootfs if the digest is the same. Unqualified names resolve to
`default_registry` (see `skiff.images.reference`). Failed pulls raise `ImagePullError`
subclasses with the registry's message. Concurrent pulls of one name share one skopeo run.
One store per root directory: it keeps its index in memory.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from skiff.images.errors import ImageError, ImageNotPresent
from skiff.images.layout import Layout
from skiff.images.model import Image, ImageConfig
from skiff.images.reference import Reference, parse_reference, registry_host
from skiff.images.remote import manifest_digest
from skiff.images.tools import Progress, ToolFailed, pull_error, require, run, tls_verify

log = logging.getLogger(__name__)

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
TOUCH_SAVE = 60.0  # how often an image's last use is written to its record (it is kept in memory meanwhile)
_TAG = "image"


class ImageStore:
    """The images of one node, under `root`."""

    def __init__(
        self,
        root: Path | str,
        *,
        default_registry: str = "127.0.0.1:5000",
        insecure_registries: Collection[str] = (),
    ) -> None:
        self.root = Path(root)
        self.default_registry = registry_host(default_registry)
        self.insecure_registries = frozenset(registry_host(r) for r in insecure_registries)
        self._images: dict[str, Image] | None = None
        self._blobs: dict[str, builtins.list[str]] = {}
        self._inflight: dict[str, asyncio.Task[Image]] = {}
        self._digest_locks: dict[str, asyncio.Lock] = {}
        self._pulls = 0
        self._load_lock = asyncio.Lock()
        self._saved_use: dict[str, float] = {}  # digest -> when its last_used was last written

    # -- public surface ---------------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        policy: PullPolicy = "IfNotPresent",
        credentials: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Image:
        """The image `ref`, pulled and unpacked as `policy` says. `credentials`: a dockerconfigjson dict."""
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"unknown image pull policy {policy!r}")
        reference = parse_reference(ref, default_registry=self.default_registry)
        images = await self._index()
        found = self._find(images, reference)
        if found is not None and policy == "Always" and not credentials:
            # as a kubelet with containerd: the registry is asked what the name is now (one manifest HEAD);
            # when that is the image held, nothing is copied (with credentials, skopeo asks, as it pulls)
            verify = tls_verify(reference.registry or "", True if reference.registry in self.insecure_registries
                                else None)  # fmt: skip
            if await manifest_digest(reference, verify=verify) == found.digest:
                return replace(await self._touch(found), ref=str(reference))
        if policy != "Always":
            if found is not None:
                return replace(await self._touch(found), ref=str(reference))
            if policy == "Never":
                raise ImageNotPresent(f'container image "{ref}" is not present with pull policy of Never')
        key = f"{reference}|{policy}|{json.dumps(credentials, sort_keys=True) if credentials else ''}"
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._pull(reference, credentials, progress), name=f"pull {reference}")
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._pull_done(key, t))
        return await asyncio.shield(task)

    def _pull_done(self, key: str, task: asyncio.Task[Image]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    async def get(self, ref: str) -> Image | None:
        """The stored image of a name or digest, without pulling."""
        images = await self._index()
        if ref.startswith("sha256:"):
            return images.get(ref)
        return self._find(images, parse_reference(ref, default_registry=self.default_registry))

    async def list(self) -> builtins.list[Image]:
        return sorted((await self._index()).values(), key=lambda i: i.last_used, reverse=True)

    async def remove(self, digest: str) -> None:
        """Delete an image's rootfs, record and the blobs no other image uses. KeyError if unknown."""
        images = await self._index()
        if digest not in images:
            raise KeyError(f"no image {digest} in {self.root}")
        async with self._digest_lock(digest):
            image = images.pop(digest)
            self._blobs.pop(digest, None)
            hexd = digest.split(":", 1)[1]
            await asyncio.to_thread((self.root / "images" / f"{hexd}.json").unlink, True)
            await asyncio.to_thread(_rmtree, image.rootfs)
        await self._sweep_blobs()

    async def gc(self, in_use: set[str], keep_bytes: int) -> builtins.list[str]:
        """Remove unused images (digests not in `in_use`), least recently used first, until the store
        holds at most `keep_bytes` (Kubernetes' image GC down to its low threshold). Returns their digests."""
        images = await self._index()
        total = sum(i.size for i in images.values())
        removed: builtins.list[str] = []
        for image in sorted(images.values(), key=lambda i: i.last_used):
            if total <= keep_bytes:
                break
            if image.digest in in_use:
                continue
            await self.remove(image.digest)
            total -= image.size
            removed.append(image.digest)
        return removed

    # -- pulling ----------------------------------------------------------------------------------

    async def _pull(
        self, reference: Reference, credentials: Mapping[str, Any] | None, progress: Progress | None
    ) -> Image:
        skopeo = require("skopeo", "skopeo")
        say = progress or (lambda _line: None)
        work = self.root / "pulls" / uuid.uuid4().hex
        self._pulls += 1
        try:
            await asyncio.to_thread(self._prepare_pull, work, credentials)
            marked = reference.registry in self.insecure_registries
            verify = tls_verify(reference.registry or "", True if marked else None)
            argv = [skopeo, "copy", "--retry-times", "2", f"--src-tls-verify={'true' if verify else 'false'}"]
            if credentials:
                argv.append(f"--src-authfile={work}.auth.json")
            say(f"pulling {reference.pull_spec}")
            try:
                await run([*argv, f"docker://{reference.pull_spec}", f"oci:{work}:{_TAG}"], progress=progress)
            except ToolFailed as e:
                raise pull_error(e, str(reference)) from e
            digest, manifest, config = await asyncio.to_thread(_read_pulled, work)
            async with self._digest_lock(digest):
                rootfs = self.root / "rootfs" / digest.split(":", 1)[1]
                if not await asyncio.to_thread(rootfs.is_dir):
                    say(f"unpacking {digest}")
                    await self._unpack(work, rootfs)
                blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"]), digest]
                image = await self._record(reference, digest, rootfs, config, blobs)
            say(f"pulled {reference} ({digest}, {image.size / 1e6:.1f} MB)")
            return image
        finally:
            self._pulls -= 1
            await asyncio.to_thread(_rmtree, work)
            await asyncio.to_thread(Path(f"{work}.auth.json").unlink, True)

    def _prepare_pull(self, work: Path, credentials: Mapping[str, Any] | None) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True)
        (work / "blobs").symlink_to(Path("..") / ".." / "blobs")
        Layout(work).init()
        if credentials:
            fd = os.open(f"{work}.auth.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(auth_file(credentials), f)

    async def _unpack(self, layout: Path, rootfs: Path) -> None:
        umoci = require("umoci", "umoci")
        tmp = rootfs.with_name(f".unpack-{uuid.uuid4().hex}")
        await asyncio.to_thread(rootfs.parent.mkdir, parents=True, exist_ok=True)
        argv = [umoci, "raw", "unpack"]
        if os.geteuid() != 0:
            argv.append("--rootless")
        try:
            await run([*argv, "--image", f"{layout}:{_TAG}", str(tmp)])
            await asyncio.to_thread(tmp.rename, rootfs)
        except ToolFailed as e:
            raise ImageError(f"unpacking into {rootfs}: {e.message}") from e
        finally:
            await asyncio.to_thread(_rmtree, tmp)

    async def _record(
        self, reference: Reference, digest: str, rootfs: Path, config: dict[str, Any], blobs: builtins.list[str]
    ) -> Image:
        images = await self._index()
        names = {f"{reference.name}@{digest}"}
        if reference.tag and not reference.digest:
            tagged = f"{reference.name}:{reference.tag}"
            names.add(tagged)
            for other in list(images.values()):  # the tag moved: the old image loses it
                if other.digest != digest and tagged in other.names:
                    images[other.digest] = replace(other, names=tuple(n for n in other.names if n != tagged))
                    await self._save(images[other.digest])
        old = images.get(digest)
        if old is not None:
            image = replace(old, names=tuple(sorted({*old.names, *names})), last_used=time.time())
        else:
            size = await asyncio.to_thread(_tree_size, rootfs) + await asyncio.to_thread(self._blob_size, blobs)
            image = Image(
                ref=str(reference),
                digest=digest,
                rootfs=rootfs,
                config=ImageConfig.from_oci(config),
                names=tuple(sorted(names)),
                size=size,
                last_used=time.time(),
            )
        images[digest] = image
        self._blobs[digest] = blobs
        await self._save(image)
        return image

    # -- index on disk ------------------------------------------------------------------------------

    async def _index(self) -> dict[str, Image]:
        images = self._images
        if images is None:
            async with self._load_lock:
                images = self._images
                if images is None:
                    loaded, self._blobs = await asyncio.to_thread(self._load)
                    self._images = images = loaded
        assert images is not None
        return images

    def _load(self) -> tuple[dict[str, Image], dict[str, builtins.list[str]]]:
        images: dict[str, Image] = {}
        blobs: dict[str, builtins.list[str]] = {}
        for path in sorted((self.root / "images").glob("*.json")):
            try:
                data = json.loads(path.read_text())
                image = Image(
                    ref=data["ref"],
                    digest=data["digest"],
                    rootfs=self.root / "rootfs" / data["digest"].split(":", 1)[1],
                    config=ImageConfig.from_oci({"config": data["config"]}),
                    names=tuple(data["names"]),
                    size=int(data["size"]),
                    last_used=float(data["last_used"]),
                )
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable image record %s: %s", path, e)
                continue
            if image.rootfs.is_dir():
                images[image.digest] = image
                blobs[image.digest] = list(data.get("blobs") or [])
        return images, blobs

    async def _save(self, image: Image) -> None:
        record = {
            "ref": image.ref,
            "digest": image.digest,
            "names": list(image.names),
            "config": image.config.to_json(),
            "size": image.size,
            "last_used": image.last_used,
            "blobs": self._blobs.get(image.digest, []),
        }
        path = self.root / "images" / f"{image.digest.split(':', 1)[1]}.json"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(path)

        await asyncio.to_thread(write)

    async def _touch(self, image: Image) -> Image:
        """The image was used now: in memory at once, on disk at most every TOUCH_SAVE seconds (a pod start
        of a stored image then writes no file; the GC's order only needs a coarse last use)."""
        images = await self._index()
        now = time.time()
        image = replace(image, last_used=now)
        images[image.digest] = image
        if now - self._saved_use.get(image.digest, 0.0) >= TOUCH_SAVE:
            self._saved_use[image.digest] = now
            await self._save(image)
        return image

    def _find(self, images: Mapping[str, Image], reference: Reference) -> Image | None:
        if reference.digest:
            wanted = f"{reference.name}@{reference.digest}"
            return images.get(reference.digest) or next((i for i in images.values() if wanted in i.names), None)
        tagged = f"{reference.name}:{reference.tag}"
        return next((i for i in images.values() if tagged in i.names), None)

    def _digest_lock(self, digest: str) -> asyncio.Lock:
        return self._digest_locks.setdefault(digest, asyncio.Lock())

    def _blob_size(self, blobs: builtins.list[str]) -> int:
        total = 0
        for digest in blobs:
            path = self.root / "blobs" / "sha256" / digest.split(":", 1)[1]
            total += path.stat().st_size if path.exists() else 0
        return total

    async def _sweep_blobs(self) -> None:
        """Delete blobs no recorded image names; skipped while a pull runs (its blobs are not recorded yet)."""
        if self._pulls:
            return
        keep = {d.split(":", 1)[1] for blobs in self._blobs.values() for d in blobs}
        blob_dir = self.root / "blobs" / "sha256"

        def sweep() -> None:
            if not blob_dir.is_dir():
                return
            for path in blob_dir.iterdir():
                if path.name not in keep and not path.name.startswith("."):
                    path.unlink(missing_ok=True)

        await asyncio.to_thread(sweep)


def auth_file(credentials: Mapping[str, Any]) -> dict[str, Any]:
    """A containers-auth.json from a dockerconfigjson (`{"auths": {...}}`) or legacy dockercfg dict."""
    auths = credentials.get("auths", credentials)
    out: dict[str, dict[str, str]] = {}
    for key, entry in (auths or {}).items():
        if not isinstance(entry, Mapping):
            continue
        host = registry_host(str(key))
        if host in ("index.docker.io", "registry-1.docker.io"):
            host = "docker.io"
        auth = entry.get("auth")
        if not auth and entry.get("username") is not None:
            auth = base64.b64encode(f"{entry['username']}:{entry.get('password', '')}".encode()).decode()
        if auth:
            out[host] = {"auth": str(auth)}
    return {"auths": out}


def _read_pulled(work: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    layout = Layout(work)
    digest, manifest = layout.manifest(_TAG)
    return digest, manifest, layout.read_json(manifest["config"]["digest"])


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _rmtree(path: Path) -> None:
    """Remove a tree even where an image made directories unwritable (a rootless unpack)."""

    def fix(_func: object, target: str, _exc: object) -> None:
        parent = os.path.dirname(target)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
                shutil.rmtree(target, onerror=fix)
            else:
                os.unlink(target)
        except FileNotFoundError:
            pass

    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=fix)

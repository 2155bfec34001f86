"""Talking to a registry: push with skopeo, ask whether an image exists, list images, a tag's digest.

Pushing goes through skopeo (it uploads only the blobs the registry lacks); `list_images` uses
the distribution API directly (`/v2/_catalog`, `/v2/<name>/tags/list`, manifest HEAD) since skopeo
has no catalog command. `manifest_digest` is one manifest HEAD: what a node asks before pulling an
image with imagePullPolicy Always that it may already hold.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from skiff.images.errors import ImageError, ImageNotFound, ImagePushError
from skiff.images.reference import Reference, parse_reference, registry_host
from skiff.images.tools import Progress, ToolFailed, pull_error, require, run, tls_verify

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


def _tls(ref: Reference, insecure: bool | None, flag: str) -> str:
    return f"--{flag}tls-verify={'true' if tls_verify(ref.registry or '', insecure) else 'false'}"


async def push(source: str, dest: Reference, *, insecure: bool | None = None, progress: Progress | None = None) -> str:
    """Copy `source` (any skopeo transport: `oci:DIR:TAG`, `oci-archive:FILE`, ...) to `docker://dest`.

    Returns the pushed manifest's digest.
    """
    skopeo = require("skopeo", "skopeo")
    argv = [skopeo, "copy", "--retry-times", "2", _tls(dest, insecure, "dest-"), "--digestfile", "/dev/stdout"]
    if source.startswith("docker://"):  # registry to registry: the source's own trust rule
        argv.append(_tls(parse_reference(source.removeprefix("docker://")), None, "src-"))
    try:
        out = await run([*argv, source, f"docker://{dest.pull_spec}"], progress=progress)
    except ToolFailed as e:
        raise ImagePushError(f"pushing to {dest.pull_spec}: {e.message}") from e
    digests = [line.strip() for line in out.splitlines() if line.strip().startswith("sha256:")]
    return digests[-1] if digests else ""


async def exists(ref: Reference, *, insecure: bool | None = None) -> bool:
    """Whether the registry has `ref` (False when it answers `manifest unknown` / `name unknown`)."""
    skopeo = require("skopeo", "skopeo")
    try:
        await run([skopeo, "inspect", "--raw", _tls(ref, insecure, ""), f"docker://{ref.pull_spec}"])
    except ToolFailed as e:
        error = pull_error(e, str(ref))
        if isinstance(error, ImageNotFound):
            return False
        raise error from e
    return True


@dataclass(frozen=True, slots=True)
class RemoteImage:
    repository: str
    tag: str
    digest: str
    size: int


async def list_images(registry_url: str) -> list[RemoteImage]:
    """Every tag of every repository of a registry (HTTP or HTTPS URL; a bare host means HTTP)."""
    base = registry_url.rstrip("/") if "://" in registry_url else f"http://{registry_host(registry_url)}"
    out: list[RemoteImage] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            repos = await _catalog(session, base)
            for repo in sorted(repos):
                tags = (await _get_json(session, f"{base}/v2/{repo}/tags/list")).get("tags") or []
                sized = await asyncio.gather(*(_manifest_info(session, base, repo, tag) for tag in sorted(tags)))
                out.extend(
                    RemoteImage(repo, tag, digest, size)
                    for tag, (digest, size) in zip(sorted(tags), sized, strict=True)
                )
    except aiohttp.ClientError as e:
        raise ImageError(f"cannot list images of {base}: {e}") from e
    return out


async def _catalog(session: aiohttp.ClientSession, base: str) -> list[str]:
    """Every repository name, following the registry's `Link: <...>; rel="next"` pages."""
    repos: list[str] = []
    url: str | None = f"{base}/v2/_catalog?n=100"
    while url:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise ImageError(f"GET {url}: {resp.status} {await resp.text()}")
            repos.extend((await resp.json(content_type=None)).get("repositories") or [])
            link = resp.headers.get("Link", "")
        url = f"{base}{link.split(';')[0].strip('<> ')}" if 'rel="next"' in link else None
    return repos


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise ImageError(f"GET {url}: {resp.status} {await resp.text()}")
        data = await resp.json(content_type=None)
        return data if isinstance(data, dict) else {}


async def _manifest_info(session: aiohttp.ClientSession, base: str, repo: str, tag: str) -> tuple[str, int]:
    """(digest, compressed size of config and layers) of one tag."""
    async with session.get(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}) as resp:
        if resp.status != 200:
            return "", 0
        digest = resp.headers.get("Docker-Content-Digest", "")
        manifest = await resp.json(content_type=None)
    parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return digest, sum(int(p.get("size", 0)) for p in parts)


async def manifest_digest(ref: Reference, *, verify: bool, time_limit: float = 5.0) -> str | None:
    """The digest the registry serves for `ref` (a manifest HEAD, anonymous), None when it cannot say (it
    wants credentials, it is unreachable, it sends no Docker-Content-Digest): the caller then pulls in full.
    Without `verify`, plain HTTP, as skopeo ends up talking to a local or insecure registry."""
    if not ref.registry:
        return None
    url = f"{'https' if verify else 'http'}://{ref.registry}/v2/{ref.repository}/manifests/{ref.digest or ref.tag}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as session:
            async with session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
                return resp.headers.get("Docker-Content-Digest") if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None

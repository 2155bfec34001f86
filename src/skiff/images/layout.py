"""OCI image layouts on disk: blobs by digest, manifests, config and index.json, written in Python.

A build assembles its image here (`Draft` → `commit`), then skopeo pushes the layout to a
registry; a node's store reads the manifests and configs that skopeo pulled into one. The format
is the OCI image-layout spec: `oci-layout`, `index.json` whose manifests carry the
`org.opencontainers.image.ref.name` annotation (the tag), `blobs/sha256/<hex>`. Blocking file
work: call from a thread.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff.images.layers import LayerBlob

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_architecture() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


class Layout:
    """An OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blobs = path / "blobs" / "sha256"

    def init(self) -> Layout:
        self.blobs.mkdir(parents=True, exist_ok=True)
        marker = self.path / "oci-layout"
        if not marker.exists():
            marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (self.path / "index.json").exists():
            self.write_index([])
        return self

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.path / "blobs" / algorithm / hexdigest

    def put_blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        """Store bytes as a blob; return its descriptor."""
        hexdigest = hashlib.sha256(data).hexdigest()
        path = self.blobs / hexdigest
        if not path.exists():
            _atomic_write(path, data)
        return {"mediaType": media_type, "digest": f"sha256:{hexdigest}", "size": len(data)}

    def put_json(self, obj: object, media_type: str) -> dict[str, Any]:
        return self.put_blob(json.dumps(obj, separators=(",", ":"), sort_keys=False).encode(), media_type)

    def read_json(self, digest: str) -> Any:
        return json.loads(self.blob_path(digest).read_bytes())

    def index(self) -> dict[str, Any]:
        return json.loads((self.path / "index.json").read_text())  # type: ignore[no-any-return]

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
        _atomic_write(self.path / "index.json", json.dumps(index, indent=1).encode())

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        """Point `tag` at a manifest descriptor (replacing what the tag named before)."""
        manifests = [m for m in self.index().get("manifests", []) if m.get("annotations", {}).get(REF_NAME) != tag]
        manifests.append({**descriptor, "annotations": {REF_NAME: tag}})
        self.write_index(manifests)

    def resolve(self, tag: str | None = None) -> dict[str, Any]:
        """The manifest descriptor of `tag` (or the only manifest when `tag` is None)."""
        manifests = self.index().get("manifests", [])
        if tag is None:
            if len(manifests) != 1:
                raise KeyError(f"{self.path}: {len(manifests)} images in the layout; name one")
            return manifests[0]  # type: ignore[no-any-return]
        for m in manifests:
            if m.get("annotations", {}).get(REF_NAME) == tag:
                return m  # type: ignore[no-any-return]
        raise KeyError(f"{self.path}: no image tagged {tag!r}")

    def manifest(self, tag: str | None = None) -> tuple[str, dict[str, Any]]:
        """(manifest digest, manifest) of a tag."""
        desc = self.resolve(tag)
        return desc["digest"], self.read_json(desc["digest"])


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def empty_config() -> dict[str, Any]:
    """The config of `FROM scratch`: this host's platform, PATH set, no layers."""
    return {
        "architecture": host_architecture(),
        "os": "linux",
        "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


@dataclass
class Draft:
    """An image being assembled: the OCI config JSON and the layer descriptors so far."""

    config: dict[str, Any] = field(default_factory=empty_config)
    layers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_layout(cls, layout: Layout, tag: str | None = None) -> Draft:
        """Continue from an image already in `layout` (a base image)."""
        _, manifest = layout.manifest(tag)
        config = layout.read_json(manifest["config"]["digest"])
        return cls(config=copy.deepcopy(config), layers=list(manifest["layers"]))

    @property
    def settings(self) -> dict[str, Any]:
        """`config.config`: Env, Entrypoint, Cmd, WorkingDir, User, Labels, ExposedPorts."""
        return self.config.setdefault("config", {})  # type: ignore[no-any-return]

    def add_layer(self, blob: LayerBlob, created_by: str) -> None:
        self.layers.append(blob.descriptor())
        self.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(blob.diff_id)
        self.history(created_by, empty=False)

    def history(self, created_by: str, *, empty: bool = True) -> None:
        item: dict[str, Any] = {"created": _now(), "created_by": created_by}
        if empty:
            item["empty_layer"] = True
        self.config.setdefault("history", []).append(item)

    def set_env(self, key: str, value: str) -> None:
        env = [e for e in self.settings.get("Env") or [] if e.split("=", 1)[0] != key]
        self.settings["Env"] = [*env, f"{key}={value}"]

    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.settings.get("Env") or [])

    def commit(self, layout: Layout, tag: str) -> dict[str, Any]:
        """Write config and manifest into `layout`, tag it; return the manifest descriptor."""
        self.config["created"] = _now()
        config_desc = layout.put_json(self.config, CONFIG_MEDIA_TYPE)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config_desc,
            "layers": self.layers,
        }
        desc = layout.put_json(manifest, MANIFEST_MEDIA_TYPE)
        desc["platform"] = {"architecture": self.config.get("architecture", ""), "os": self.config.get("os", "")}
        layout.tag(desc, tag)
        return desc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

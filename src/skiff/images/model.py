"""The values the image layer hands to its users: an image's run settings and a pulled, unpacked image.

`ImageConfig` is the part of an OCI image config a container runtime needs (what Kubernetes
merges with a container's `command`, `args`, `env` and `workingDir`); `Image` is what
`ImageStore.pull` returns: where the unpacked root filesystem is and how to run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """Run settings of an image (OCI `config.config`). `env` keeps the image's `KEY=VALUE` order."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    @classmethod
    def from_oci(cls, config: dict[str, Any]) -> ImageConfig:
        """From a whole OCI (or Docker) image config JSON."""
        c = config.get("config") or {}
        return cls(
            env=tuple(c.get("Env") or ()),
            entrypoint=tuple(c.get("Entrypoint") or ()),
            cmd=tuple(c.get("Cmd") or ()),
            working_dir=c.get("WorkingDir") or "",
            user=c.get("User") or "",
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or {})),
            labels=dict(c.get("Labels") or {}),
            stop_signal=c.get("StopSignal") or "",
        )

    def env_dict(self) -> dict[str, str]:
        return {key: value for key, _, value in (e.partition("=") for e in self.env)}

    def to_json(self) -> dict[str, Any]:
        return {
            "Env": list(self.env),
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "WorkingDir": self.working_dir,
            "User": self.user,
            "ExposedPorts": {p: {} for p in self.exposed_ports},
            "Labels": dict(self.labels),
            "StopSignal": self.stop_signal,
        }


@dataclass(frozen=True, slots=True)
class Image:
    """A pulled image, unpacked on this node.

    `digest` is the manifest digest (what `imageID`/`repo@sha256:` name); `rootfs` is a directory
    shared by every container of the image and must never be written to: a runtime mounts an
    overlay (or copies) on top. `names` are the references it was pulled as, for the Node's
    `status.images`; `size` counts its unpacked files and blobs in bytes.
    """

    ref: str
    digest: str
    rootfs: Path
    config: ImageConfig
    names: tuple[str, ...] = ()
    size: int = 0
    last_used: float = 0.0

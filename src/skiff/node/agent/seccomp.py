"""A container's `securityContext.seccompProfile` → the runtime's `SeccompProfile`, as the kubelet does.

The container's profile wins over the pod's; with neither, the container runs unconfined (Kubernetes'
default) unless the agent runs with `--seccomp-default` (the kubelet's flag), which makes it RuntimeDefault.
A Localhost profile names a file relative to the node's seccomp directory (the kubelet's
/var/lib/kubelet/seccomp; here `<state dir>/seccomp`). It is read when the container is created: a
missing or unreadable file is a `SeccompError`, shown as `CreateContainerError` with the runtime's words.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from skiff.node.runtime.seccomp import ProfileError, from_profile_file
from skiff.node.runtime.types import SeccompProfile

Obj = dict[str, Any]


class SeccompError(Exception):
    """The container's seccomp profile cannot be loaded: CreateContainerError."""


def profile_field(pod: Obj, container: Obj) -> Obj | None:
    """The seccompProfile that applies to `container`: its own, else the pod's, else None."""
    own = (container.get("securityContext") or {}).get("seccompProfile")
    return own if own is not None else ((pod.get("spec") or {}).get("securityContext") or {}).get("seccompProfile")


def _read(root: Path, name: str) -> dict[str, Any]:
    path = (root / name).resolve()
    if not name or not path.is_relative_to(root.resolve()):
        raise SeccompError(f'failed to generate seccomp spec opts: invalid localhostProfile "{name}"')
    where = f'cannot load seccomp profile "{path}"'
    try:
        text = path.read_text()
    except OSError as e:
        raise SeccompError(f"failed to generate seccomp spec opts: {where}: open {path}: "
                           f"{(e.strerror or str(e)).lower()}") from e  # fmt: skip
    try:
        return from_profile_file(json.loads(text))
    except (ValueError, TypeError) as e:  # json's and ProfileError
        kind = "decoding" if not isinstance(e, ProfileError) else "converting"
        raise SeccompError(f"failed to generate seccomp spec opts: {where}: {kind} seccomp profile failed: {e}") from e


async def container_profile(pod: Obj, container: Obj, root: Path, *, runtime_default: bool = False) -> SeccompProfile:
    """The profile `container` of `pod` runs with; Localhost files are read from under `root`."""
    field = profile_field(pod, container)
    kind = (field or {}).get("type") or ("RuntimeDefault" if runtime_default else "Unconfined")
    if kind == "Unconfined":
        return SeccompProfile(type="Unconfined")
    if kind == "RuntimeDefault":
        return SeccompProfile(type="RuntimeDefault")
    if kind != "Localhost":
        raise SeccompError(f'failed to generate seccomp spec opts: unsupported seccomp profile type "{kind}"')
    name = str((field or {}).get("localhostProfile") or "")
    return SeccompProfile(type="Localhost", localhost=await asyncio.to_thread(_read, root, name))

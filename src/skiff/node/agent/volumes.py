"""A pod's volumes on the node's disk, laid out as the kubelet does, and the bind mounts into containers.

    <state>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>     a directory (tmpfs for medium Memory)
    <state>/pods/<uid>/volumes/kubernetes.io~configmap/<name>     files written atomically
    <state>/pods/<uid>/volumes/kubernetes.io~secret/<name>        the same, on a tmpfs of its own
    <state>/pods/<uid>/volumes/kubernetes.io~downward-api/<name>  the same, from the pod's fields
    <state>/pods/<uid>/volumes/kubernetes.io~projected/<name>     the same, from several sources

ConfigMap, Secret and downward API files are written as the kubelet's AtomicWriter does: the
data goes to a fresh `..<digest>` directory, `..data` is a symbolic link switched to it by a
rename, and each visible name is a link into `..data`, so a reader sees either all the old files
or all the new ones. Writing the same data again does nothing. projected volumes merge their
configMap, secret, downwardAPI and serviceAccountToken sources the same way, on a tmpfs as secrets
(tokens are fetched by the caller, `tokens.py`, and handed in by "<volume>/<source index>").
hostPath volumes are the host's paths (checked or created per `type`). persistentVolumeClaim
volumes are the path of the claim's bound PersistentVolume (hostPath or local; a local-path
volume's directory is made, mode 0777, on first use, as k3s's provisioner makes it); a claim that
is missing or not bound yet is a FailedMount and the pod waits. Other volume types are not
supported: a FailedMount. Mounting tmpfs needs root (`tmpfs=False` in unit tests writes plain
directories).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skiff.api import quantity
from skiff.node.agent.podspec import PodContext, field_value, object_data, resource_value
from skiff.node.runtime.types import Mount

Obj = dict[str, Any]
PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}
DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume could not be set up; the message is what follows `MountVolume.SetUp failed for volume "x" : `."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(message)
        self.volume = volume

    def event_message(self) -> str:
        return f'MountVolume.SetUp failed for volume "{self.volume}" : {self}'


def pod_dir(state_dir: Path, uid: str) -> Path:
    return state_dir / "pods" / uid


def _kind(volume: Obj) -> str:
    for kind in ("emptyDir", "configMap", "secret", "downwardAPI", "hostPath", "projected", "persistentVolumeClaim"):
        if kind in volume:
            return kind
    return next((k for k in volume if k != "name"), "unknown")


def projected_files(volume: Obj, pod: Obj, ctx: PodContext) -> dict[str, tuple[bytes, int]]:
    """A projected volume's files: its configMap, secret and downwardAPI sources merged in order."""
    name = volume.get("name", "")
    spec = volume["projected"] or {}
    mode = int(spec.get("defaultMode", DEFAULT_MODE))
    out: dict[str, tuple[bytes, int]] = {}
    for index, source in enumerate(spec.get("sources") or []):
        if "serviceAccountToken" in source:
            token = ctx.tokens.get(f"{name}/{index}")
            if token is None:
                raise VolumeError(name, "failed to fetch token: no token for this projection")
            sat = source["serviceAccountToken"] or {}
            out[sat.get("path") or "token"] = (token.encode(), mode)
            continue
        kind = _kind({**source, "name": name})
        if kind not in ("configMap", "secret", "downwardAPI"):
            raise VolumeError(name, f"projected source {kind} is not supported by this node yet")
        sub = dict(source[kind] or {}, defaultMode=mode)
        if kind == "secret":
            sub["secretName"] = sub.pop("name", "")
        out |= volume_files({"name": name, kind: sub}, pod, ctx) or {}
    return out


def volume_files(volume: Obj, pod: Obj, ctx: PodContext) -> dict[str, tuple[bytes, int]] | None:
    """The files (relative path → (content, mode)) of a configMap, secret, downwardAPI or projected volume.
    None for an optional source that is missing (an empty volume). Raises VolumeError."""
    name = volume.get("name", "")
    kind = _kind(volume)
    if kind == "projected":
        return projected_files(volume, pod, ctx)
    src = volume[kind] or {}
    mode = int(src.get("defaultMode", DEFAULT_MODE))
    if kind == "downwardAPI":
        out: dict[str, tuple[bytes, int]] = {}
        for item in src.get("items") or []:
            try:
                if "fieldRef" in item:
                    text = field_value(pod, item["fieldRef"].get("fieldPath", ""), ctx)
                else:
                    text = resource_value(pod, item.get("resourceFieldRef") or {}, ctx)
            except Exception as e:
                raise VolumeError(name, str(e)) from e
            out[item["path"]] = (text.encode(), int(item.get("mode", mode)))
        return out
    obj_name = src.get("name", "") if kind == "configMap" else src.get("secretName", "")
    objs = ctx.configmaps if kind == "configMap" else ctx.secrets
    obj = objs.get(obj_name)
    label = "configmap" if kind == "configMap" else "secret"
    if obj is None:
        if src.get("optional"):
            return None
        raise VolumeError(name, f'{label} "{obj_name}" not found')
    if kind == "secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data |= {k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()}
    else:
        data = {k: v.encode() for k, v in object_data("ConfigMap", obj).items()}
    items = src.get("items")
    if not items:
        return {k: (v, mode) for k, v in data.items()}
    out = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if src.get("optional"):
                continue
            if kind == "configMap":
                raise VolumeError(name, f"configmap references non-existent config key: {key}")
            raise VolumeError(name, f"references non-existent secret key: {key}")
        out[item.get("path") or key] = (data[key], int(item.get("mode", mode)))
    return out


def write_atomic(target: Path, files: Mapping[str, tuple[bytes, int]], group: int | None = None) -> bool:
    """Write `files` under `target` as the kubelet's AtomicWriter; False when they were there already.

    With `group` (the pod's fsGroup) the files belong to that group and it may read them, as the
    kubelet's SetVolumeOwnership does for read-only volumes."""
    digest = hashlib.sha256()
    if group is not None:
        digest.update(f"group={group}\0".encode())
    for path in sorted(files):
        content, mode = files[path]
        digest.update(f"{path}\0{mode}\0{len(content)}\0".encode() + content)
    version = f"..{digest.hexdigest()[:16]}"
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    if data_link.is_symlink() and os.readlink(data_link) == version:
        return False
    staging = target / version
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    for path, (content, mode) in files.items():
        dest = staging / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
        if group is not None:
            os.chown(dest, -1, group)
            mode |= 0o440
        os.chmod(dest, mode)
    tmp_link = target / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(version)
    os.replace(tmp_link, data_link)
    tops = {p.split("/", 1)[0] for p in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(Path("..data") / top)
    for entry in target.iterdir():  # the old version, and names gone from the data
        if entry.name.startswith(".."):
            if entry.name not in ("..data", version) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    return True


HOST_PATH_CHECKS = {
    "Directory": stat.S_ISDIR,
    "File": stat.S_ISREG,
    "Socket": stat.S_ISSOCK,
    "CharDevice": stat.S_ISCHR,
    "BlockDevice": stat.S_ISBLK,
}


def host_path(volume: Obj) -> Path:
    """Check (or create) a hostPath volume as its `type` says."""
    src = volume["hostPath"]
    path = Path(src.get("path", ""))
    kind = src.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644, exist_ok=True)
    elif kind in HOST_PATH_CHECKS:
        want = kind.lower().replace("chardevice", "character device").replace("blockdevice", "block device")
        try:
            ok = HOST_PATH_CHECKS[kind](path.stat().st_mode)
        except FileNotFoundError:
            ok = False
        if not ok:
            raise VolumeError(volume.get("name", ""), f"hostPath type check failed: {path} is not a {want}")
    return path


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")


def _is_mount(path: Path) -> bool:
    return os.path.ismount(path)


async def mount_tmpfs(path: Path, size: int | None = None) -> None:
    """A tmpfs at `path` (once; the directory is made first)."""
    await asyncio.to_thread(path.mkdir, mode=0o755, parents=True, exist_ok=True)
    if await asyncio.to_thread(_is_mount, path):
        return
    options = "mode=0755" + (f",size={size}" if size else "")
    await _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))


def claim_path(volume: Obj, pod: Obj, ctx: PodContext) -> Path:
    """The host directory of a persistentVolumeClaim volume: its bound volume's hostPath or local path."""
    name = volume.get("name", "")
    claim = str((volume["persistentVolumeClaim"] or {}).get("claimName", ""))
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    pvc, pv = ctx.claims.get(claim, (None, None))
    if pvc is None:
        raise VolumeError(name, f'error processing PVC {ns}/{claim}: persistentvolumeclaim "{claim}" not found')
    if (pvc.get("status") or {}).get("phase") != "Bound" or pv is None:
        raise VolumeError(name, f"error processing PVC {ns}/{claim}: PVC is not bound")
    spec = pv.get("spec") or {}
    if "hostPath" in spec:
        path = Path((spec["hostPath"] or {}).get("path", ""))
        if not path.exists() and (spec["hostPath"] or {}).get("type") in (None, "", "DirectoryOrCreate"):
            path.mkdir(mode=0o777, parents=True, exist_ok=True)
            os.chmod(path, 0o777)
        if not path.is_dir():
            raise VolumeError(name, f"volume {pv['metadata']['name']}: {path} is not a directory")
        return path
    if "local" in spec:
        path = Path((spec["local"] or {}).get("path", ""))
        if not path.exists():
            raise VolumeError(name, f"path {path} does not exist")
        return path
    common = ("capacity", "accessModes", "claimRef", "persistentVolumeReclaimPolicy", "storageClassName",
              "volumeMode", "nodeAffinity", "mountOptions")  # fmt: skip
    kinds = [k for k in spec if k not in common]
    raise VolumeError(name, f"persistent volume type {', '.join(kinds) or 'unknown'} is not supported by this node")


async def setup_volumes(pod: Obj, root: Path, ctx: PodContext, *, tmpfs: bool = True) -> dict[str, Path]:
    """Make every volume of `pod` under its directory `root`; the host path of each, by name."""
    paths: dict[str, Path] = {}
    fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    fs_group = int(fs_group) if fs_group is not None else None
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume.get("name", "")
        kind = _kind(volume)
        if kind == "hostPath":
            paths[name] = await asyncio.to_thread(host_path, volume)
            continue
        if kind == "persistentVolumeClaim":
            paths[name] = await asyncio.to_thread(claim_path, volume, pod, ctx)
            continue
        if kind not in PLUGIN_DIRS:
            raise VolumeError(name, f"volume type {kind} is not supported by this node yet")
        path = root / "volumes" / PLUGIN_DIRS[kind] / name
        paths[name] = path
        if kind == "emptyDir":
            src = volume["emptyDir"] or {}
            if src.get("medium") == "Memory" and tmpfs:
                limit = src.get("sizeLimit")
                await mount_tmpfs(path, quantity.value(limit) if limit else None)
            else:
                await asyncio.to_thread(path.mkdir, mode=0o777, parents=True, exist_ok=True)
                await asyncio.to_thread(os.chmod, path, 0o777)
            if fs_group is not None:  # the kubelet's SetVolumeOwnership: the group's, setgid, group rw
                await asyncio.to_thread(os.chown, path, -1, fs_group)
                await asyncio.to_thread(os.chmod, path, 0o2777)
            continue
        files = volume_files(volume, pod, ctx)
        if kind in ("secret", "projected") and tmpfs:
            await mount_tmpfs(path)
        await asyncio.to_thread(write_atomic, path, files or {}, fs_group)
    return paths


def container_mounts(pod: Obj, container: Obj, paths: Mapping[str, Path]) -> list[Mount]:
    """The bind mounts of a container's volumeMounts (configMap, secret and downwardAPI read-only)."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    kinds = {v.get("name"): _kind(v) for v in volumes}
    readonly_claims = {v.get("name") for v in volumes if (v.get("persistentVolumeClaim") or {}).get("readOnly")}
    mounts = []
    for vm in container.get("volumeMounts") or []:
        name = vm.get("name", "")
        if name not in paths:
            raise VolumeError(name, f"volume {name} is not a volume of the pod")
        source = paths[name]
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if kinds.get(name) == "emptyDir" and not source.exists():
                source.mkdir(mode=0o777, parents=True)  # as the kubelet: a missing subPath is made
        readonly = (bool(vm.get("readOnly")) or name in readonly_claims
                    or kinds.get(name) in ("configMap", "secret", "downwardAPI", "projected"))  # fmt: skip
        mounts.append(Mount(destination=vm.get("mountPath", ""), source=str(source), readonly=readonly))
    return mounts


def _mounts_under(root: Path) -> list[Path]:
    prefix = str(root) + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    found.append(Path(point))
    except OSError:
        pass
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


async def teardown(root: Path) -> None:
    """Unmount the pod's tmpfs volumes and remove its directory."""
    for point in await asyncio.to_thread(_mounts_under, root):
        try:
            await _run("umount", str(point))
        except OSError:
            await _run("umount", "-l", str(point))
    await asyncio.to_thread(shutil.rmtree, root, True)

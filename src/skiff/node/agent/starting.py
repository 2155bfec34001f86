"""Starting one container of a pod: pull its image, build its config, create and start it on runc.

Every way this can fail ends as a waiting reason Kubernetes users know, with its message:
`ErrImagePull` (the registry's words), then `ImagePullBackOff` while the pull back-off lasts,
`ErrImageNeverPull`, `InvalidImageName`, `CreateContainerConfigError` (a missing ConfigMap,
Secret or key), `CreateContainerError` (its seccomp profile cannot be loaded), `RunContainerError`
(runc could not create or start it: a command that does not exist, say), `PostStartHookError` (its
postStart hook failed and it was killed, see `hooks.py`).
Events are recorded as the kubelet's (Pulling, Pulled, Failed, Created, Started, BackOff). The
image each container was made from is recorded beside the pod's logs so that
statuses keep their imageID across agent restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from skiff.client import EventRecorder
from skiff.images.errors import ImageError, ImageNotPresent, InvalidReference
from skiff.images.model import Image
from skiff.images.reference import parse_reference
from skiff.images.store import ImageStore, PullPolicy
from skiff.node.agent.backoff import Backoff, go_duration
from skiff.node.agent.hooks import post_start
from skiff.node.agent.podspec import ContainerConfigError, PodContext, build_config, pull_policy
from skiff.node.agent.seccomp import SeccompError, container_profile
from skiff.node.agent.volumes import VolumeError, container_mounts
from skiff.node.runtime.crilog import parse_line
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.types import Mount, Sandbox

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Waiting = tuple[str, str]


@dataclass
class PodEnv:
    """What starting any container of one pod needs."""

    pod: Obj
    sandbox: Sandbox
    ctx: PodContext
    volume_paths: Mapping[str, Path]
    pod_dir: Path
    credentials: Mapping[str, Any] | None = None


def log_path(pod_dir: Path, container: str, attempt: int) -> Path:
    """As the kubelet's /var/log/pods/<ns>_<name>_<uid>/<container>/<attempt>.log, under the pod's dir."""
    return pod_dir / "logs" / container / f"{attempt}.log"


def termination_file(pod_dir: Path, container: str, attempt: int) -> Path:
    """The host file bound at the container's terminationMessagePath (the kubelet's `containers/<name>/<id>`)."""
    return pod_dir / "containers" / container / f"{attempt}.termination-log"


def read_termination_message(path: Path) -> str:
    """What the process wrote to its termination message file, at most 4096 bytes (Kubernetes' limit)."""
    try:
        with path.open("rb") as f:
            return f.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = 80, limit: int = 2048) -> str:
    """The end of a container's CRI log as text: what FallbackToLogsOnError puts in terminated.message
    (the kubelet's last 80 lines, at most 2048 bytes)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 64 * 1024))
            raw = f.read()
    except OSError:
        return ""
    text = bytearray()
    for line in raw.splitlines()[-lines * 4 :]:
        try:
            entry = parse_line(line)
        except ValueError:
            continue
        text += entry.text + (b"" if entry.partial else b"\n")
    tail = b"".join(bytes(text).splitlines(keepends=True)[-lines:])[-limit:]
    return tail.decode("utf-8", "replace")


def _prepare_files(log: Path, message: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    message.parent.mkdir(parents=True, exist_ok=True)
    message.touch(mode=0o666)
    message.chmod(0o666)  # any user of the container may write it


def image_record(pod_dir: Path, container_id: str) -> Path:
    return pod_dir / "images" / f"{container_id}.json"


def _read_user_files(rootfs: Path) -> tuple[str, str]:
    def read(name: str) -> str:
        try:
            return (rootfs / "etc" / name).read_text()
        except OSError:
            return ""

    return read("passwd"), read("group")


def _write_record(path: Path, data: Obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def image_id(image: Image, ref: str, default_registry: str) -> str:
    """`<repository of ref>@sha256:...`, the imageID Kubernetes shows (the same image may be known by
    other names, from other registries: the container's own reference names it)."""
    try:
        return f"{parse_reference(ref, default_registry=default_registry).name}@{image.digest}"
    except InvalidReference:
        return image.digest


class Starter:
    """Starts containers; keeps the image pull back-off and its last error per container."""

    def __init__(
        self, runtime: Runtime, images: ImageStore, recorder: EventRecorder, *, seccomp_root: Path,
        seccomp_default: bool = False,
    ) -> None:
        """`seccomp_root`: where Localhost seccomp profiles are (the kubelet's <root-dir>/seccomp)."""
        self.runtime = runtime
        self.seccomp_root, self.seccomp_default = seccomp_root, seccomp_default
        self.images = images
        self.recorder = recorder
        self.pull_backoff = Backoff()
        self._pull_errors: dict[str, str] = {}
        self._deleting: dict[str, asyncio.Event] = {}  # pod uid -> set once the pod is being deleted
        self._events: dict[str, asyncio.Task[None]] = {}  # pod uid -> the last of its events being written
        self._user_files: dict[Path, tuple[str, str]] = {}  # image rootfs -> its /etc/passwd and /etc/group

    async def _event(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        """Record an event without waiting for the API (as the kubelet's recorder): the start goes on while
        it is written. A pod's events are written one after another, in order; `flush` waits for them."""
        uid = pod["metadata"]["uid"]
        previous = self._events.get(uid)

        async def write() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.recorder.record(pod, type=type_, reason=reason, message=message)

        self._events[uid] = asyncio.create_task(write(), name=f"event {reason} {uid}")

    async def flush(self, uid: str) -> None:
        """Wait until the pod's events are written (before a status that follows them is reported)."""
        pending = self._events.pop(uid, None)
        if pending is not None:
            await asyncio.gather(pending, return_exceptions=True)

    async def pull(self, env: PodEnv, container: Obj, key: str) -> Image | Waiting:
        ref = str(container.get("image") or "")
        pod = env.pod
        if self.pull_backoff.in_backoff_since(key, time.time()) and key in self._pull_errors:
            msg = f'Back-off pulling image "{ref}": ErrImagePull: {self._pull_errors[key]}'
            await self._event(pod, "Normal", "BackOff", f'Back-off pulling image "{ref}"')
            return "ImagePullBackOff", msg
        policy: PullPolicy = pull_policy(container)  # type: ignore[assignment]
        try:
            if policy != "Never" and (policy == "Always" or await self.images.get(ref) is None):
                await self._event(pod, "Normal", "Pulling", f'Pulling image "{ref}"')
                started = time.monotonic()
                image = await self.images.pull(ref, policy, env.credentials)
                took = time.monotonic() - started
                await self._event(pod, "Normal", "Pulled", f'Successfully pulled image "{ref}" in {took:.3f}s')
            else:
                image = await self.images.pull(ref, policy, env.credentials)
                await self._event(pod, "Normal", "Pulled", f'Container image "{ref}" already present on machine')
        except InvalidReference as e:
            msg = f'Failed to apply default image tag "{ref}": {e}'
            await self._event(pod, "Warning", "InspectFailed", msg)
            return "InvalidImageName", msg
        except ImageNotPresent as e:
            await self._event(pod, "Warning", "ErrImageNeverPull", str(e))
            return "ErrImageNeverPull", str(e)
        except ImageError as e:
            self.pull_backoff.next(key, time.time())
            self._pull_errors[key] = str(e)
            await self._event(pod, "Warning", "Failed", f'Failed to pull image "{ref}": {e}')
            await self._event(pod, "Warning", "Failed", "Error: ErrImagePull")
            return "ErrImagePull", str(e)
        self.pull_backoff.reset(key)
        self._pull_errors.pop(key, None)
        return image

    async def start(self, env: PodEnv, container: Obj, attempt: int, key: str) -> Waiting | None:
        """Pull, configure, create and start; None when it runs, else the waiting (reason, message)."""
        pod, name = env.pod, container.get("name", "")
        pulled = await self.pull(env, container, key)
        if isinstance(pulled, tuple):
            return pulled
        image = pulled
        try:
            mounts = container_mounts(pod, container, env.volume_paths)
            users = self._user_files.get(image.rootfs)
            if users is None:  # an image's rootfs never changes: its passwd and group are read once
                users = self._user_files[image.rootfs] = await asyncio.to_thread(_read_user_files, image.rootfs)
            passwd, group = users
            config = build_config(pod, container, image.config, env.ctx, mounts=mounts, attempt=attempt,
                                  passwd=passwd, group=group)  # fmt: skip
        except (ContainerConfigError, VolumeError) as e:
            await self._event(pod, "Warning", "Failed", f"Error: {e}")
            return "CreateContainerConfigError", str(e)
        try:
            profile = await container_profile(pod, container, self.seccomp_root, runtime_default=self.seccomp_default)
        except SeccompError as e:
            await self._event(pod, "Warning", "Failed", f"Error: {e}")
            return "CreateContainerError", str(e)
        message_file = termination_file(env.pod_dir, name, attempt)
        await asyncio.to_thread(_prepare_files, log_path(env.pod_dir, name, attempt), message_file)
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        mounts = [*config.mounts, Mount(destination=message_path, source=str(message_file))]
        config = replace(config, log_path=log_path(env.pod_dir, name, attempt), mounts=mounts, seccomp=profile)
        try:
            cid = await self.runtime.create_container(env.sandbox, config, image.rootfs)
        except Exception as e:
            log.info("creating container %s of %s failed: %s", name, pod["metadata"].get("name"), e)
            await self._event(pod, "Warning", "Failed", f"Error: {e}")
            return "RunContainerError", str(e)
        record = {
            "image": container.get("image", ""),
            "imageID": image_id(image, str(container.get("image") or ""), self.images.default_registry),
            "attempt": attempt,
        }
        await asyncio.to_thread(_write_record, image_record(env.pod_dir, cid), record)
        await self._event(pod, "Normal", "Created", f"Created container {name}")
        try:
            await self.runtime.start(cid)
        except Exception as e:
            await self._event(pod, "Warning", "Failed", f"Error: {e}")
            await self.runtime.remove(cid)
            return "RunContainerError", str(e)
        await self._event(pod, "Normal", "Started", f"Started container {name}")
        deleting = self._deleting.setdefault(pod["metadata"]["uid"], asyncio.Event())
        failure = await post_start(self.runtime, self.recorder, pod, container, cid, env.sandbox.ip, deleting)
        return ("PostStartHookError", failure) if failure is not None else None

    def interrupt(self, uid: str, *, only_running: bool = False) -> None:
        """The pod is being deleted: a postStart hook it is running is abandoned (kubelet cancels the sync).
        `only_running`: do not remember it for a hook that has not begun (the pod is gone already)."""
        event = self._deleting.get(uid) if only_running else self._deleting.setdefault(uid, asyncio.Event())
        if event is not None:
            event.set()

    def forget(self, prefix: str) -> None:
        self._deleting.pop(prefix.rstrip("/"), None)
        self._events.pop(prefix.rstrip("/"), None)
        self.pull_backoff.forget_prefix(prefix)
        for key in [k for k in self._pull_errors if k.startswith(prefix)]:
            del self._pull_errors[key]


def backoff_event(delay: float, name: str) -> str:
    return f"Back-off restarting failed container {name} in pod (delay {go_duration(delay)})"

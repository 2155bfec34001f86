"""An image's USER (`nobody`, `1000`, `app:staff`) → numeric ids, from the image's own /etc/passwd and /etc/group.

A runtime needs numbers; images name users. As runc and containerd do: an empty user is root;
a name must be in the image's passwd (else an error, which Kubernetes shows as
`CreateContainerConfigError`); a number may be absent from it (group then 0, home `/`); a group
part overrides the primary group; supplementary groups are those listing the user by name.
The files are read from the unpacked rootfs without following links out of it.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from skiff.images.errors import ImageError


class UnknownUser(ImageError):
    """The image's USER (or a pod's runAsUser name) is not in the image's /etc/passwd or /etc/group."""


@dataclass(frozen=True, slots=True)
class UserIds:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


async def resolve_user(rootfs: Path, user: str) -> UserIds:
    """Numeric ids and home of `user` (`name`, `uid`, `name:group`, `uid:gid`) in the image at `rootfs`."""
    return await asyncio.to_thread(_resolve, rootfs, user)


def _resolve(rootfs: Path, user: str) -> UserIds:
    name, _, group = (user or "0").partition(":")
    passwd = _table(rootfs, "passwd")
    entry = next((row for row in passwd if row[0] == name or (name.isdigit() and row[2] == name)), None)
    if entry is None and not name.isdigit():
        raise UnknownUser(f"unable to find user {name}: no matching entries in the image's /etc/passwd")
    uid = int(name) if name.isdigit() else int(entry[2]) if entry else 0
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else 0
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    groups = _table(rootfs, "group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            row = next((r for r in groups if r[0] == group), None)
            if row is None or not row[2].isdigit():
                raise UnknownUser(f"unable to find group {group}: no matching entries in the image's /etc/group")
            gid = int(row[2])
    user_name = entry[0] if entry else None
    extra = sorted(
        {int(r[2]) for r in groups if user_name and len(r) > 3 and r[2].isdigit() and user_name in r[3].split(",")}
        - {gid}
    )
    return UserIds(uid, gid, tuple(extra), home)


def _table(rootfs: Path, name: str) -> list[list[str]]:
    """Rows of rootfs/etc/NAME; empty when missing or when it (or /etc) is a link that could leave the image."""
    try:
        etc_fd = os.open(rootfs / "etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=etc_fd)
    except OSError:
        return []
    finally:
        os.close(etc_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return []
    with os.fdopen(fd, "rb") as f:
        text = f.read(1 << 20).decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

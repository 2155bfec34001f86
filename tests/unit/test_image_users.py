"""An image's USER resolved against the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skiff.images.users import UnknownUser, UserIds, resolve_user


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app,other\naudio:x:29:app\nnogroup:x:65534:\n")
    return tmp_path


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", UserIds(0, 0, (), "/root")),
        ("app", UserIds(1000, 1000, (29, 50), "/home/app")),
        ("1000", UserIds(1000, 1000, (29, 50), "/home/app")),
        ("app:staff", UserIds(1000, 50, (29,), "/home/app")),
        ("nobody:7", UserIds(65534, 7, (), "/nonexistent")),
        ("4242", UserIds(4242, 0, (), "/")),
        ("4242:4243", UserIds(4242, 4243, (), "/")),
    ],
)
async def test_resolve(rootfs: Path, user: str, expected: UserIds) -> None:
    assert await resolve_user(rootfs, user) == expected


async def test_unknown_names(rootfs: Path) -> None:
    with pytest.raises(UnknownUser, match="unable to find user www"):
        await resolve_user(rootfs, "www")
    with pytest.raises(UnknownUser, match="unable to find group wheel"):
        await resolve_user(rootfs, "app:wheel")


async def test_links_out_of_the_image_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("/etc/passwd", tmp_path / "etc" / "passwd")
    with pytest.raises(UnknownUser):
        await resolve_user(tmp_path, "root")  # the host's root is not the image's
    assert await resolve_user(tmp_path, "0") == UserIds(0, 0, (), "/")
    empty = tmp_path / "empty"
    empty.mkdir()
    os.symlink("/etc", empty / "etc")
    assert await resolve_user(empty, "") == UserIds(0, 0, (), "/")

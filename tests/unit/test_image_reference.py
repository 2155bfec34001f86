"""Image references: parsing, defaults and the errors of bad ones."""

from __future__ import annotations

import pytest

from skiff.images.errors import InvalidReference
from skiff.images.reference import Reference, is_loopback_host, parse_reference, registry_host

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", None, "busybox", "latest", None),
        ("busybox:1.36", None, "busybox", "1.36", None),
        ("library/busybox", None, "library/busybox", "latest", None),
        ("docker.io/library/busybox", "docker.io", "library/busybox", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/team/app:v1.2-rc_3", "localhost:5000", "team/app", "v1.2-rc_3", None),
        ("127.0.0.1:5000/busybox", "127.0.0.1:5000", "busybox", "latest", None),
        ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
        (f"busybox@{SHA}", None, "busybox", None, SHA),
        (f"reg.example/a/b:t@{SHA}", "reg.example", "a/b", "t", SHA),
        ("my-app__x-y/sub.dir", None, "my-app__x-y/sub.dir", "latest", None),
    ],
)
def test_parse(text: str, registry: str | None, repository: str, tag: str | None, digest: str | None) -> None:
    assert parse_reference(text) == Reference(registry, repository, tag, digest)


@pytest.mark.parametrize(
    "text",
    ["", " busybox", "Busybox", "busybox:", "busybox:-x", "a//b", "busybox@sha256:abc", f"busybox@{SHA[:-1]}X",
     "-a/b", "a_/b", "reg.example/", "x" * 256, "busybox:" + "t" * 129],
)  # fmt: skip
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference, match="invalid image reference"):
        parse_reference(text)


def test_uppercase_repository_is_named_in_the_error() -> None:
    with pytest.raises(InvalidReference, match="lower case"):
        parse_reference("reg.example/Team/app")


def test_unqualified_names_go_to_the_default_registry() -> None:
    ref = parse_reference("busybox", default_registry="http://127.0.0.1:5000/")
    assert str(ref) == "127.0.0.1:5000/busybox:latest"
    assert ref.pull_spec == "127.0.0.1:5000/busybox:latest"
    # qualified names are kept, even with a default registry
    assert str(parse_reference("docker.io/library/busybox", default_registry="127.0.0.1:5000")) == (
        "docker.io/library/busybox:latest"
    )
    assert parse_reference("busybox").qualified("reg:1").name == "reg:1/busybox"


def test_pull_spec_prefers_the_digest() -> None:
    ref = parse_reference(f"reg.example/app:v1@{SHA}")
    assert ref.pull_spec == f"reg.example/app@{SHA}"
    assert str(ref) == f"reg.example/app:v1@{SHA}"
    assert ref.with_tag("v2").pull_spec == "reg.example/app:v2"


def test_hosts() -> None:
    assert registry_host("https://reg.example:443/v2/") == "reg.example:443"
    assert registry_host("127.0.0.1:5000") == "127.0.0.1:5000"
    assert is_loopback_host("127.0.0.1:5000") and is_loopback_host("localhost") and is_loopback_host("[::1]:5000")
    assert not is_loopback_host("10.0.0.1:5000") and not is_loopback_host("reg.example")

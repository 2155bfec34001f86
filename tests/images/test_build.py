"""`build_image` from Dockerfiles, pushed to a real registry and pulled back into an ImageStore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skiff.images.build import build_image
from skiff.images.errors import BuildError, DockerfileError
from skiff.images.reference import parse_reference
from skiff.images.registry import RegistryInfo
from skiff.images.store import ImageStore


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


async def test_build_on_busybox_with_every_instruction(
    tmp_path: Path, registry: RegistryInfo, store: ImageStore
) -> None:
    ctx = write(
        tmp_path / "ctx",
        {
            "Dockerfile": """
                ARG GREETING=hello
                ARG BASE=busybox
                FROM $BASE
                ARG GREETING
                LABEL org.example.team="web team" version=1
                ENV APP_HOME=/srv/app GREETING="$GREETING world"
                WORKDIR $APP_HOME
                COPY index.html ./
                COPY site/ static/
                COPY --chown=nobody:nogroup --chmod=0700 secret.txt /etc/app/
                COPY run.sh /usr/local/bin/run
                EXPOSE 8080 53/udp
                USER nobody
                ENTRYPOINT ["/usr/local/bin/run"]
                CMD httpd -f -p 8080
            """,
            "index.html": "<h1>hi</h1>\n",
            "site/a.css": "body{}\n",
            "site/img/b.txt": "b\n",
            "secret.txt": "s3cret\n",
            "run.sh": '#!/bin/sh\nexec "$@"\n',
        },
    )
    (ctx / "run.sh").chmod(0o755)
    (ctx / "site" / "link").symlink_to("a.css")
    lines: list[str] = []
    ref = parse_reference("web:v1", default_registry=registry.host)
    result = await build_image(ctx, ref, registry=registry.host, progress=lines.append)
    assert result.digest.startswith("sha256:") and result.pushed
    assert any(line.startswith("step 7/15: WORKDIR") for line in lines), lines
    assert any("compressed" in line for line in lines)

    image = await store.pull("web:v1")
    assert image.digest == result.digest
    root = image.rootfs
    assert (root / "bin" / "busybox").is_file()  # the base image's layer
    assert (root / "srv" / "app" / "index.html").read_text() == "<h1>hi</h1>\n"
    assert (root / "srv" / "app" / "static" / "img" / "b.txt").read_text() == "b\n"
    assert os.readlink(root / "srv" / "app" / "static" / "link") == "a.css"
    assert os.access(root / "usr" / "local" / "bin" / "run", os.X_OK)
    secret = (root / "etc" / "app" / "secret.txt").stat()
    assert secret.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:  # a rootless unpack cannot give files away
        assert (secret.st_uid, secret.st_gid) == (65534, 65534)
    assert (root / "tmp").stat().st_mode & 0o1777 == 0o1777
    c = image.config
    assert c.entrypoint == ("/usr/local/bin/run",)
    assert c.cmd == ("/bin/sh", "-c", "httpd -f -p 8080")
    assert c.working_dir == "/srv/app"
    assert c.user == "nobody"
    assert c.exposed_ports == ("53/udp", "8080/tcp")
    assert c.labels["org.example.team"] == "web team" and c.labels["version"] == "1"
    env = c.env_dict()
    assert env["GREETING"] == "hello world" and env["APP_HOME"] == "/srv/app" and "PATH" in env


async def test_build_from_scratch_keeps_the_layout(tmp_path: Path, registry: RegistryInfo, store: ImageStore) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": 'FROM scratch\nCOPY hello /\nCMD ["/hello"]\n', "hello": "x"})
    out = tmp_path / "layout"
    ref = parse_reference("tiny", default_registry=registry.host)
    result = await build_image(ctx, ref, registry=registry.host, output=out)
    assert (out / "index.json").is_file() and (out / "oci-layout").is_file()
    image = await store.pull("tiny:latest")
    assert image.digest == result.digest
    assert sorted(p.name for p in image.rootfs.iterdir()) == ["hello"]
    assert image.config.cmd == ("/hello",) and image.config.entrypoint == ()


@pytest.mark.parametrize(
    ("dockerfile", "files", "message"),
    [
        ("FROM scratch\nCOPY a /a\nRUN make\n", {"a": "1"}, r"Dockerfile:3: RUN is not supported"),
        ("FROM scratch\n\nCOPY missing /m\n", {}, r"Dockerfile:3: COPY: COPY missing: no such file"),
        ("FROM scratch\nCOPY ../outside /o\n", {}, r"Dockerfile:2: COPY: .*outside the build context"),
        ("FROM scratch\nCOPY a b /dest\n", {"a": "1", "b": "2"}, r"Dockerfile:2: .*ending in '/'"),
        ("FROM scratch\nCOPY --chown=www a /a\n", {"a": "1"}, r"Dockerfile:2: .*unknown user 'www'"),
        ("FROM scratch\nEXPOSE 99999\n", {}, r"Dockerfile:2: .*port out of range"),
    ],
    ids=["run", "missing-file", "outside", "many-sources", "unknown-user", "bad-port"],
)
async def test_bad_builds_name_the_line(
    tmp_path: Path, registry: RegistryInfo, dockerfile: str, files: dict[str, str], message: str
) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": dockerfile, **files})
    (tmp_path / "outside").write_text("no")
    with pytest.raises(DockerfileError, match=message):
        await build_image(ctx, parse_reference("bad", default_registry=registry.host), registry=registry.host)


async def test_missing_base_image_is_a_clear_error(tmp_path: Path, registry: RegistryInfo) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM nothing-here:1\n"})
    with pytest.raises(BuildError, match=r"Dockerfile:1: FROM: cannot get the base image .*nothing-here:1.*unknown"):
        await build_image(ctx, parse_reference("x", default_registry=registry.host), registry=registry.host)

"""`skiff image build`: a Dockerfile (subset) and a context directory → an OCI image in the registry.

No container runs: FROM fetches the base image's layout with skopeo (or starts from nothing),
each COPY (and each WORKDIR) becomes one gzip layer written in Python, the other instructions
change the image config. The result is an OCI layout (kept with `output`) that skopeo pushes.
`FROM busybox` / `FROM python` build the built-in image first if the registry lacks it.
Progress ("step 2/5: COPY ...", layer sizes) goes to the `progress` callback.
"""

from __future__ import annotations

import asyncio
import posixpath
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from skiff.images import remote
from skiff.images.copying import ImageTree, plan_copy
from skiff.images.dockerfile import Dockerfile, Instruction, exec_form, expand_word, key_values, parse_dockerfile
from skiff.images.dockerfile import split_words as words
from skiff.images.errors import BuildError, DockerfileError
from skiff.images.layers import Entry, write_layer
from skiff.images.layout import Draft, Layout
from skiff.images.recipes import ensure_builtin_image, recipe_names
from skiff.images.reference import Reference, parse_reference, registry_host
from skiff.images.tools import Progress, ToolFailed, pull_error, require, run, tls_verify

_BASE_TAG = "base"
_BUILD_TAG = "build"


@dataclass(frozen=True, slots=True)
class BuildResult:
    reference: Reference
    digest: str
    layers: int
    pushed: bool


async def build_image(
    context: Path,
    dest: Reference,
    *,
    registry: str,
    dockerfile: Path | None = None,
    build_args: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    progress: Progress | None = None,
    push: bool = True,
    output: Path | None = None,
) -> BuildResult:
    """Build `context` (its `Dockerfile` unless `dockerfile` says) and push it as `dest`.

    `registry` is where `FROM name` looks for unqualified names. With `output`, the OCI layout is
    kept in that directory; `push=False` only builds.
    """
    say = progress or (lambda _line: None)
    file = dockerfile or context / "Dockerfile"
    try:
        text = await asyncio.to_thread(file.read_text)
    except OSError as e:
        raise BuildError(f"cannot read {file}: {e.strerror or e}") from e
    parsed = parse_dockerfile(text, path=str(file))
    workdir = output or Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="skiff-build-"))
    try:
        layout = await asyncio.to_thread(Layout(workdir).init)
        builder = _Builder(parsed, context, layout, registry, insecure, dict(build_args or {}), say)
        draft = await builder.run()
        desc = await asyncio.to_thread(draft.commit, layout, _BUILD_TAG)
        say(f"built {desc['digest']} ({len(draft.layers)} layers)")
        if push:
            say(f"pushing {dest}")
            digest = await remote.push(f"oci:{workdir}:{_BUILD_TAG}", dest, insecure=insecure, progress=progress)
            say(f"pushed {dest}")
        return BuildResult(dest, digest if push else desc["digest"], len(draft.layers), push)
    finally:
        if output is None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)


class _Builder:
    def __init__(
        self,
        dockerfile: Dockerfile,
        context: Path,
        layout: Layout,
        registry: str,
        insecure: bool | None,
        args: dict[str, str],
        say: Progress,
    ) -> None:
        self.dockerfile = dockerfile
        self.context = context
        self.layout = layout
        self.registry = registry
        self.insecure = insecure
        self.build_args = args
        self.args: dict[str, str] = {}
        self.global_args: dict[str, str] = {}
        self.say = say
        self.draft = Draft()
        self.tree = ImageTree()

    @property
    def vars(self) -> dict[str, str]:
        return {**self.args, **self.draft.env()}

    async def run(self) -> Draft:
        steps = self.dockerfile.instructions
        for n, ins in enumerate(steps, start=1):
            self.say(f"step {n}/{len(steps)}: {ins.keyword} {ins.text}")
            try:
                await self.step(ins)
            except DockerfileError:
                raise
            except (BuildError, ValueError) as e:  # name the line: a missing file, an unknown user...
                raise self.dockerfile.error(ins, str(e)) from e
        return self.draft

    async def step(self, ins: Instruction) -> None:
        k = ins.keyword
        if k == "FROM":
            self.global_args, self.args = self.args, {}
            await self.from_(ins)
        elif k == "ARG":
            for word in words(ins.text, self.vars):
                name, eq, default = word.partition("=")
                # as Docker: an ARG before FROM is only seen after FROM when declared again (`ARG NAME`)
                fallback = default if eq else self.global_args.get(name, "")
                self.args[name] = self.build_args.get(name, fallback)
        elif k == "COPY":
            await self.copy(ins)
        elif k == "ENV":
            for key, value in key_values(self.dockerfile, ins, self.vars):
                self.draft.set_env(key, value)
        elif k == "LABEL":
            labels = self.draft.settings.setdefault("Labels", {}) or {}
            labels.update(key_values(self.dockerfile, ins, self.vars))
            self.draft.settings["Labels"] = labels
        elif k == "WORKDIR":
            await self.workdir(ins)
        elif k in ("CMD", "ENTRYPOINT"):
            argv = exec_form(self.dockerfile, ins) or ["/bin/sh", "-c", ins.text]
            if k == "ENTRYPOINT":
                self.draft.settings["Entrypoint"] = argv
                self.draft.settings.pop("Cmd", None)  # as Docker: a new ENTRYPOINT drops the base image's CMD
            else:
                self.draft.settings["Cmd"] = argv
        elif k == "USER":
            self.draft.settings["User"] = expand_word(ins.text, self.vars)
        elif k == "EXPOSE":
            ports = self.draft.settings.setdefault("ExposedPorts", {}) or {}
            for word in words(ins.text, self.vars):
                ports.update({port: {} for port in _ports(word)})
            self.draft.settings["ExposedPorts"] = ports
        elif k == "VOLUME":
            vols = exec_form(self.dockerfile, ins) or words(ins.text, self.vars)
            self.draft.settings["Volumes"] = {**(self.draft.settings.get("Volumes") or {}), **{v: {} for v in vols}}
        elif k == "STOPSIGNAL":
            self.draft.settings["StopSignal"] = expand_word(ins.text, self.vars)
        if k not in ("FROM", "COPY", "WORKDIR", "ARG"):
            self.draft.history(f"{k} {ins.text}")

    async def from_(self, ins: Instruction) -> None:
        image = words(ins.text, self.global_args)[0]
        if image == "scratch":
            return
        ref = parse_reference(image, default_registry=self.registry)
        if ref.registry == registry_host(self.registry) and ref.repository in recipe_names():
            await ensure_builtin_image(str(ref), self.registry, insecure=self.insecure, progress=self.say)
        skopeo = require("skopeo", "skopeo")
        verify = tls_verify(ref.registry or "", self.insecure)
        argv = [skopeo, "copy", f"--src-tls-verify={'true' if verify else 'false'}", f"docker://{ref.pull_spec}"]
        try:
            await run([*argv, f"oci:{self.layout.path}:{_BASE_TAG}"], progress=self.say)
        except ToolFailed as e:
            error = pull_error(e, str(ref))
            raise BuildError(f"cannot get the base image {ref}: {error}") from error
        self.draft = await asyncio.to_thread(Draft.from_layout, self.layout, _BASE_TAG)
        self.tree = await asyncio.to_thread(ImageTree.from_layers, self.layout, self.draft.layers)
        self.say(f"base {ref}: {len(self.draft.layers)} layers")

    async def copy(self, ins: Instruction) -> None:
        args = exec_form(self.dockerfile, ins) or words(ins.text, self.vars)
        *sources, dest = args
        owner = self.tree.owner(expand_word(ins.flags["chown"], self.vars)) if "chown" in ins.flags else None
        mode = int(ins.flags["chmod"], 8) if "chmod" in ins.flags else None
        workdir = self.draft.settings.get("WorkingDir") or "/"
        entries = await asyncio.to_thread(
            plan_copy, self.tree, self.context, sources, dest, workdir=workdir, owner=owner, mode=mode
        )
        await self.layer(entries, f"COPY {ins.text}")

    async def workdir(self, ins: Instruction) -> None:
        path = expand_word(ins.text, self.vars)
        path = posixpath.normpath(posixpath.join(self.draft.settings.get("WorkingDir") or "/", path))
        self.draft.settings["WorkingDir"] = path
        rel = path.strip("/")
        if rel and not self.tree.is_dir(rel):
            await self.layer([*self.tree.missing_parents(rel), Entry(rel, "dir", mode=0o755)], f"WORKDIR {path}")
        else:
            self.draft.history(f"WORKDIR {path}")

    async def layer(self, entries: list[Entry], created_by: str) -> None:
        blob = await asyncio.to_thread(write_layer, self.layout.blobs, entries)
        await asyncio.to_thread(self.tree.add, entries)
        self.draft.add_layer(blob, created_by)
        files = sum(1 for e in entries if e.kind == "file")
        self.say(f"  layer {blob.digest[7:19]}: {files} files, {_size(blob.size)} compressed")


def _ports(word: str) -> list[str]:
    """`80`, `80/tcp`, `53/udp`, `8000-8002` → `["80/tcp"]`..."""
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise BuildError(f"EXPOSE {word}: protocol must be tcp, udp or sctp")
    low, _, high = port.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise BuildError(f"EXPOSE {word}: not a port or port range")
    first, last = int(low), int(high or low)
    if not 0 < first <= last <= 65535:
        raise BuildError(f"EXPOSE {word}: port out of range 1-65535")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB"

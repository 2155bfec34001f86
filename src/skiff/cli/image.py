"""`skiff image build/import/push/ls`: put images into the cluster's registry from the command line.

Kept apart from `skiff.cli.main` so the server's flags and these do not tangle; main registers
the subcommands with `add_image_commands` and hands parsed arguments to `run_image`. The
registry is `--registry URL` or `$SKIFF_REGISTRY`, else the bundled one on 127.0.0.1:5000.
Plain `host:port` and `http://` URLs are reached without TLS verification (the bundled registry
speaks HTTP); `https://` ones verify. Progress goes to stderr; what was pushed to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

REGISTRY_ENV = "SKIFF_REGISTRY"
DEFAULT_REGISTRY = "127.0.0.1:5000"


def add_image_commands(subparsers: Any) -> None:
    """Add `image` and its subcommands to the `skiff` parser's subparsers."""
    image = subparsers.add_parser("image", help="build, import, push and list images in the cluster's registry")
    commands = image.add_subparsers(dest="image_command", metavar="WHAT", required=True)

    build = commands.add_parser(
        "build",
        help="build an image from a Dockerfile (or a built-in recipe) and push it",
        description="Build DIR/Dockerfile (FROM scratch or a registry image; COPY, ENV, ARG, WORKDIR, "
        "ENTRYPOINT, CMD, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL; no RUN) and push it as NAME.",
    )
    build.add_argument("context", nargs="?", metavar="DIR", help="the build context (not with --recipe)")
    build.add_argument("-t", "--tag", required=True, metavar="NAME", help="image name, e.g. web:v1")
    build.add_argument("-f", "--file", metavar="FILE", help="the Dockerfile (default: DIR/Dockerfile)")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="set an ARG")
    build.add_argument("--recipe", metavar="NAME", help="build a built-in image instead: busybox, etcd or python")
    build.add_argument("--output", metavar="DIR", help="also keep the OCI image layout in DIR")
    build.add_argument("--no-push", action="store_true", help="build only (with --output)")
    _registry_flag(build)

    imp = commands.add_parser(
        "import",
        help="push the images of an OCI archive or docker archive (docker save) tarball",
        description="Push the images of TAR (OCI archive or docker archive) to the registry.",
    )
    imp.add_argument("archive", metavar="TAR")
    imp.add_argument("-t", "--tag", metavar="NAME", help="name of the image (default: the name in the archive)")
    _registry_flag(imp)

    push = commands.add_parser(
        "push",
        help="push an image from an OCI layout directory or any skopeo source",
        description="Push SOURCE as NAME. SOURCE is an OCI layout directory (DIR or DIR:TAG) or a skopeo "
        "transport reference (oci:..., oci-archive:..., docker-archive:..., docker://...).",
    )
    push.add_argument("source", metavar="SOURCE")
    push.add_argument("name", metavar="NAME")
    _registry_flag(push)

    ls = commands.add_parser("ls", help="list the registry's images", description="List every tag of the registry.")
    _registry_flag(ls)


def _registry_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        metavar="URL",
        default=os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY,
        help=f"the registry (default: ${REGISTRY_ENV}, else {DEFAULT_REGISTRY})",
    )


def run_image(args: argparse.Namespace) -> int:
    """Run a parsed `skiff image ...` command; the exit code."""
    from skiff.images.errors import ImageError

    try:
        return asyncio.run(_run(args))
    except ImageError as e:
        print(f"skiff: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    from skiff.images import remote
    from skiff.images.reference import parse_reference, registry_host

    registry = registry_host(args.registry)
    insecure = not args.registry.startswith("https://")
    cmd = args.image_command
    if cmd == "ls":
        images = await remote.list_images(args.registry)
        print(f"{'NAME':<40} {'TAG':<20} {'DIGEST':<20} SIZE")
        for i in images:
            print(f"{registry}/{i.repository:<{39 - len(registry)}} {i.tag:<20} {i.digest[7:19]:<20} {_size(i.size)}")
        return 0
    if cmd == "import":
        from skiff.images.importing import import_archive

        pushed = await import_archive(
            Path(args.archive), registry, name=args.tag, insecure=insecure, progress=_progress
        )
        for ref, digest in pushed:
            print(f"{ref}@{digest}" if digest else ref)
        return 0
    if cmd == "push":
        source = await asyncio.to_thread(_push_source, args.source)
        ref = parse_reference(args.name, default_registry=registry)
        digest = await remote.push(source, ref, insecure=insecure, progress=_progress)
        print(f"{ref}@{digest}" if digest else ref)
        return 0
    return await _build(args, registry, insecure)


async def _build(args: argparse.Namespace, registry: str, insecure: bool) -> int:
    from skiff.images.build import build_image
    from skiff.images.errors import BuildError
    from skiff.images.recipes import build_recipe
    from skiff.images.reference import parse_reference

    ref = parse_reference(args.tag, default_registry=registry)
    if args.recipe:
        if args.context:
            raise BuildError("give either DIR or --recipe, not both")
        digest = await build_recipe(args.recipe, ref, insecure=insecure, progress=_progress)
    else:
        if not args.context:
            raise BuildError("no build context: give DIR (or --recipe NAME)")
        if args.no_push and not args.output:
            raise BuildError("--no-push keeps nothing without --output DIR")
        build_args = dict(a.partition("=")[::2] for a in args.build_arg)
        result = await build_image(
            Path(args.context),
            ref,
            registry=registry,
            dockerfile=Path(args.file) if args.file else None,
            build_args=build_args,
            insecure=insecure,
            progress=_progress,
            push=not args.no_push,
            output=Path(args.output) if args.output else None,
        )
        digest = result.digest
    print(f"{ref}@{digest}" if digest else ref)
    return 0


def _push_source(source: str) -> str:
    """A layout directory (`DIR` or `DIR:TAG`) becomes `oci:...`; a skopeo transport reference stays."""
    if ":" not in source.split("/", 1)[0] or Path(source.split(":", 1)[0]).is_dir():
        return f"oci:{source}"
    return source


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"

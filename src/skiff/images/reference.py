"""Image references: `[registry/]repository[:tag][@algorithm:hex]`, parsed and normalised.

Pods, the CLI and the image store all name images the same way, so parsing lives in one place
and follows the grammar of the OCI distribution reference (lower-case path components separated
by `.`, `_`, `__` or dashes; a tag of up to 128 word characters, dots and dashes; a digest).

Normalisation differs from Kubernetes on purpose. Kubernetes (through Docker's rules) turns
`busybox` into `docker.io/library/busybox:latest`. A skiff cluster has no internet, so an
*unqualified* name (one whose first component is not a host: it has no `.` or `:` and is not
`localhost`) belongs to a configurable default registry, normally the cluster's own:
`busybox` → `127.0.0.1:5000/busybox:latest`. No `library/` prefix is added. Qualified names
(`docker.io/library/busybox`, `registry.example:5000/team/app`) are kept as written. As in
Kubernetes, a reference without tag or digest gets the tag `latest`; with a digest it is pulled
by the digest alone (the tag, if any, is only kept for display).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from skiff.images.errors import InvalidReference

DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference. `registry` is None for an unqualified name (see `qualified`)."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_registry: str | None = None) -> Reference:
        """Parse `text`; an unqualified name gets `default_registry` (if given) and `latest` if untagged."""
        return parse_reference(text, default_registry=default_registry)

    @property
    def name(self) -> str:
        """`registry/repository` (or the repository alone when unqualified)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def qualified(self, default_registry: str) -> Reference:
        """This reference with `default_registry` filled in when it names no registry."""
        return self if self.registry else replace(self, registry=default_registry)

    def with_registry(self, registry: str) -> Reference:
        return replace(self, registry=registry)

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    @property
    def pull_spec(self) -> str:
        """What a registry is asked for: `name@digest` when pinned, else `name:tag`."""
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_registry_host(component: str) -> bool:
    """Docker's rule: a first component is a registry host if it has `.` or `:`, is `localhost` or has capitals."""
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def parse_reference(text: str, *, default_registry: str | None = None) -> Reference:
    """Parse an image reference; raise `InvalidReference` naming what is wrong."""
    original = text
    if not text or text != text.strip():
        raise InvalidReference(f"invalid image reference {original!r}: empty or surrounded by spaces")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidReference(f"invalid image reference {original!r}: bad digest {digest!r}")
        if digest.startswith("sha256:") and not _SHA256_RE.fullmatch(digest):
            raise InvalidReference(
                f"invalid image reference {original!r}: a sha256 digest is 64 lower-case hex characters"
            )
    tag: str | None = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(f"invalid image reference {original!r}: bad tag {tag!r}")
    registry: str | None = None
    first, sep, rest = text.partition("/")
    if sep and is_registry_host(first):
        if not _DOMAIN_RE.fullmatch(first):
            raise InvalidReference(f"invalid image reference {original!r}: bad registry host {first!r}")
        registry, text = first, rest
    if not text:
        raise InvalidReference(f"invalid image reference {original!r}: no repository name")
    if not _PATH_RE.fullmatch(text):
        hint = " (repository names must be lower case)" if text != text.lower() else ""
        raise InvalidReference(f"invalid image reference {original!r}: bad repository name {text!r}{hint}")
    if len(text) + (len(registry) + 1 if registry else 0) > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid image reference {original!r}: name longer than {MAX_NAME_LENGTH}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    if registry is None and default_registry:
        registry = registry_host(default_registry)
    return Reference(registry=registry, repository=text, tag=tag, digest=digest)


def registry_host(url: str) -> str:
    """`http://127.0.0.1:5000/` → `127.0.0.1:5000`: the host:port part of a registry URL or address."""
    host = url.split("://", 1)[1] if "://" in url else url
    return host.rstrip("/").split("/", 1)[0]


def is_loopback_host(host: str) -> bool:
    """Whether a registry host is on this machine (Docker trusts such registries over plain HTTP)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name == "localhost" or name.startswith("127.") or name == "::1"

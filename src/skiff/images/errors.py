"""The errors of the image layer, one hierarchy so callers can tell bad input from a registry's refusal.

The node agent maps them to Kubernetes' container reasons: `InvalidReference` →
`InvalidImageName`, `ImageNotPresent` → `ErrImageNeverPull`, any `ImagePullError` →
`ErrImagePull` (then `ImagePullBackOff`) with `str(error)` — the registry's own words — as the
message.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base of every error of `skiff.images`."""


class InvalidReference(ImageError, ValueError):
    """An image reference that does not parse."""


class ImageNotPresent(ImageError):
    """imagePullPolicy Never and the image is not in the node's store."""


class ImagePullError(ImageError):
    """A registry refused or failed to give an image; the message carries the registry's reason."""

    def __init__(self, message: str, *, reference: str = "") -> None:
        super().__init__(message)
        self.reference = reference


class ImageNotFound(ImagePullError):
    """The registry does not know the repository, tag or digest (`manifest unknown`, `name unknown`)."""


class RegistryAuthError(ImagePullError):
    """The registry wants credentials, or rejected the ones given."""


class RegistryUnavailable(ImagePullError):
    """The registry could not be reached (refused connection, DNS, TLS)."""


class ImagePushError(ImageError):
    """Pushing to a registry failed."""


class RegistryError(ImageError):
    """The bundled registry could not be started."""


class BuildError(ImageError):
    """An image could not be built (missing files, a COPY outside the context, an unknown user...)."""


class DockerfileError(BuildError):
    """A Dockerfile that skiff cannot build; names the file and line."""

    def __init__(self, message: str, *, line: int | None = None, path: str = "Dockerfile") -> None:
        where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.line = line
        self.path = path


class ArchiveError(ImageError):
    """A tarball that is neither an OCI archive nor a docker archive, or names no image."""

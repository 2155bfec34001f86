"""Running skopeo and umoci as asyncio subprocesses, and turning their failures into typed errors.

skopeo moves images between registries, OCI layouts and archives; umoci unpacks a layout into a
root filesystem. Both are run without blocking the event loop; their progress lines go to a
callback and their last error line (skopeo's `level=fatal msg="..."`) becomes the message of a
typed error, so a pod's status can show the registry's reason.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable, Sequence

from skiff.images.errors import (
    ImageError,
    ImageNotFound,
    ImagePullError,
    RegistryAuthError,
    RegistryUnavailable,
)
from skiff.images.reference import is_loopback_host

Progress = Callable[[str], None]

_FATAL_RE = re.compile(r'level=fatal msg="(?P<msg>(?:[^"\\]|\\.)*)"')
_NOT_FOUND = ("manifest unknown", "name unknown", "not found", "blob unknown", "does not exist")
_AUTH = ("unauthorized", "authentication required", "denied", "invalid username/password", "forbidden")
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "pinging container registry", "tls:", "x509:")


class ToolFailed(ImageError):
    """skopeo or umoci exited non-zero; `message` is its own last error line."""

    def __init__(self, tool: str, returncode: int, message: str) -> None:
        super().__init__(f"{tool} failed (exit {returncode}): {message}")
        self.tool = tool
        self.returncode = returncode
        self.message = message


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ImageError(f"{binary} not found on PATH: install the Debian package {package}")
    return path


def tls_verify(host: str, insecure: bool | None = None) -> bool:
    """Whether to verify TLS for a registry: not for loopback registries (as Docker) or ones marked insecure.

    With verification off, skopeo tries HTTPS without checking the certificate and falls back to
    plain HTTP, which is how nodes reach the bundled (HTTP) registry.
    """
    if insecure is not None:
        return not insecure
    return not is_loopback_host(host)


async def run(argv: Sequence[str], *, progress: Progress | None = None) -> str:
    """Run a command; return its stdout. Each stdout line also goes to `progress`. Raise `ToolFailed`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []

    async def read_stdout() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            out.append(line)
            if progress is not None and line.strip():
                progress(line)

    try:
        _, err = await asyncio.gather(read_stdout(), proc.stderr.read())
        rc = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if rc != 0:
        raise ToolFailed(argv[0].rsplit("/", 1)[-1], rc, error_message(err.decode(errors="replace")))
    return "\n".join(out)


def error_message(stderr: str) -> str:
    """The useful part of a tool's stderr: skopeo's fatal `msg`, else its last non-empty line."""
    fatal = _FATAL_RE.findall(stderr)
    if fatal:
        return str(fatal[-1]).replace('\\"', '"').replace("\\\\", "\\")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def pull_error(failure: ToolFailed, reference: str) -> ImagePullError:
    """Classify a failed skopeo pull: not found, auth, unreachable, or another pull error."""
    msg = failure.message
    text = msg.lower()
    # skopeo prefixes the registry's answer with context; keep the whole chain, it names the image
    if any(word in text for word in _AUTH):
        return RegistryAuthError(msg, reference=reference)
    if any(word in text for word in _NOT_FOUND):
        return ImageNotFound(msg, reference=reference)
    if any(word in text for word in _UNREACHABLE):
        return RegistryUnavailable(msg, reference=reference)
    return ImagePullError(msg, reference=reference)

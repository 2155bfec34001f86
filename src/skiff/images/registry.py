"""The cluster's image registry: Debian's `docker-registry` (CNCF distribution) as a child process.

`skiff server` runs one so that a cluster without internet has somewhere to keep its images:
`skiff image build/import` push to it and node agents pull from it. `run_registry` writes its
config.yml (blobs under DATA_DIR/registry/storage, deletes allowed so images can be removed),
starts it, waits until `GET /v2/` answers and stops it (SIGTERM, then SIGKILL) on exit.

Trust: the registry speaks plain HTTP and, by default, listens on loopback only. Nodes reach it
with TLS verification off (skopeo `--src-tls-verify=false`, which tries HTTPS and falls back to
HTTP); `skiff.images.tools.tls_verify` does that by itself for loopback hosts, as Docker treats
127.0.0.0/8 as an insecure registry, and the node's `ImageStore(insecure_registries=...)` names
any other address (e.g. the server's node address when agents on other machines pull from it).
Anyone who can reach the port can push and pull; put it on a trusted network only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from skiff.images.errors import RegistryError
from skiff.images.reference import registry_host
from skiff.images.tools import require
from skiff.lifetime import die_with_parent

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:5000"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RegistryInfo:
    """A running registry: `url` (`http://host:port`) and `host` (`host:port`, what image names start with)."""

    url: str
    host: str
    pid: int
    config: Path
    log: Path


def registry_config(storage: Path, address: str) -> dict[str, object]:
    """The registry's config.yml as a dict: filesystem storage, deletes on, HTTP on `address`."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "skiff-registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": True, "age": "24h", "interval": "1h", "dryrun": False}},
        },
        "http": {"addr": address, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


@contextlib.asynccontextmanager
async def run_registry(data_dir: Path | str, address: str = DEFAULT_ADDRESS) -> AsyncIterator[RegistryInfo]:
    """Run docker-registry with its state under `data_dir`/registry until the block ends."""
    binary = require("docker-registry", "docker-registry")
    root = Path(data_dir) / "registry"
    config_path = root / "config.yml"
    log_path = root / "registry.log"
    text = yaml.safe_dump(registry_config(root / "storage", address), sort_keys=False)

    def prepare() -> None:
        (root / "storage").mkdir(parents=True, exist_ok=True)
        config_path.write_text(text)

    await asyncio.to_thread(prepare)
    await asyncio.to_thread(_check_free, address)
    log_file = await asyncio.to_thread(open, log_path, "ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "serve",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C of the terminal reaches skiff, which stops it in order
            preexec_fn=die_with_parent,  # and a SIGKILLed skiff leaves no registry holding the port
        )
    finally:
        log_file.close()
    host = registry_host(address)
    if host.startswith((":", "0.0.0.0:")):  # listening on every address: reach it through loopback
        host = "127.0.0.1:" + host.rsplit(":", 1)[1]
    info = RegistryInfo(url=f"http://{host}", host=host, pid=proc.pid, config=config_path, log=log_path)
    try:
        await _wait_ready(proc, info)
        log.info("registry listening on %s (storage %s)", info.url, root / "storage")
        yield info
    finally:
        await _stop(proc)


def _check_free(address: str) -> None:
    """Fail clearly when the port is taken: the registry would exit, but another one might answer for it."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            raise RegistryError(f"cannot start the registry on {address}: {e.strerror or e}") from e


async def _wait_ready(proc: asyncio.subprocess.Process, info: RegistryInfo) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if proc.returncode is not None:
                raise RegistryError(
                    f"docker-registry exited with code {proc.returncode} before answering: {await _tail(info.log)}"
                )
            try:
                async with session.get(f"{info.url}/v2/") as resp:
                    if resp.status == 200:
                        return
                    last = f"GET /v2/ answered {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                last = str(e) or type(e).__name__
            if loop.time() > deadline:
                await _stop(proc)
                raise RegistryError(f"docker-registry did not answer on {info.url} within {READY_TIMEOUT:.0f}s: {last}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def _tail(path: Path, lines: int = 5) -> str:
    def read() -> str:
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    return await asyncio.to_thread(read)

"""Fixtures for the storage suite: one `backend` fixture parametrized over SQLite and a real etcd.

The etcd fixture starts a throw-away `etcd` (Debian's etcd-server) on free
loopback ports with a temporary data dir and kills it afterwards. A missing
binary is a test FAILURE, not a skip: CI installs etcd-server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from skiff.storage.etcd import EtcdBackend
from skiff.storage.interface import Backend, Event
from skiff.storage.sqlite import SQLiteBackend
from tests.ports import free_port

ETCD_START_TIMEOUT = 20.0


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def _answers(url: str, context: ssl.SSLContext | None) -> bool:
    request = urllib.request.Request(f"{url}/v3/kv/range", data=b'{"key":"AA=="}', method="POST")
    try:
        with urllib.request.urlopen(request, timeout=1, context=context) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_etcd(
    data_dir: str,
    *,
    client_port: int = 0,
    tls: TLSFiles | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a single-member etcd in `data_dir`; returns (process, client URL) once it answers.

    With `tls`, clients must speak https and present a certificate signed by the test CA.
    """
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail(
            "the etcd binary is not installed: `apt-get install etcd-server` (CI installs it); "
            "the etcd storage tests cannot run without it",
            pytrace=False,
        )
    scheme = "https" if tls else "http"
    client_url = f"{scheme}://127.0.0.1:{client_port or free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    tls_args: list[str] = []
    context: ssl.SSLContext | None = None
    if tls:
        tls_args = [
            f"--cert-file={tls.server_cert}",
            f"--key-file={tls.server_key}",
            f"--trusted-ca-file={tls.ca}",
            "--client-cert-auth",
        ]
        context = ssl.create_default_context(cafile=tls.ca)
        context.load_cert_chain(tls.client_cert, tls.client_key)
    log = open(Path(data_dir).with_suffix(".log"), "wb")
    proc = subprocess.Popen(
        [
            binary,
            "--name=skiff-test",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=skiff-test={peer_url}",
            *tls_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + ETCD_START_TIMEOUT
    while not _answers(client_url, context):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            output = Path(data_dir).with_suffix(".log").read_text(errors="replace")[-2000:]
            pytest.fail(f"etcd did not come up on {client_url}:\n{output}", pytrace=False)
        time.sleep(0.05)
    return proc, client_url


@pytest.fixture
def etcd_server() -> Iterator[str]:
    """URL of a fresh etcd; data on tmpfs when there is one (etcd fsyncs every write)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="skiff-etcd-", dir=base)
    proc, url = start_etcd(os.path.join(workdir, "data"))
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    store: Backend
    if request.param == "sqlite":
        store = SQLiteBackend(str(tmp_path / "db" / "state.db"))
    else:
        store = EtcdBackend([request.getfixturevalue("etcd_server")])
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def take(stream: AsyncIterator[list[Event]], count: int, within: float = 5.0) -> list[Event]:
    """Read batches from a watch until `count` events arrived (TimeoutError after `within` s)."""
    events: list[Event] = []
    async with asyncio.timeout(within):
        while len(events) < count:
            events.extend(await anext(stream))
    return events

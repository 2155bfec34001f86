"""etcd-only behaviour: endpoint failover, unreachable clusters, TLS, watches surviving a restart."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.storage.etcd import EtcdBackend
from skiff.storage.interface import Unavailable
from tests.ports import free_port

from .conftest import TLSFiles, start_etcd, take

pytestmark = pytest.mark.etcd


@pytest.fixture
def workdir() -> Iterator[str]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="skiff-etcd-", dir=base)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_fails_over_to_the_next_endpoint(etcd_server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdBackend([dead, etcd_server]) as store:
        kv = await store.create("/a", b"1")
        assert await store.get("/a") == kv


async def test_unreachable_cluster_is_unavailable() -> None:
    store = EtcdBackend([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    with pytest.raises(Unavailable):
        await store.start()
    await store.close()


async def test_watch_resumes_after_etcd_restart(workdir: str) -> None:
    data = os.path.join(workdir, "data")
    proc, url = start_etcd(data)
    port = int(url.rsplit(":", 1)[1])
    try:
        async with EtcdBackend([url]) as store:
            first = await store.create("/r/a", b"1")
            async with aclosing(store.watch("/r/", first.mod_revision)) as stream:
                assert [e.kv for e in await take(stream, 1)] == [first]
                proc.kill()
                proc.wait()
                proc, _ = start_etcd(data, client_port=port)
                second = await store.create("/r/b", b"2")
                assert [e.kv for e in await take(stream, 1, within=60)] == [second]
    finally:
        proc.kill()
        proc.wait()


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    ca_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _write_pki(directory: Path) -> TLSFiles:
    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            (directory / f"{name}.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("skiff-test-ca", ca_key, None, ca_key)
    save("ca", ca)
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        save(name, _cert(f"skiff-test-{name}", key, ca, ca_key), key)
    d = str(directory)
    return TLSFiles(
        ca=f"{d}/ca.crt",
        server_cert=f"{d}/server.crt",
        server_key=f"{d}/server.key",
        client_cert=f"{d}/client.crt",
        client_key=f"{d}/client.key",
    )


async def test_https_with_ca_and_client_certificate(workdir: str) -> None:
    tls = _write_pki(Path(workdir))
    proc, url = start_etcd(os.path.join(workdir, "data"), tls=tls)
    try:
        assert url.startswith("https://")
        async with EtcdBackend([url], ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key) as store:
            kv = await store.create("/tls", b"secret")
            assert await store.get("/tls") == kv
            async with aclosing(store.watch("/tls", kv.mod_revision)) as stream:
                assert [e.kv for e in await take(stream, 1)] == [kv]
        # without a client certificate the server refuses the connection
        with pytest.raises(Unavailable):
            async with EtcdBackend([url], ca_file=tls.ca, request_timeout=5):
                pass
    finally:
        proc.kill()
        proc.wait()
        await asyncio.sleep(0)

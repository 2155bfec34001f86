"""Joining a cluster with a join token: Kubernetes' kubelet TLS bootstrap, k3s's token check.

`skiff agent --server https://HOST:6443 --token K10<ca sha256>::<id>:<secret>` on a machine
that has no credentials yet:

1. fetch the server's CA from the unauthenticated `/cacerts` (over TLS that is not verified
   yet) and refuse unless its sha256 is the one the token names: a server that cannot show
   the right CA is not the cluster the token came from;
2. from then on verify the server against that CA, and authenticate with the token's
   `<id>:<secret>` as the bootstrap identity `system:bootstrap:<id>`;
3. make a key pair here (the private key never leaves the machine) and create a
   certificates.k8s.io/v1 CertificateSigningRequest for `system:node:<name>` in
   `system:nodes`, signer `kubernetes.io/kube-apiserver-client-kubelet`;
4. wait until the controller manager approved and signed it, then write the node's own
   kubeconfig (mode 0600) into the state dir; later starts reuse it and need no token.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import ssl
from pathlib import Path

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skiff.api import csr as csrs
from skiff.api import errors, jointoken
from skiff.client import Client, ClientConfig, ServerUnreachable
from skiff.client.resources import CSRS

log = logging.getLogger(__name__)

KUBECONFIG_NAME = "kubeconfig.yaml"
WAIT_TIMEOUT = 300.0  # seconds to wait for approval and signing
POLL_INTERVAL = 0.5
USAGES = ["digital signature", "client auth"]


class BootstrapError(Exception):
    """Joining failed; the message says why and what to check."""


async def ensure_kubeconfig(server: str, token_text: str, node_name: str, state_dir: Path) -> Path:
    """The node's kubeconfig in `state_dir`: the one written before, else bootstrapped with the token."""
    path = state_dir / KUBECONFIG_NAME
    if await asyncio.to_thread(path.is_file):
        log.info("using the node credentials in %s", path)
        return path
    if not token_text:
        raise BootstrapError(f"no credentials in {path} yet: pass --token (the server's DATA_DIR/token)")
    try:
        token = jointoken.parse(token_text)
    except jointoken.TokenFormatError as e:
        raise BootstrapError(f"invalid --token: {e}") from None
    server = server.rstrip("/")
    ca_pem = await fetch_ca(server)
    if not token.ca_matches(ca_pem):
        raise BootstrapError(
            f"the CA of {server} (sha256 {jointoken.ca_hash(ca_pem)}) is not the one the join token names "
            f"(sha256 {token.ca_hash}): wrong server, or a token of another cluster; refusing to join"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = await request_certificate(server, ca_pem, token, node_name, key)
    await asyncio.to_thread(write_kubeconfig, path, server=server, ca_pem=ca_pem, cert_pem=cert_pem, key=key)
    log.info("joined %s as node %s; credentials in %s", server, node_name, path)
    return path


async def fetch_ca(server: str) -> bytes:
    """The server's CA certificate (PEM) from /cacerts, before anything about the server is trusted."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(server + "/cacerts", ssl=unverified) as resp,
        ):
            body = await resp.read()
            if resp.status != 200:
                raise BootstrapError(f"GET {server}/cacerts answered {resp.status}: is this a skiff server?")
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise BootstrapError(f"cannot reach {server}: {e}") from None
    if b"-----BEGIN CERTIFICATE-----" not in body:
        raise BootstrapError(f"{server}/cacerts did not answer a PEM certificate")
    return body


async def request_certificate(
    server: str, ca_pem: bytes, token: jointoken.JoinToken, node_name: str, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """Create the node-client CSR as the bootstrap identity and wait for its signed certificate (PEM)."""
    user = csrs.NODE_USER_PREFIX + node_name
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, csrs.NODES_GROUP),
                         x509.NameAttribute(NameOID.COMMON_NAME, user)])  # fmt: skip
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode(),
            "signerName": csrs.KUBELET_CLIENT_SIGNER,
            "usages": USAGES,
        },
    }
    context = ssl.create_default_context(cadata=ca_pem.decode())  # from now on: the CA the token vouches for
    config = ClientConfig(server=server, ssl_context=context, token=token.bearer)
    async with Client(config, user_agent=f"skiff-agent/{node_name} bootstrap") as client:
        try:
            created = await client.create(CSRS, body)
        except errors.Unauthorized:
            raise BootstrapError(
                f"{server} refused the join token (401 Unauthorized): check --token against the server's DATA_DIR/token"
            ) from None
        except (errors.StatusError, ServerUnreachable) as e:
            raise BootstrapError(f"cannot create the certificate signing request: {e}") from None
        name = created["metadata"]["name"]
        log.info("certificate signing request %s created for %s; waiting for approval", name, user)
        return await _wait_signed(client, name)


async def _wait_signed(client: Client, name: str) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_TIMEOUT
    while loop.time() < deadline:
        try:
            csr = await client.get(CSRS, name)
        except (errors.StatusError, ServerUnreachable) as e:
            log.warning("reading certificate signing request %s: %s", name, e)
            await asyncio.sleep(POLL_INTERVAL)
            continue
        for ctype in (csrs.DENIED, csrs.FAILED):
            cond = next((c for c in (csr.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)
            if cond is not None:
                why = cond.get("message") or cond.get("reason") or ""
                raise BootstrapError(f"certificate signing request {name} was {ctype.lower()}: {why}")
        certificate = (csr.get("status") or {}).get("certificate")
        if certificate:
            return base64.b64decode(certificate)
        await asyncio.sleep(POLL_INTERVAL)
    raise BootstrapError(
        f"certificate signing request {name} was not signed within {WAIT_TIMEOUT:.0f} s: "
        f"is the controller manager running? (`kubectl certificate approve {name}` approves it by hand)"
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, cert_pem: bytes, key: ec.EllipticCurvePrivateKey
) -> None:
    """The node's kubeconfig, written atomically with mode 0600 (blocking)."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "skiff", "cluster": {"certificate-authority-data": b64(ca_pem), "server": server}}],
        "users": [
            {"name": "node", "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}
        ],
        "contexts": [{"name": "skiff", "context": {"cluster": "skiff", "user": "node"}}],
        "current-context": "skiff",
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(doc, sort_keys=False))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

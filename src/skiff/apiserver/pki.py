"""The cluster's certificates and credentials, created on first start and reused after.

Like k3s, `skiff server` needs nothing prepared beforehand: the first start
makes a private CA, a serving certificate for every name and address the
host can be reached by, an admin client certificate (system:masters), a
kubeconfig that uses it, a static token file in Kubernetes'
`--token-auth-file` format and a join token for agents. Later starts reuse
them, regenerating only what is missing, broken, about to expire or (for the
serving certificate) lacking a name or address the host now has.

Everything here is plain blocking code (key generation, file I/O, reading
the host's addresses); the server calls it through `asyncio.to_thread`. The
certificates themselves are made and checked by `certs.py`.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import logging
import os
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from skiff.api import jointoken
from skiff.apiserver.certs import (
    ensure_ca,
    ensure_client_cert,
    ensure_serving_cert,
    load_pair,
    make_private_dir,
    required_sans,
    write_atomic,
)

log = logging.getLogger(__name__)

ADMIN_USER = "system:admin"
MASTERS_GROUP = "system:masters"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

CLUSTER_NAME = "skiff"
KUBECONFIG_USER = "admin"


@dataclass(frozen=True, slots=True)
class PKIPaths:
    """Where the server's credentials live under the data directory."""

    data_dir: Path

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.tls_dir / "serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.tls_dir / "serving.key"

    @property
    def admin_cert(self) -> Path:
        return self.tls_dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.tls_dir / "admin.key"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def tokens(self) -> Path:
        return self.data_dir / "tokens.csv"

    @property
    def join_token(self) -> Path:
        return self.data_dir / "token"


def ensure_pki(
    data_dir: str | os.PathLike[str],
    *,
    server_url: str,
    extra_sans: Iterable[str] = (),
) -> PKIPaths:
    """Create (or reuse) every credential under `data_dir`; write the admin kubeconfig.

    `server_url` is what the kubeconfig points at (e.g. `https://127.0.0.1:6443`);
    `extra_sans` are names or addresses (`--tls-san`) the serving certificate
    must also carry. Blocking: call through `asyncio.to_thread`.
    """
    paths = PKIPaths(Path(data_dir))
    make_private_dir(paths.data_dir)
    make_private_dir(paths.tls_dir)

    ca = ensure_ca(paths.ca_cert, paths.ca_key)
    ensure_serving_cert(paths.serving_cert, paths.serving_key, ca, required_sans(extra_sans))
    admin_cert, admin_key = ensure_client_cert(paths.admin_cert, paths.admin_key, ca, user=ADMIN_USER,
                                               groups=[MASTERS_GROUP])  # fmt: skip
    write_kubeconfig(paths, server_url=server_url, ca_cert=ca[0], cert=admin_cert, key=admin_key)
    ensure_token_file(paths)
    ensure_join_token(paths)
    return paths


# -- kubeconfig and tokens ---------------------------------------------------------------------


def write_kubeconfig(
    paths: PKIPaths,
    *,
    server_url: str,
    ca_cert: x509.Certificate,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    path: Path | None = None,
    user: str = KUBECONFIG_USER,
) -> None:
    """Write a kubeconfig (the admin one unless `path`; mode 0600: it holds the key); rewritten only when it
    changes."""
    target = path or paths.kubeconfig
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "certificate-authority-data": _b64(ca_cert.public_bytes(serialization.Encoding.PEM)),
                    "server": server_url,
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert.public_bytes(serialization.Encoding.PEM)),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    data = yaml.safe_dump(config, sort_keys=False).encode()
    with contextlib.suppress(OSError):
        if target.read_bytes() == data:
            return
    write_atomic(target, data, mode=0o600)


def ensure_token_file(paths: PKIPaths) -> None:
    """Create the static token file with one admin token (system:masters) if it does not exist."""
    if paths.tokens.exists():
        return
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([secrets.token_hex(32), "admin", str(uuid.uuid4()), MASTERS_GROUP])
    write_atomic(paths.tokens, buf.getvalue().encode(), mode=0o600)


def ensure_join_token(paths: PKIPaths) -> jointoken.JoinToken:
    """The token agents present to join the cluster (`K10<CA sha256>::node:<secret>`), mode 0600.

    Created on first start; later starts keep its id and secret and refresh the CA hash should the
    CA have been replaced (an older plain-secret token file is rewritten in this format).
    """
    ca_digest = jointoken.ca_hash(paths.ca_cert.read_bytes())
    existing = ""
    with contextlib.suppress(FileNotFoundError):
        existing = paths.join_token.read_text().strip()
    try:
        old = jointoken.parse(existing)
        token = jointoken.JoinToken(ca_digest, old.token_id, old.secret)
    except jointoken.TokenFormatError:
        secret = existing if existing and ":" not in existing else secrets.token_hex(16)
        token = jointoken.JoinToken(ca_digest, jointoken.DEFAULT_ID, secret)
    if str(token) != existing:
        write_atomic(paths.join_token, (str(token) + "\n").encode(), mode=0o600)
    return token


def load_ca(paths: PKIPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The cluster CA `ensure_pki` made (OSError if there is none)."""
    ca = load_pair(paths.ca_cert, paths.ca_key)
    if ca is None:
        raise OSError(f"no cluster CA in {paths.tls_dir}")
    return ca


def node_credentials(paths: PKIPaths, node_name: str, *, server_url: str, kubeconfig: Path) -> None:
    """A client certificate for the local node agent (CN=system:node:<name>, O=system:nodes) and a
    kubeconfig using it at `kubeconfig` (mode 0600), reused while it is valid and names this node."""
    ca = load_ca(paths)
    cert, key = ensure_client_cert(paths.tls_dir / "node.crt", paths.tls_dir / "node.key", ca,
                                   user=NODE_USER_PREFIX + node_name, groups=[NODES_GROUP])  # fmt: skip
    make_private_dir(kubeconfig.parent)
    write_kubeconfig(paths, server_url=server_url, ca_cert=ca[0], cert=cert, key=key, path=kubeconfig, user="node")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

"""The cluster's certificates and credentials, created on first start and reused after.

Like k3s, `skiff server` needs nothing prepared beforehand: the first start
makes a private CA, a serving certificate for every name and address the
host can be reached by, an admin client certificate (system:masters), a
kubeconfig that uses it, a static token file in Kubernetes'
`--token-auth-file` format and a join token for agents. Later starts reuse
them, regenerating only what is missing, broken, about to expire or (for the
serving certificate) lacking a name or address the host now has.

Everything here is plain blocking code (key generation, file I/O, reading
the host's addresses); the server calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import io
import ipaddress
import logging
import os
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.api import jointoken
from skiff.apiserver.hostinfo import IPAddress as IPAddress
from skiff.apiserver.hostinfo import host_addresses as host_addresses
from skiff.apiserver.hostinfo import host_names as host_names

log = logging.getLogger(__name__)

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# a leaf certificate with less than this left is renewed on start
RENEW_BEFORE = datetime.timedelta(days=90)

ADMIN_USER = "system:admin"
MASTERS_GROUP = "system:masters"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

# names a pod uses to reach the API (the `kubernetes` Service) and its ClusterIP
# (the first address of the default service CIDR 10.43.0.0/16, as in k3s)
IN_CLUSTER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
IN_CLUSTER_IPS = (ipaddress.ip_address("10.43.0.1"),)
_Network = (ipaddress.IPv4Network, ipaddress.IPv6Network)

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


@dataclass(frozen=True, slots=True)
class SubjectAltNames:
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...]


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
    _make_private_dir(paths.data_dir)
    _make_private_dir(paths.tls_dir)

    ca_cert, ca_key = ensure_ca(paths)
    sans = required_sans(extra_sans)
    ensure_serving_cert(paths, ca_cert, ca_key, sans)
    admin_cert, admin_key = ensure_admin_cert(paths, ca_cert, ca_key)
    write_kubeconfig(paths, server_url=server_url, ca_cert=ca_cert, cert=admin_cert, key=admin_key)
    ensure_token_file(paths)
    ensure_join_token(paths)
    return paths


# -- certificates ------------------------------------------------------------------------------


def ensure_ca(paths: PKIPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA, or create it (10 years) when absent or unreadable."""
    loaded = _load_pair(paths.ca_cert, paths.ca_key)
    if loaded is not None:
        cert, key = loaded
        constraints = _basic_constraints(cert)
        if constraints is not None and constraints.ca and not _expires_within(cert, RENEW_BEFORE):
            return cert, key
        log.warning("CA certificate %s is not usable; creating a new CA", paths.ca_cert)
    key = _new_key()
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skiff-ca@{int(now.timestamp())}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(paths.ca_cert, paths.ca_key, cert, key)
    log.info("created cluster CA %s", paths.ca_cert)
    return cert, key


def ensure_serving_cert(
    paths: PKIPaths,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: SubjectAltNames,
) -> x509.Certificate:
    """Reuse the serving certificate if it chains to the CA and carries every name in `sans`."""
    loaded = _load_pair(paths.serving_cert, paths.serving_key)
    if loaded is not None:
        cert, _key = loaded
        missing = missing_sans(cert, sans)
        if _is_usable_leaf(cert, ca_cert) and not missing:
            return cert
        if missing:
            log.info("serving certificate lacks %s; issuing a new one", ", ".join(missing))
    key = _new_key()
    general_names: list[x509.GeneralName] = [x509.DNSName(n) for n in sans.dns_names]
    general_names += [x509.IPAddress(ip) for ip in sans.ip_addresses]
    cert = _issue_leaf(
        ca_cert,
        ca_key,
        key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=general_names,
    )
    _write_pair(paths.serving_cert, paths.serving_key, cert, key)
    return cert


def ensure_admin_cert(
    paths: PKIPaths, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The admin client certificate: CN=system:admin, O=system:masters."""
    loaded = _load_pair(paths.admin_cert, paths.admin_key)
    if loaded is not None and _is_usable_leaf(loaded[0], ca_cert):
        return loaded
    key = _new_key()
    cert = _issue_leaf(
        ca_cert,
        ca_key,
        key,
        subject=x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, MASTERS_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
            ]
        ),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=[],
    )
    _write_pair(paths.admin_cert, paths.admin_key, cert, key)
    return cert, key


def required_sans(extra: Iterable[str] = ()) -> SubjectAltNames:
    """Every name and address the serving certificate must carry on this host."""
    names: list[str] = ["localhost", *IN_CLUSTER_NAMES]
    ips: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), *IN_CLUSTER_IPS]
    names += host_names()
    ips += host_addresses()
    for san in extra:
        san = san.strip()
        if not san:
            continue
        try:
            ips.append(ipaddress.ip_address(san))
        except ValueError:
            names.append(san.lower())
    return SubjectAltNames(
        dns_names=tuple(dict.fromkeys(n for n in names if n)),
        ip_addresses=tuple(dict.fromkeys(ips)),
    )


def missing_sans(cert: x509.Certificate, sans: SubjectAltNames) -> list[str]:
    """The names and addresses of `sans` that `cert` does not carry."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        have_dns: set[str] = set()
        have_ips: set[IPAddress] = set()
    else:
        have_dns = {n.lower() for n in ext.get_values_for_type(x509.DNSName)}
        have_ips = {ip for ip in ext.get_values_for_type(x509.IPAddress) if not isinstance(ip, _Network)}
    missing = [n for n in sans.dns_names if n.lower() not in have_dns]
    missing += [str(ip) for ip in sans.ip_addresses if ip not in have_ips]
    return missing


def _issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _is_usable_leaf(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return not _expires_within(cert, RENEW_BEFORE)


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _expires_within(cert: x509.Certificate, delta: datetime.timedelta) -> bool:
    return cert.not_valid_after_utc - _now() < delta


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The certificate and its key, or None if either is missing, unreadable or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.warning("cannot read %s / %s (%s); they will be replaced", cert_path, key_path, e)
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        log.warning("%s does not match %s; they will be replaced", key_path, cert_path)
        return None
    return cert, key


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(key_path, key_pem, mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


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
    _write_atomic(target, data, mode=0o600)


def ensure_token_file(paths: PKIPaths) -> None:
    """Create the static token file with one admin token (system:masters) if it does not exist."""
    if paths.tokens.exists():
        return
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([secrets.token_hex(32), "admin", str(uuid.uuid4()), MASTERS_GROUP])
    _write_atomic(paths.tokens, buf.getvalue().encode(), mode=0o600)


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
        _write_atomic(paths.join_token, (str(token) + "\n").encode(), mode=0o600)
    return token


def node_credentials(paths: PKIPaths, node_name: str, *, server_url: str, kubeconfig: Path) -> None:
    """A client certificate for the local node agent (CN=system:node:<name>, O=system:nodes) and a
    kubeconfig using it at `kubeconfig` (mode 0600), reused while it is valid and names this node."""
    ca = _load_pair(paths.ca_cert, paths.ca_key)
    assert ca is not None, "ensure_pki first"
    ca_cert, ca_key = ca
    cert_path, key_path = paths.tls_dir / "node.crt", paths.tls_dir / "node.key"
    user = NODE_USER_PREFIX + node_name
    loaded = _load_pair(cert_path, key_path)
    if (
        loaded is None
        or not _is_usable_leaf(loaded[0], ca_cert)
        or loaded[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != user
    ):
        key = _new_key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP), x509.NameAttribute(NameOID.COMMON_NAME, user)]
        )
        cert = _issue_leaf(ca_cert, ca_key, key, subject=subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[])
        _write_pair(cert_path, key_path, cert, key)
        loaded = cert, key
    _make_private_dir(kubeconfig.parent)
    write_kubeconfig(
        paths, server_url=server_url, ca_cert=ca_cert, cert=loaded[0], key=loaded[1], path=kubeconfig, user="node"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- files -------------------------------------------------------------------------------------


def _make_private_dir(path: Path) -> None:
    """Create `path` (mode 0700) if missing; an existing directory keeps its mode."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True, mode=0o700)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write through a temporary file and a rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or (for 0644) kept bits off
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

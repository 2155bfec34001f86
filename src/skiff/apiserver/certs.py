"""X.509 for the cluster's PKI: a CA, leaf certificates (serving and client), their names and validity, and
key pairs on disk. Plain blocking code (key generation, file I/O), called through `asyncio.to_thread`.

`pki.py` decides which credentials the cluster has and where they live; this module makes and checks
them. Every `ensure_*` reuses what is on disk while it is usable (chains to the CA, is not about to expire,
still names what it must) and otherwise issues a new one, written atomically.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.apiserver.hostinfo import IPAddress, host_addresses, host_names

log = logging.getLogger(__name__)

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# a leaf certificate with less than this left is renewed on start
RENEW_BEFORE = datetime.timedelta(days=90)

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


@dataclass(frozen=True, slots=True)
class SubjectAltNames:
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...]


def ensure_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA, or create it (10 years) when absent or unreadable."""
    loaded = load_pair(cert_path, key_path)
    if loaded is not None:
        cert, key = loaded
        constraints = _basic_constraints(cert)
        if constraints is not None and constraints.ca and not _expires_within(cert, RENEW_BEFORE):
            return cert, key
        log.warning("CA certificate %s is not usable; creating a new CA", cert_path)
    key = new_key()
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
    write_pair(cert_path, key_path, cert, key)
    log.info("created cluster CA %s", cert_path)
    return cert, key


def ensure_serving_cert(
    cert_path: Path,
    key_path: Path,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    sans: SubjectAltNames,
) -> x509.Certificate:
    """Reuse the serving certificate if it chains to the CA and carries every name in `sans`."""
    ca_cert, ca_key = ca
    loaded = load_pair(cert_path, key_path)
    if loaded is not None:
        cert, _key = loaded
        missing = missing_sans(cert, sans)
        if is_usable_leaf(cert, ca_cert) and not missing:
            return cert
        if missing:
            log.info("serving certificate lacks %s; issuing a new one", ", ".join(missing))
    key = new_key()
    general_names: list[x509.GeneralName] = [x509.DNSName(n) for n in sans.dns_names]
    general_names += [x509.IPAddress(ip) for ip in sans.ip_addresses]
    cert = issue_leaf(
        ca_cert,
        ca_key,
        key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=general_names,
    )
    write_pair(cert_path, key_path, cert, key)
    return cert


def ensure_client_cert(
    cert_path: Path,
    key_path: Path,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    user: str,
    groups: Iterable[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate for `user` in `groups` (CN and O, as Kubernetes reads them), reused while it
    chains to the CA, is not about to expire and still names that user."""
    ca_cert, ca_key = ca
    loaded = load_pair(cert_path, key_path)
    if loaded is not None and is_usable_leaf(loaded[0], ca_cert) and common_name(loaded[0]) == user:
        return loaded
    key = new_key()
    subject = x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
                         x509.NameAttribute(NameOID.COMMON_NAME, user)])  # fmt: skip
    cert = issue_leaf(ca_cert, ca_key, key, subject=subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=[])
    write_pair(cert_path, key_path, cert, key)
    return cert, key


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


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


def issue_leaf(
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


def is_usable_leaf(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Signed by `ca_cert` and not about to expire."""
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


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
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


def write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


# -- files -------------------------------------------------------------------------------------


def make_private_dir(path: Path) -> None:
    """Create `path` (mode 0700) if missing; an existing directory keeps its mode."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True, mode=0o700)


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
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

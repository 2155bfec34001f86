"""The CSR signer: approved client-certificate requests get a certificate from the cluster CA.

Kubernetes' `pkg/controller/certificates/signer` (csrsigning) with kube-controller-manager's
`--cluster-signing-cert-file` / `--cluster-signing-key-file` (`skiff server` passes its data
dir's CA). It signs the requests of two signers: `kubernetes.io/kube-apiserver-client-kubelet`
(after checking the node-client rules again; a request that breaks them is marked Failed with
reason SignerValidationFailure) and `kubernetes.io/kube-apiserver-client`. The certificate
carries the request's subject and key, the usages it asked for, and lasts
`spec.expirationSeconds` (default a year), never beyond the CA. Without CA files the
controller signs nothing and says so once.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from skiff.api import csr as csrs
from skiff.api import errors
from skiff.client import Controller
from skiff.client.cache import Obj
from skiff.client.resources import CSRS
from skiff.controllers.context import ControllerContext

SIGNERS = (csrs.KUBELET_CLIENT_SIGNER, csrs.APISERVER_CLIENT_SIGNER)
DEFAULT_DURATION = datetime.timedelta(days=365)
BACKDATE = datetime.timedelta(minutes=5)
EXTENDED_USAGES = {
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}


@dataclass(frozen=True)
class SigningCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def load_ca(cert_file: str, key_file: str) -> SigningCA:
    """The signing CA from PEM files (blocking)."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{key_file}: an EC or RSA private key is needed")
    return SigningCA(cert, key)


def sign(ca: SigningCA, csr: Obj, *, now: datetime.datetime | None = None) -> bytes:
    """The PEM certificate for an approved request."""
    spec = csr.get("spec") or {}
    request = csrs.parse_request(spec.get("request"))
    usages = set(spec.get("usages") or [])
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = spec.get("expirationSeconds")
    duration = datetime.timedelta(seconds=seconds) if isinstance(seconds, int) else DEFAULT_DURATION
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca.cert.subject)
        .public_key(request.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + duration, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature="digital signature" in usages or "signing" in usages,
                content_commitment="content commitment" in usages,
                key_encipherment="key encipherment" in usages,
                data_encipherment="data encipherment" in usages,
                key_agreement="key agreement" in usages,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    extended = [oid for usage, oid in EXTENDED_USAGES.items() if usage in usages]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class CSRSigningController(Controller):
    name = "csrsigning"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__()
        self.client = ctx.client
        self.cert_file = ctx.options.cluster_signing_cert_file
        self.key_file = ctx.options.cluster_signing_key_file
        self.csrs = self.watch(ctx.informers.informer(CSRS))
        self._ca: SigningCA | None = None
        self._ca_lock = asyncio.Lock()
        self._warned = False

    async def _signing_ca(self) -> SigningCA | None:
        async with self._ca_lock:
            if self._ca is None and self.cert_file and self.key_file:
                self._ca = await asyncio.to_thread(load_ca, self.cert_file, self.key_file)
            if self._ca is None and not self._warned:
                self._warned = True
                self.log.warning("%s: no --cluster-signing-cert-file/--cluster-signing-key-file: "
                                 "certificate requests stay unsigned", self.name)  # fmt: skip
            return self._ca

    async def reconcile(self, key: str) -> None:
        cached = self.csrs.get(key)
        if cached is None or not _to_sign(cached):
            return
        ca = await self._signing_ca()
        if ca is None:
            return
        csr = copy.deepcopy(cached)
        status = csr.setdefault("status", {})
        problem = csrs.node_client_problem(csr) if csr["spec"]["signerName"] == csrs.KUBELET_CLIENT_SIGNER else None
        if problem is not None:
            status.setdefault("conditions", []).append(
                {"type": csrs.FAILED, "status": "True", "reason": "SignerValidationFailure", "message": problem}
            )
            self.log.info("%s: %s failed validation: %s", self.name, key, problem)
        else:
            try:
                pem = await asyncio.to_thread(sign, ca, csr)
            except csrs.RequestError as e:
                status.setdefault("conditions", []).append(
                    {"type": csrs.FAILED, "status": "True", "reason": "SignerValidationFailure", "message": str(e)}
                )
            else:
                status["certificate"] = base64.b64encode(pem).decode()
        try:
            await self.client.update_status(CSRS, csr)
        except errors.NotFound:
            return
        if status.get("certificate"):
            self.log.info("%s: signed %s for %s", self.name, key, csr["spec"].get("username"))


def _to_sign(csr: Obj) -> bool:
    return (
        (csr.get("spec") or {}).get("signerName") in SIGNERS
        and csrs.has_condition(csr, csrs.APPROVED)
        and not csrs.has_condition(csr, csrs.FAILED)
        and not (csr.get("status") or {}).get("certificate")
    )


def new(ctx: ControllerContext) -> CSRSigningController:
    return CSRSigningController(ctx)

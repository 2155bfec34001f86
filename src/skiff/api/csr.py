"""certificates.k8s.io/v1 CertificateSigningRequest: Kubernetes' validation and the node-client rules.

As `pkg/apis/certificates/validation`: `spec.request` is a PEM `CERTIFICATE REQUEST` whose
signature verifies, `spec.signerName` a qualified name (never the legacy one), `spec.usages`
known and without duplicates, `spec.expirationSeconds` at least 600; conditions have a type and
a status, Approved and Denied exclude each other, and neither they nor Failed are anything but
True; `status.certificate` holds PEM certificates and, once issued, never changes; approval
conditions, once set, stay. Plus what the approver and the kubelet-client signer check
(`pkg/controller/certificates/approver`, `ValidateKubeletClientCSR`): the request of a node's
client certificate names `system:node:<name>` in `system:nodes`, carries no SANs, and asks for
client auth only.

Pure functions over plain dicts; parsing uses `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from skiff.api import validation

Obj = dict[str, Any]
FieldErrors = list[tuple[str, str, str]]

KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
APISERVER_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
LEGACY_SIGNER = "kubernetes.io/legacy-unknown"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
MIN_EXPIRATION_SECONDS = 600

APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
ONLY_TRUE = (APPROVED, DENIED, FAILED)
STATUSES = ["True", "False", "Unknown"]
KNOWN_USAGES = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
]
KUBELET_CLIENT_USAGES = frozenset({"digital signature", "key encipherment", "client auth"})

_SIGNER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[-a-zA-Z0-9_.]+$")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.S)


class RequestError(ValueError):
    """`spec.request` is not a usable PEM certificate request."""


def decode_bytes(value: Any) -> bytes:
    """A `[]byte` field as JSON carries it (base64)."""
    if not isinstance(value, str):
        raise RequestError("must be base64-encoded bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("must be base64-encoded bytes") from None


def parse_request(value: Any) -> x509.CertificateSigningRequest:
    """The certificate request of `spec.request`; raises `RequestError` with Kubernetes' wording."""
    pem = decode_bytes(value)
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in pem:
        raise RequestError("PEM block type must be CERTIFICATE REQUEST")
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as e:
        raise RequestError(f"x509: malformed certificate request ({e})") from None
    if not request.is_signature_valid:
        raise RequestError("x509: signature verification failed")
    return request


def subject_of(request: x509.CertificateSigningRequest) -> tuple[str, list[str]]:
    """The request's common name and organizations."""
    cns = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return (cns[0] if cns else ""), orgs


def validate_csr(csr: Obj) -> FieldErrors:
    """ValidateCertificateSigningRequestCreate, less the metadata every kind shares."""
    spec = csr.get("spec") or {}
    errs: FieldErrors = []
    if not spec.get("request"):
        errs.append(validation.required("spec.request"))
    else:
        try:
            parse_request(spec["request"])
        except RequestError as e:
            errs.append(("FieldValueInvalid", "spec.request", f"Invalid value: []byte{{...}}: {e}"))
    errs += _validate_signer(spec.get("signerName"))
    seconds = spec.get("expirationSeconds")
    if seconds is not None and isinstance(seconds, int) and seconds < MIN_EXPIRATION_SECONDS:
        errs.append(
            validation.invalid(
                "spec.expirationSeconds", seconds, "may not specify a duration less than 600 seconds (10 minutes)"
            )
        )
    usages = spec.get("usages") or []
    if not usages:
        errs.append(validation.required("spec.usages"))
    seen: set[str] = set()
    for i, usage in enumerate(usages):
        if usage not in KNOWN_USAGES:
            errs.append(validation.not_supported(f"spec.usages[{i}]", usage, KNOWN_USAGES))
        elif usage in seen:
            errs.append(_duplicate(f"spec.usages[{i}]", usage))
        seen.add(usage)
    errs += validate_conditions(csr)
    return errs


def _validate_signer(signer: Any) -> FieldErrors:
    path = "spec.signerName"
    if not signer:
        return [validation.required(path)]
    if signer == LEGACY_SIGNER:
        return [validation.invalid(path, signer, "the legacy signerName is not allowed via this API version")]
    if not isinstance(signer, str) or not _SIGNER.match(signer):
        why = "must be a fully qualified domain and path of the form 'example.com/signer-name'"
        return [validation.invalid(path, signer, why)]
    return []


def validate_conditions(csr: Obj) -> FieldErrors:
    errs: FieldErrors = []
    conditions = (csr.get("status") or {}).get("conditions") or []
    seen: set[str] = set()
    for i, cond in enumerate(conditions):
        path = f"status.conditions[{i}]"
        ctype, status = cond.get("type"), cond.get("status")
        if not ctype:
            errs.append(validation.required(f"{path}.type"))
        if not status:
            errs.append(validation.required(f"{path}.status"))
        elif ctype in ONLY_TRUE and status != "True":
            errs.append(validation.not_supported(f"{path}.status", status, ["True"]))
        elif status not in STATUSES:
            errs.append(validation.not_supported(f"{path}.status", status, STATUSES))
        if ctype in ONLY_TRUE and ctype in seen:
            errs.append(_duplicate(f"{path}.type", ctype))
        seen.add(str(ctype))
    if APPROVED in seen and DENIED in seen:
        errs.append(
            validation.invalid(
                "status.conditions", [APPROVED, DENIED], "Approved and Denied conditions are mutually exclusive"
            )
        )
    return errs


def validate_status_update(new: Obj, old: Obj) -> FieldErrors:
    """ValidateCertificateSigningRequestStatusUpdate: conditions, and a certificate that is issued once."""
    errs = validate_conditions(new)
    cert, old_cert = (new.get("status") or {}).get("certificate"), (old.get("status") or {}).get("certificate")
    if old_cert and cert != old_cert:
        errs.append(validation.forbidden("status.certificate", "updates may not modify existing certificate content"))
    elif cert and not old_cert:
        try:
            pem = decode_bytes(cert)
        except RequestError as e:
            errs.append(validation.invalid("status.certificate", "<certificate data>", str(e)))
        else:
            if not _PEM_CERT.search(pem):
                errs.append(
                    validation.invalid(
                        "status.certificate", "<certificate data>", "must contain at least one CERTIFICATE PEM block"
                    )
                )
        if not has_condition(new, APPROVED) or has_condition(new, FAILED):
            why = "certificate issuance requires an Approved and not Failed request"
            errs.append(validation.invalid("status.certificate", "<certificate data>", why))
    return errs


def validate_approval_update(new: Obj, old: Obj) -> FieldErrors:
    """ValidateCertificateSigningRequestApprovalUpdate: approval conditions may be added, never removed."""
    errs = validate_conditions(new)
    for ctype in (APPROVED, DENIED):
        if has_condition(old, ctype) and not has_condition(new, ctype):
            why = f"updates may not remove a condition of type {ctype!r}"
            errs.append(validation.forbidden("status.conditions", why))
    return errs


def _duplicate(path: str, value: Any) -> tuple[str, str, str]:
    return ("FieldValueDuplicate", path, f"Duplicate value: {validation.render_value(value)}")


def has_condition(csr: Obj, ctype: str) -> bool:
    return any(
        c.get("type") == ctype and c.get("status") == "True" for c in (csr.get("status") or {}).get("conditions") or []
    )


def condition_summary(csr: Obj) -> str:
    """The CONDITION column of `kubectl get csr`: Pending, or the condition types and Issued, e.g. Approved,Issued."""
    status = csr.get("status") or {}
    types = [str(c.get("type")) for c in status.get("conditions") or [] if c.get("type")]
    if status.get("certificate"):
        types.append("Issued")
    return ",".join(types) or "Pending"


def node_client_problem(csr: Obj) -> str | None:
    """Why `csr` is not a node's client-certificate request (the kubelet-client signer's rules); None if it is."""
    spec = csr.get("spec") or {}
    if spec.get("signerName") != KUBELET_CLIENT_SIGNER:
        return f"signerName is not {KUBELET_CLIENT_SIGNER}"
    try:
        request = parse_request(spec.get("request"))
    except RequestError as e:
        return str(e)
    cn, orgs = subject_of(request)
    if orgs != [NODES_GROUP]:
        return f"subject organization is not {NODES_GROUP}"
    if not cn.startswith(NODE_USER_PREFIX) or len(cn) == len(NODE_USER_PREFIX):
        return f'subject common name does not begin with "{NODE_USER_PREFIX}"'
    try:
        request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return "subject alternative names are not allowed"
    except x509.ExtensionNotFound:
        pass
    usages = set(spec.get("usages") or [])
    if "client auth" not in usages or not usages <= KUBELET_CLIENT_USAGES:
        return "usages must be client auth with digital signature and optionally key encipherment"
    return None

"""CertificateSigningRequest validation, the node-client rules, approval and signing."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.api import csr as csrs
from skiff.apiserver.csr_strategy import CSRStrategy
from skiff.apiserver.strategy import Obj
from skiff.controllers.csrapproving import auto_approvable
from skiff.controllers.csrsigning import SigningCA, sign

KEY = ec.generate_private_key(ec.SECP256R1())


def request_pem(cn: str, orgs: tuple[str, ...] = (), *, san: str = "") -> str:
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([*names, x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    pem = builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return base64.b64encode(pem).decode()


def node_csr(**spec: Any) -> Obj:
    base = {
        "request": request_pem("system:node:n1", ("system:nodes",)),
        "signerName": csrs.KUBELET_CLIENT_SIGNER,
        "usages": ["digital signature", "client auth"],
        "username": "system:bootstrap:node",
        "groups": ["system:bootstrappers", "system:authenticated"],
    }
    return {"metadata": {"name": "c"}, "spec": {**base, **spec}}


def messages(errs: list[tuple[str, str, str]]) -> list[str]:
    return [f"{path}: {detail}" for _reason, path, detail in errs]


def test_a_node_client_request_is_valid_and_auto_approvable() -> None:
    csr = node_csr()
    assert csrs.validate_csr(csr) == []
    assert csrs.node_client_problem(csr) is None and auto_approvable(csr)
    renewal = node_csr(username="system:node:n1", groups=["system:nodes"])
    assert auto_approvable(renewal)
    other_node = node_csr(username="system:node:n2", groups=["system:nodes"])
    assert not auto_approvable(other_node)  # a node asks only for its own name
    assert not auto_approvable(node_csr(username="alice", groups=["devs"]))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"request": base64.b64encode(b"hello").decode()}, "[]byte{...}: PEM block type must be CERTIFICATE REQUEST"),
        ({"request": ""}, "spec.request: Required value"),
        ({"signerName": ""}, "spec.signerName: Required value"),
        ({"signerName": "kubernetes.io/legacy-unknown"}, "the legacy signerName is not allowed via this API version"),
        ({"signerName": "no-slash"}, "must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        ({"usages": []}, "spec.usages: Required value"),
        ({"usages": ["client auth", "client auth"]}, 'spec.usages[1]: Duplicate value: "client auth"'),
        ({"usages": ["flying"]}, 'spec.usages[0]: Unsupported value: "flying": supported values: "signing"'),
        ({"expirationSeconds": 599}, "599: may not specify a duration less than 600 seconds (10 minutes)"),
    ],
    ids=["not-pem", "no-request", "no-signer", "legacy-signer", "bad-signer", "no-usages", "dup-usage",
         "unknown-usage", "short-expiry"],
)  # fmt: skip
def test_invalid_requests(spec: dict[str, Any], expected: str) -> None:
    found = messages(csrs.validate_csr(node_csr(**spec)))
    assert any(expected in m for m in found), found


@pytest.mark.parametrize(
    ("request_", "usages", "problem"),
    [
        (request_pem("system:node:n1", ("devs",)), None, "organization is not system:nodes"),
        (request_pem("n1", ("system:nodes",)), None, 'does not begin with "system:node:"'),
        (request_pem("system:node:n1", ("system:nodes",), san="n1.example"), None, "alternative names"),
        (None, ["digital signature", "server auth"], "usages must be client auth"),
    ],
    ids=["wrong-org", "wrong-cn", "san", "server-usage"],
)
def test_what_is_not_a_node_client_request(request_: str | None, usages: list[str] | None, problem: str) -> None:
    spec: dict[str, Any] = {}
    if request_ is not None:
        spec["request"] = request_
    if usages is not None:
        spec["usages"] = usages
    csr = node_csr(**spec)
    assert problem in (csrs.node_client_problem(csr) or "") and not auto_approvable(csr)


def test_create_records_the_requester_and_empties_status() -> None:
    from skiff.apiserver.auth import UserInfo

    strategy = CSRStrategy()
    csr = node_csr(username="forged", groups=["system:masters"])
    csr["status"] = {"certificate": "Zm9v", "conditions": [{"type": "Approved", "status": "True"}]}
    strategy.prepare_for_create(csr)
    strategy.record_requester(csr, UserInfo("system:bootstrap:node", ("system:bootstrappers",)))
    assert csr["status"] == {}
    assert csr["spec"]["username"] == "system:bootstrap:node" and csr["spec"]["groups"] == ["system:bootstrappers"]


def test_approval_and_status_write_their_own_parts() -> None:
    strategy = CSRStrategy()
    old = node_csr()
    old["status"] = {}
    approve = {**old, "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "R"}],
                                 "certificate": "Zm9v"}}  # fmt: skip
    approved = strategy.prepare_for_subresource_update("approval", approve, old)
    assert "certificate" not in approved["status"]  # /approval writes conditions only
    cond = approved["status"]["conditions"][0]
    assert cond["lastUpdateTime"] and cond["lastTransitionTime"]
    assert strategy.validate_subresource_update("approval", approved, old) == []

    # /status cannot drop the Approved condition, and a certificate needs it
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").decode()
    signed = strategy.prepare_for_subresource_update("status", {**old, "status": {"certificate": pem}}, approved)
    assert [c["type"] for c in signed["status"]["conditions"]] == ["Approved"]
    assert strategy.validate_subresource_update("status", signed, approved) == []
    changed = {**signed, "status": {**signed["status"], "certificate": base64.b64encode(b"x").decode()}}
    assert any("may not modify existing certificate" in m
               for m in messages(strategy.validate_subresource_update("status", changed, signed)))  # fmt: skip
    unapproved = strategy.prepare_for_subresource_update("status", {**old, "status": {"certificate": pem}}, old)
    assert any("requires an Approved" in m
               for m in messages(strategy.validate_subresource_update("status", unapproved, old)))  # fmt: skip
    dropped = strategy.prepare_for_subresource_update("approval", {**old, "status": {}}, approved)
    assert any("may not remove a condition of type 'Approved'" in m
               for m in messages(strategy.validate_subresource_update("approval", dropped, approved)))  # fmt: skip


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([{"type": "Approved", "status": "False"}], 'Unsupported value: "False": supported values: "True"'),
        ([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}], "mutually exclusive"),
        ([{"type": "Denied", "status": "True"}, {"type": "Denied", "status": "True"}], "Duplicate value"),
        ([{"status": "True"}], "status.conditions[0].type: Required value"),
    ],
    ids=["approved-false", "approved-and-denied", "duplicate", "no-type"],
)
def test_condition_rules(conditions: list[Obj], expected: str) -> None:
    csr = node_csr()
    csr["status"] = {"conditions": conditions}
    assert any(expected in m for m in messages(csrs.validate_conditions(csr)))


def test_summary_column() -> None:
    assert csrs.condition_summary({"status": {}}) == "Pending"
    approved = {"status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"}}
    assert csrs.condition_summary(approved) == "Approved,Issued"


def test_signing_keeps_subject_key_and_usages_within_the_ca() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    csr = node_csr(expirationSeconds=3600)
    cert = x509.load_pem_x509_certificate(sign(SigningCA(ca_cert, ca_key), csr, now=now))
    cert.verify_directly_issued_by(ca_cert)
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    assert cert.public_key() == KEY.public_key()
    assert cert.not_valid_after_utc - now <= datetime.timedelta(seconds=3600)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    long = node_csr(expirationSeconds=10 * 365 * 86400)
    assert x509.load_pem_x509_certificate(sign(SigningCA(ca_cert, ca_key), long)).not_valid_after_utc <= (
        ca_cert.not_valid_after_utc
    )

"""The server's PKI: CA, serving and admin certificates, kubeconfig and token files."""

from __future__ import annotations

import base64
import ipaddress
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.apiserver import certs, hostinfo, pki
from skiff.apiserver.auth import parse_token_file

SERVER_URL = "https://127.0.0.1:16443"


@pytest.fixture
def paths(tmp_path: Path) -> pki.PKIPaths:
    return pki.ensure_pki(tmp_path / "data", server_url=SERVER_URL, extra_sans=["api.example.com", "203.0.113.7"])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[object]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), set(ext.get_values_for_type(x509.IPAddress))


def snapshot(paths: pki.PKIPaths) -> dict[str, bytes]:
    files = [*paths.tls_dir.iterdir(), paths.kubeconfig, paths.tokens, paths.join_token]
    return {f.name: f.read_bytes() for f in files}


def test_certificates_chain_to_the_ca(paths: pki.PKIPaths) -> None:
    ca = load(paths.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > certs.CA_VALIDITY - certs.RENEW_BEFORE
    for leaf in (paths.serving_cert, paths.admin_cert):
        cert = load(leaf)
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_serving_cert_names_every_way_to_reach_the_host(paths: pki.PKIPaths) -> None:
    cert = load(paths.serving_cert)
    dns, ips = sans(cert)
    assert {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.example.com",
    } <= dns
    assert set(hostinfo.host_names()) <= dns
    wanted = {"127.0.0.1", "::1", "10.43.0.1", "203.0.113.7"}
    assert {ipaddress.ip_address(ip) for ip in wanted} <= ips
    assert set(hostinfo.host_addresses()) <= ips
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_host_addresses_leave_out_loopback_and_link_local() -> None:
    for ip in hostinfo.host_addresses():
        assert not ip.is_loopback and not ip.is_link_local


def test_admin_cert_is_system_masters(paths: pki.PKIPaths) -> None:
    cert = load(paths.admin_cert)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["system:admin"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_secrets_are_private(paths: pki.PKIPaths) -> None:
    private = [
        paths.ca_key,
        paths.serving_key,
        paths.admin_key,
        paths.kubeconfig,
        paths.tokens,
        paths.join_token,
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(paths.tls_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.ca_cert.stat().st_mode) == 0o644
    assert not [p for p in paths.tls_dir.iterdir() if p.name.endswith(".tmp")]


def test_kubeconfig_points_at_the_server_with_admin_credentials(paths: pki.PKIPaths) -> None:
    config = yaml.safe_load(paths.kubeconfig.read_text())
    assert config["current-context"] == "skiff"
    (cluster,) = config["clusters"]
    assert cluster["name"] == "skiff"
    assert cluster["cluster"]["server"] == SERVER_URL
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == paths.ca_cert.read_bytes()
    (user,) = config["users"]
    assert user["name"] == "admin"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == paths.admin_cert.read_bytes()
    assert b"PRIVATE KEY" in base64.b64decode(user["user"]["client-key-data"])
    (context,) = config["contexts"]
    assert context == {"name": "skiff", "context": {"cluster": "skiff", "user": "admin"}}


def test_token_files(paths: pki.PKIPaths) -> None:
    tokens = parse_token_file(paths.tokens.read_text())
    (user,) = tokens.values()
    assert user.name == "admin" and user.groups == ("system:masters",) and user.uid
    assert len(next(iter(tokens))) >= 32
    assert len(paths.join_token.read_text().strip()) >= 32


def test_second_start_reuses_everything(paths: pki.PKIPaths) -> None:
    before = snapshot(paths)
    again = pki.ensure_pki(paths.data_dir, server_url=SERVER_URL, extra_sans=["api.example.com", "203.0.113.7"])
    assert again == paths
    assert snapshot(paths) == before


def test_new_port_rewrites_only_the_kubeconfig(paths: pki.PKIPaths) -> None:
    before = snapshot(paths)
    pki.ensure_pki(paths.data_dir, server_url="https://127.0.0.1:7443", extra_sans=["api.example.com", "203.0.113.7"])
    after = snapshot(paths)
    assert {name for name in before if before[name] != after[name]} == {"kubeconfig.yaml"}
    assert yaml.safe_load(after["kubeconfig.yaml"])["clusters"][0]["cluster"]["server"].endswith(":7443")


def test_missing_san_reissues_only_the_serving_cert(paths: pki.PKIPaths) -> None:
    before = snapshot(paths)
    pki.ensure_pki(paths.data_dir, server_url=SERVER_URL, extra_sans=["other.example.com"])
    after = snapshot(paths)
    assert {name for name in before if before[name] != after[name]} == {"serving.crt", "serving.key"}
    dns, _ips = sans(load(paths.serving_cert))
    assert "other.example.com" in dns
    load(paths.serving_cert).verify_directly_issued_by(load(paths.ca_cert))


def test_broken_key_is_replaced(paths: pki.PKIPaths) -> None:
    paths.admin_key.write_text("garbage")
    pki.ensure_pki(paths.data_dir, server_url=SERVER_URL)
    cert = load(paths.admin_cert)
    cert.verify_directly_issued_by(load(paths.ca_cert))
    assert b"PRIVATE KEY" in paths.admin_key.read_bytes()


def test_new_ca_reissues_leaves(paths: pki.PKIPaths) -> None:
    paths.ca_cert.unlink()
    pki.ensure_pki(paths.data_dir, server_url=SERVER_URL)
    ca = load(paths.ca_cert)
    for leaf in (paths.serving_cert, paths.admin_cert):
        load(leaf).verify_directly_issued_by(ca)
    config = yaml.safe_load(paths.kubeconfig.read_text())
    assert base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]) == (
        paths.ca_cert.read_bytes()
    )


def test_required_sans_sorts_names_from_addresses() -> None:
    result = certs.required_sans(["Node1.Example.com", "192.0.2.10", "2001:db8::1", " "])
    assert "node1.example.com" in result.dns_names
    assert ipaddress.ip_address("192.0.2.10") in result.ip_addresses
    assert ipaddress.ip_address("2001:db8::1") in result.ip_addresses
    assert "" not in result.dns_names

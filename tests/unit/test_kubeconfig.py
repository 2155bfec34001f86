"""Loading kubeconfigs: contexts, inline and file credentials, KUBECONFIG merging, errors."""

from __future__ import annotations

import base64
import datetime
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skiff.client.kubeconfig import KubeconfigError, config_from_dict, default_paths, load_kubeconfig


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, *, ca: bool) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pems() -> dict[str, bytes]:
    ca_key, client_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    return {
        "ca": _cert("test-ca", ca_key, ca=True),
        "cert": _cert("admin", client_key, ca=False),
        "key": _key_pem(client_key),
        "other_key": _key_pem(other_key),
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    *, cluster: dict[str, object], user: dict[str, object], namespace: str | None = None, current: str = "main"
) -> dict[str, object]:
    ctx: dict[str, object] = {"cluster": "c1", "user": "u1"}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c1", "cluster": cluster}],
        "users": [{"name": "u1", "user": user}],
        "contexts": [{"name": "main", "context": ctx}],
        "current-context": current,
    }


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def ca_subjects(ctx: ssl.SSLContext) -> list[object]:
    return [c["subject"] for c in ctx.get_ca_certs()]


def test_inline_data_and_token(tmp_path: Path, pems: dict[str, bytes]) -> None:
    doc = kubeconfig(
        cluster={"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(pems["ca"])},
        user={"client-certificate-data": b64(pems["cert"]), "client-key-data": b64(pems["key"]), "token": "s3cret"},
        namespace="team-a",
    )
    cfg = load_kubeconfig(write(tmp_path / "kc.yaml", doc))
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.token == "s3cret"
    assert cfg.namespace == "team-a"
    assert cfg.ssl_context is not None
    assert cfg.ssl_context.verify_mode == ssl.CERT_REQUIRED and cfg.ssl_context.check_hostname
    assert ((("commonName", "test-ca"),),) in ca_subjects(cfg.ssl_context)


def test_file_paths_are_relative_to_the_kubeconfig(tmp_path: Path, pems: dict[str, bytes]) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "pki").mkdir(parents=True)
    for name in ("ca", "cert", "key"):
        (conf_dir / "pki" / f"{name}.pem").write_bytes(pems[name])
    (conf_dir / "token").write_text("from-file\n")
    doc = kubeconfig(
        cluster={"server": "https://k8s.example:6443", "certificate-authority": "pki/ca.pem"},
        user={"client-certificate": "pki/cert.pem", "client-key": "pki/key.pem", "tokenFile": "token"},
    )
    cfg = load_kubeconfig(write(conf_dir / "config", doc))
    assert cfg.token == "from-file"
    assert cfg.namespace == "default"
    assert cfg.ssl_context is not None
    assert ((("commonName", "test-ca"),),) in ca_subjects(cfg.ssl_context)


def test_kubeconfig_env_merges_files_first_wins(tmp_path: Path, pems: dict[str, bytes]) -> None:
    first = write(
        tmp_path / "a.yaml",
        {
            "current-context": "other",
            "contexts": [{"name": "other", "context": {"cluster": "c2", "user": "u2", "namespace": "ns2"}}],
            "users": [{"name": "u2", "user": {"token": "first"}}],
        },
    )
    second = write(
        tmp_path / "b.yaml",
        {
            "current-context": "ignored",
            "clusters": [
                {"name": "c2", "cluster": {"server": "https://second:6443", "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "u2", "user": {"token": "second"}}],
        },
    )
    missing = tmp_path / "missing.yaml"
    env = {"KUBECONFIG": f"{first}:{missing}:{second}"}
    assert default_paths(env) == [first, missing, second]
    cfg = load_kubeconfig(env=env)
    assert (cfg.server, cfg.token, cfg.namespace) == ("https://second:6443", "first", "ns2")
    assert cfg.ssl_context is not None and cfg.ssl_context.verify_mode == ssl.CERT_NONE


def test_default_path_is_home_kube_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_paths({}) == [tmp_path / ".kube" / "config"]
    doc = kubeconfig(cluster={"server": "http://127.0.0.1:8080"}, user={})
    write(tmp_path / ".kube" / "config", doc)
    cfg = load_kubeconfig(env={})
    assert cfg.server == "http://127.0.0.1:8080"
    assert cfg.ssl_context is None and cfg.token is None


def test_context_can_be_chosen(pems: dict[str, bytes]) -> None:
    doc = kubeconfig(cluster={"server": "https://a:1"}, user={"token": "t"}, current="")
    with pytest.raises(KubeconfigError, match="no current-context"):
        config_from_dict(doc)
    assert config_from_dict(doc, context="main").server == "https://a:1"
    with pytest.raises(KubeconfigError, match='context "nope" not found'):
        config_from_dict(doc, context="nope")


def test_tls_server_name(pems: dict[str, bytes]) -> None:
    doc = kubeconfig(cluster={"server": "https://10.0.0.1:6443", "tls-server-name": "kubernetes"}, user={})
    assert config_from_dict(doc).tls_server_name == "kubernetes"


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"server": "https://a:1"}, {"client-certificate-data": "CERT"}, "without a key"),
        ({"server": "https://a:1", "certificate-authority-data": "!!!"}, {}, "not valid base64"),
        ({"server": "https://a:1", "certificate-authority-data": b64(b"not a cert")}, {}, "not a PEM certificate"),
        ({"server": "https://a:1", "certificate-authority": "/nonexistent/ca.crt"}, {}, "cannot read"),
        ({}, {}, "has no server"),
    ],
    ids=["cert-without-key", "bad-base64", "ca-not-pem", "ca-file-missing", "no-server"],
)
def test_unusable_configs_are_clear_errors(cluster: dict[str, object], user: dict[str, object], message: str) -> None:
    with pytest.raises(KubeconfigError, match=message):
        config_from_dict(kubeconfig(cluster=cluster, user=user))


def test_mismatched_client_key_is_an_error(pems: dict[str, bytes]) -> None:
    user = {"client-certificate-data": b64(pems["cert"]), "client-key-data": b64(pems["other_key"])}
    with pytest.raises(KubeconfigError, match="do not load"):
        config_from_dict(kubeconfig(cluster={"server": "https://a:1"}, user=user))


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="cannot read kubeconfig"):
        load_kubeconfig(tmp_path / "nope.yaml")
    with pytest.raises(KubeconfigError, match="no kubeconfig found"):
        load_kubeconfig(env={"KUBECONFIG": str(tmp_path / "nope.yaml")})
    (tmp_path / "bad.yaml").write_text("clusters: [unclosed")
    with pytest.raises(KubeconfigError, match="not valid YAML"):
        load_kubeconfig(tmp_path / "bad.yaml")

"""The join token: k3s's `K10<CA sha256>::<id>:<secret>` format, parsing and matching."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from skiff.api import jointoken
from skiff.apiserver import pki

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
DIGEST = hashlib.sha256(CA).hexdigest()


def test_round_trip_and_identity() -> None:
    token = jointoken.parse(f"K10{DIGEST}::node:s3cr3t\n")
    assert token == jointoken.JoinToken(DIGEST, "node", "s3cr3t")
    assert str(token) == f"K10{DIGEST}::node:s3cr3t"
    assert token.bearer == "node:s3cr3t" and token.username == "system:bootstrap:node"
    assert token.ca_matches(CA) and not token.ca_matches(CA + b"\n")
    assert jointoken.secret_matches("node:s3cr3t", token) and not jointoken.secret_matches("node:s3cr3", token)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3cr3t", "starts with K10"),
        (f"K10{DIGEST}:node:s3cr3t", "'::' between"),
        ("K10abc::node:s3cr3t", "64 lower-case hex"),
        (f"K10{DIGEST.upper()}::node:s3cr3t", "64 lower-case hex"),
        (f"K10{DIGEST}::node", "<id>:<secret>"),
        (f"K10{DIGEST}::node:", "<id>:<secret>"),
        (f"K10{DIGEST}::No_de:x", "invalid token id"),
    ],
    ids=["no-prefix", "single-colon", "short-hash", "upper-hash", "no-secret", "empty-secret", "bad-id"],
)
def test_malformed_tokens_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(jointoken.TokenFormatError, match=message):
        jointoken.parse(text)


def test_bearer_shape() -> None:
    assert jointoken.parse_bearer("node:abc") == ("node", "abc")
    assert jointoken.parse_bearer("abcdef") is None and jointoken.parse_bearer("node:") is None


def test_server_writes_a_private_token_naming_its_ca_and_keeps_it(tmp_path: Path) -> None:
    paths = pki.ensure_pki(tmp_path, server_url="https://127.0.0.1:6443")
    text = paths.join_token.read_text()
    token = jointoken.parse(text)
    assert token.ca_matches(paths.ca_cert.read_bytes()) and token.token_id == "node"
    assert paths.join_token.stat().st_mode & 0o777 == 0o600
    pki.ensure_pki(tmp_path, server_url="https://127.0.0.1:6443")
    assert paths.join_token.read_text() == text  # the same token on every start


def test_an_old_plain_secret_is_kept_in_the_new_format(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path, server_url="https://127.0.0.1:6443")
    paths = pki.PKIPaths(tmp_path)
    paths.join_token.write_text("0123abcd\n")
    token = pki.ensure_join_token(paths)
    assert token.secret == "0123abcd" and jointoken.parse(paths.join_token.read_text()) == token

"""Service account tokens: signing, verification, claim checks and the authenticator's lookups."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from skiff.apiserver.sa_token import (
    ISSUER,
    InvalidToken,
    ServiceAccountTokens,
    TokenSigner,
    check_claims,
    load_or_create_key,
    token_claims,
)

SA = {"kind": "ServiceAccount", "metadata": {"name": "builder", "namespace": "ci", "uid": "sa-uid"}}
POD = {"kind": "Pod", "metadata": {"name": "web", "namespace": "ci", "uid": "pod-uid"}}


def test_key_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "tls" / "service.key"
    first = TokenSigner(load_or_create_key(path))
    assert path.stat().st_mode & 0o777 == 0o600
    again = TokenSigner(load_or_create_key(path))
    assert first.kid == again.kid
    assert again.verify(first.sign({"a": 1})) == {"a": 1}


def test_tampered_or_foreign_tokens_are_refused(tmp_path: Path) -> None:
    signer = TokenSigner(load_or_create_key(tmp_path / "a.key"))
    other = TokenSigner(load_or_create_key(tmp_path / "b.key"))
    token = signer.sign({"sub": "x"})
    with pytest.raises(InvalidToken):
        other.verify(token)
    header, _payload, sig = token.split(".")
    forged = other.sign({"sub": "system:serviceaccount:kube-system:admin"}).split(".")[1]
    with pytest.raises(InvalidToken):
        signer.verify(f"{header}.{forged}.{sig}")
    for junk in ("abc", "a.b.c", ""):
        with pytest.raises(InvalidToken):
            signer.verify(junk)


def test_claims_name_the_account_and_bound_pod() -> None:
    claims = token_claims(SA, audiences=[ISSUER], expiration_seconds=600, bound=POD, now=1000)
    assert claims["sub"] == "system:serviceaccount:ci:builder"
    assert claims["exp"] == 1600 and claims["iat"] == claims["nbf"] == 1000
    assert claims["kubernetes.io"]["pod"] == {"name": "web", "uid": "pod-uid"}
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "builder", "uid": "sa-uid"}
    check_claims(claims, now=1500)
    with pytest.raises(InvalidToken, match="expired"):
        check_claims(claims, now=1700)
    with pytest.raises(InvalidToken, match="audiences"):
        check_claims(token_claims(SA, audiences=["vault"], expiration_seconds=600, now=1000), now=1000)


def _authenticate(tokens: ServiceAccountTokens, token: str) -> Any:
    return asyncio.run(tokens.authenticate_token(token))


def test_authenticator_needs_the_account_and_pod_to_still_exist(tmp_path: Path) -> None:
    tokens = ServiceAccountTokens.from_data_dir(tmp_path)
    stored: dict[tuple[str, str, str], Any] = {("serviceaccounts", "ci", "builder"): SA, ("pods", "ci", "web"): POD}

    async def lookup(plural: str, ns: str, name: str) -> Any:
        return stored.get((plural, ns, name))

    tokens.lookup = lookup
    token = tokens.issue(SA, audiences=[], expiration_seconds=3600, bound=POD)["token"]
    user = _authenticate(tokens, token)
    assert user.name == "system:serviceaccount:ci:builder"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:ci")
    assert user.uid == "sa-uid"
    stored[("pods", "ci", "web")] = {"metadata": {"name": "web", "uid": "recreated"}}
    assert _authenticate(tokens, token) is None  # the pod it was bound to is gone
    unbound = tokens.issue(SA, audiences=[], expiration_seconds=3600)["token"]
    assert _authenticate(tokens, unbound) is not None
    del stored[("serviceaccounts", "ci", "builder")]
    assert _authenticate(tokens, unbound) is None
    assert _authenticate(tokens, "static-token-from-the-file") is None

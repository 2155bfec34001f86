"""Service account tokens: JWTs the apiserver signs (TokenRequest) and accepts as bearer tokens.

As Kubernetes' `pkg/serviceaccount` bound tokens: an ES256 JWT signed with
the server's service-account key (`<data-dir>/tls/service.key`, made on
first start, as k3s keeps it), issuer `https://kubernetes.default.svc.cluster.local`,
the requested audiences (the API's own by default), `exp`/`iat`/`nbf`, the
subject `system:serviceaccount:<ns>:<name>` and the private claim
`kubernetes.io` naming the account (and the pod it is bound to, if any)
with their uids. `ServiceAccountTokens.authenticate_token` accepts a token
whose signature, issuer, times and audience are right and whose account
(and bound pod) still exist with the same uid: deleting the pod or the
account invalidates its tokens. The user is the subject, in the groups
`system:serviceaccounts` and `system:serviceaccounts:<ns>`.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from skiff.apiserver.auth import UserInfo

Obj = dict[str, Any]
Lookup = Callable[[str, str, str], Awaitable[Obj | None]]
"""(plural, namespace, name) -> the stored object, or None."""

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)
SA_PREFIX = "system:serviceaccount:"
ALL_SA_GROUP = "system:serviceaccounts"
KEY_FILE = "service.key"
LEEWAY = 60  # seconds of clock skew tolerated on nbf/exp, as Kubernetes' validator


class InvalidToken(Exception):
    """Not a token this server signed, or one no longer valid; the message says which check failed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The signing key at `path`, created (mode 0600) when missing. Blocking."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        tmp.replace(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


class TokenSigner:
    """Signs and verifies ES256 JWTs with one key (the `kid` is the SHA-256 of its public key)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self.public = key.public_key()
        der = self.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest())

    def sign(self, claims: Obj) -> str:
        header = _b64(orjson.dumps({"alg": "ES256", "kid": self.kid}))
        payload = _b64(orjson.dumps(claims))
        signing_input = f"{header}.{payload}".encode()
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return f"{header}.{payload}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def verify(self, token: str) -> Obj:
        """The claims of a token this key signed; raises InvalidToken."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a JWT")
        try:
            header = orjson.loads(_unb64(parts[0]))
            signature = _unb64(parts[2])
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise InvalidToken("malformed JWT") from exc
        if not isinstance(header, dict) or header.get("alg") != "ES256" or len(signature) != 64:
            raise InvalidToken("not signed with ES256")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            self.public.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise InvalidToken("invalid signature") from exc
        try:
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise InvalidToken("malformed claims") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("malformed claims")
        return claims


def token_claims(
    sa: Obj,
    *,
    audiences: Sequence[str],
    expiration_seconds: int,
    bound: Obj | None = None,
    now: float | None = None,
) -> Obj:
    """The claims of a token for ServiceAccount `sa`, optionally bound to `bound` (a Pod, Secret or Node)."""
    issued = int(now if now is not None else time.time())
    meta = sa["metadata"]
    ns, name = meta["namespace"], meta["name"]
    private: Obj = {"namespace": ns, "serviceaccount": {"name": name, "uid": meta.get("uid", "")}}
    if bound is not None:
        bmeta = bound["metadata"]
        private[str(bound.get("kind", "Pod")).lower()] = {"name": bmeta["name"], "uid": bmeta.get("uid", "")}
    return {
        "aud": list(audiences),
        "exp": issued + expiration_seconds,
        "iat": issued,
        "iss": ISSUER,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": private,
        "nbf": issued,
        "sub": f"{SA_PREFIX}{ns}:{name}",
    }


def check_claims(claims: Obj, *, audiences: Sequence[str] = API_AUDIENCES, now: float | None = None) -> None:
    """Issuer, times and audience of verified claims; raises InvalidToken."""
    current = now if now is not None else time.time()
    if claims.get("iss") != ISSUER:
        raise InvalidToken("wrong issuer")
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int) or current > exp + LEEWAY:
        raise InvalidToken("token has expired")
    if isinstance(nbf, int) and current < nbf - LEEWAY:
        raise InvalidToken("token is not valid yet")
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not set(aud_list) & set(audiences):
        raise InvalidToken("token audiences do not match the API's")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(SA_PREFIX) or sub.count(":") != 3:
        raise InvalidToken("not a service account token")


def service_account_user(ns: str, name: str, uid: str = "") -> UserInfo:
    return UserInfo(f"{SA_PREFIX}{ns}:{name}", (ALL_SA_GROUP, f"{ALL_SA_GROUP}:{ns}"), uid)


class ServiceAccountTokens:
    """Issues tokens and authenticates them; `attach` gives it the store to check accounts and pods."""

    def __init__(self, signer: TokenSigner, *, audiences: Sequence[str] = API_AUDIENCES) -> None:
        self.signer = signer
        self.audiences = tuple(audiences)
        self.lookup: Lookup | None = None

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> ServiceAccountTokens:
        """Blocking: reads (or makes) the key under `<data_dir>/tls`."""
        return cls(TokenSigner(load_or_create_key(data_dir / "tls" / KEY_FILE)))

    def issue(self, sa: Obj, *, audiences: Sequence[str], expiration_seconds: int, bound: Obj | None = None) -> Obj:
        claims = token_claims(sa, audiences=audiences or self.audiences, expiration_seconds=expiration_seconds,
                              bound=bound)  # fmt: skip
        return claims | {"token": self.signer.sign(claims)}

    async def authenticate_token(self, token: str) -> UserInfo | None:
        """The account a valid token names; None for anything else (other authenticators may know it)."""
        if token.count(".") != 2:
            return None
        try:
            claims = self.signer.verify(token)
            check_claims(claims, audiences=self.audiences)
        except InvalidToken:
            return None
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            return None
        ns = str(private.get("namespace", ""))
        account = private.get("serviceaccount") or {}
        name, uid = str(account.get("name", "")), str(account.get("uid", ""))
        if claims["sub"] != f"{SA_PREFIX}{ns}:{name}":
            return None
        if self.lookup is not None:
            sa = await self.lookup("serviceaccounts", ns, name)
            if sa is None or (uid and sa["metadata"].get("uid") != uid):
                return None
            for plural, key in (("pods", "pod"), ("secrets", "secret")):
                ref = private.get(key)
                if isinstance(ref, dict):
                    obj = await self.lookup(plural, ns, str(ref.get("name", "")))
                    if obj is None or obj["metadata"].get("uid") != ref.get("uid"):
                        return None
        return service_account_user(ns, name, uid)

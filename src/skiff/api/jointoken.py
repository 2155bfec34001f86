"""The join token a server hands to machines that join it: k3s's "secure" token format.

`K10<sha256 hex of the cluster CA certificate>::<id>:<secret>`. The hash lets a
joining agent check the CA it fetched from an untrusted connection (the
unauthenticated `/cacerts`) before it trusts anything that server says; the
`<id>:<secret>` part authenticates the agent as the bootstrap identity
`system:bootstrap:<id>` (group `system:bootstrappers`), which may only ask for a
node client certificate through a CertificateSigningRequest (Kubernetes' TLS
bootstrapping). The agent sends `<id>:<secret>` as its bearer token.

Pure functions: formatting, parsing, hashing, comparing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

PREFIX = "K10"
BOOTSTRAP_USER_PREFIX = "system:bootstrap:"
BOOTSTRAPPERS_GROUP = "system:bootstrappers"
DEFAULT_ID = "node"

_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class TokenFormatError(ValueError):
    """A join token that is not `K10<sha256 hex>::<id>:<secret>`."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    ca_hash: str  # sha256 hex of the CA certificate (PEM bytes, as /cacerts serves them)
    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.ca_hash}::{self.token_id}:{self.secret}"

    @property
    def bearer(self) -> str:
        """What the agent presents as `Authorization: Bearer ...`."""
        return f"{self.token_id}:{self.secret}"

    @property
    def username(self) -> str:
        return BOOTSTRAP_USER_PREFIX + self.token_id

    def ca_matches(self, ca_pem: bytes) -> bool:
        return hmac.compare_digest(ca_hash(ca_pem), self.ca_hash)


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


def parse(text: str) -> JoinToken:
    """Parse a full join token; raises `TokenFormatError` saying what is wrong."""
    token = text.strip()
    if not token.startswith(PREFIX):
        raise TokenFormatError(f"a join token starts with {PREFIX} (want K10<sha256 of the CA>::<id>:<secret>)")
    digest, sep, credentials = token[len(PREFIX) :].partition("::")
    if not sep:
        raise TokenFormatError("a join token has '::' between the CA hash and the credentials")
    if not _HASH.match(digest):
        raise TokenFormatError("the CA hash of a join token is 64 lower-case hex digits (sha256)")
    token_id, sep, secret = credentials.partition(":")
    if not sep or not secret:
        raise TokenFormatError("the credentials of a join token are <id>:<secret>")
    if not _ID.match(token_id):
        raise TokenFormatError(f"invalid token id {token_id!r}: lower-case letters, digits and '-'")
    return JoinToken(digest, token_id, secret)


def parse_bearer(bearer: str) -> tuple[str, str] | None:
    """`<id>:<secret>` of a bearer token, or None when it is not of that shape."""
    token_id, sep, secret = bearer.partition(":")
    if not sep or not secret or not _ID.match(token_id):
        return None
    return token_id, secret


def secret_matches(presented: str, expected: JoinToken) -> bool:
    """Whether a bearer token is this join token's `<id>:<secret>` (constant time)."""
    return hmac.compare_digest(presented.encode(), expected.bearer.encode())

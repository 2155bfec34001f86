"""Authentication and authorization middlewares, over a real local HTTPS server."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.apiserver import pki
from skiff.apiserver.auth import (
    ANONYMOUS,
    REQUEST_ATTRIBUTES,
    USER,
    Authenticator,
    RequestAttributes,
    TokenFile,
    UserInfo,
    authentication_middleware,
    bearer_token,
    parse_token_file,
    user_from_peer_cert,
)
from skiff.apiserver.authchain import auth_middleware
from skiff.apiserver.authz import Decision, authorization_middleware, forbidden, request_attributes

ALICE_TOKEN = "alice-token-0123456789"


@dataclass
class Cluster:
    url: str
    paths: pki.PKIPaths
    admin_token: str

    def client_ssl(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.paths.ca_cert))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    async def get(
        self, path: str, *, cert: tuple[Path, Path] | None = None, token: str | None = None
    ) -> tuple[int, str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, ssl=self.client_ssl(cert), headers=headers) as resp,
        ):
            return resp.status, resp.content_type, await resp.json()


async def whoami(request: web.Request) -> web.Response:
    user = request[USER]
    attributes = request[REQUEST_ATTRIBUTES]
    return web.json_response({"name": user.name, "groups": list(user.groups), "uid": user.uid, "verb": attributes.verb})


def server_ssl(paths: pki.PKIPaths) -> ssl.SSLContext:
    """As `serve.make_ssl_context`: TLS 1.2+, optional client certificates checked against the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths.serving_cert, paths.serving_key)
    ctx.load_verify_locations(cafile=paths.ca_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


@pytest.fixture(params=["two layers", "one layer"])
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """A server with the two middlewares, or with both in one (`auth_middleware`, as `skiff server`)."""
    paths = pki.ensure_pki(tmp_path, server_url="https://127.0.0.1:1")
    (admin_token,) = parse_token_file(paths.tokens.read_text())
    with paths.tokens.open("a") as f:
        f.write(f'{ALICE_TOKEN},alice,uid-alice,"developers,qa"\n')
    tokens = TokenFile(paths.tokens, check_interval=0)
    authenticator = Authenticator(token_authenticators=[tokens])
    if request.param == "one layer":
        middlewares = [auth_middleware(authenticator)]
    else:
        middlewares = [authentication_middleware(authenticator), authorization_middleware()]
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/healthz", whoami)
    app.router.add_get("/version", whoami)
    app.router.add_get("/readyz/extra", whoami)
    app.router.add_get("/api/v1/namespaces/{ns}/pods", whoami)
    app.router.add_get("/apis/apps/v1/deployments", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl(paths))
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Cluster(f"https://{host}:{port}", paths, admin_token)
    finally:
        await runner.cleanup()


def issue_client_cert(
    tmp_path: Path, *, cn: str, orgs: tuple[str, ...], ca: tuple[Path, Path] | None = None
) -> tuple[Path, Path]:
    """A client certificate signed by the given CA key pair, or self-signed when `ca` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    if ca is not None:
        ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
        ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        issuer, signer = ca_cert.subject, ca_key
    else:
        issuer, signer = subject, key
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{cn}.crt", tmp_path / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


# -- over HTTPS --------------------------------------------------------------------------------


async def test_admin_client_certificate(cluster: Cluster) -> None:
    status, _ctype, body = await cluster.get(
        "/api/v1/namespaces/default/pods", cert=(cluster.paths.admin_cert, cluster.paths.admin_key)
    )
    assert status == 200
    assert body["name"] == "system:admin"
    assert body["groups"] == ["system:masters", "system:authenticated"]
    assert body["verb"] == "list"


async def test_keep_alive_connection_keeps_its_certificate_user(cluster: Cluster, tmp_path: Path) -> None:
    """The certificate's user is remembered per connection; a token is still read per request."""
    admin = (cluster.paths.admin_cert, cluster.paths.admin_key)
    connector = aiohttp.TCPConnector(limit=1, ssl=cluster.client_ssl(admin))
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.get(cluster.url + "/api/v1/namespaces/default/pods") as resp:
                assert resp.status == 200
                assert (await resp.json())["name"] == "system:admin"
    connector = aiohttp.TCPConnector(limit=1, ssl=cluster.client_ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Authorization": f"Bearer {cluster.admin_token}"}
        async with session.get(cluster.url + "/apis/apps/v1/deployments", headers=headers) as resp:
            assert resp.status == 200
        async with session.get(cluster.url + "/apis/apps/v1/deployments") as resp:
            assert resp.status == 401  # same connection, no token: not remembered


async def test_admin_token(cluster: Cluster) -> None:
    status, _ctype, body = await cluster.get("/apis/apps/v1/deployments", token=cluster.admin_token)
    assert status == 200
    assert body["name"] == "admin"
    assert "system:masters" in body["groups"] and body["uid"]


async def test_no_credentials_is_401_status(cluster: Cluster) -> None:
    status, ctype, body = await cluster.get("/api/v1/namespaces/default/pods")
    assert (status, ctype) == (401, "application/json")
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


@pytest.mark.parametrize("path", ["/api/v1/namespaces/default/pods", "/healthz"], ids=["api", "healthz"])
async def test_bad_token_is_401(cluster: Cluster, path: str) -> None:
    status, ctype, body = await cluster.get(path, token="not-a-token")
    assert (status, ctype, body["reason"]) == (401, "application/json", "Unauthorized")


@pytest.mark.parametrize("path", ["/healthz", "/version"])
async def test_public_endpoints_are_open(cluster: Cluster, path: str) -> None:
    status, _ctype, body = await cluster.get(path)
    assert status == 200
    assert body["name"] == ANONYMOUS.name and body["groups"] == ["system:unauthenticated"]


async def test_public_endpoint_subpaths_are_not_open(cluster: Cluster) -> None:
    status, _ctype, _body = await cluster.get("/readyz/extra")
    assert status == 401


async def test_user_outside_masters_is_forbidden(cluster: Cluster) -> None:
    status, ctype, body = await cluster.get("/api/v1/namespaces/default/pods", token=ALICE_TOKEN)
    assert (status, ctype) == (403, "application/json")
    assert body["reason"] == "Forbidden" and body["code"] == 403
    assert body["message"] == (
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default"'
    )
    assert body["details"] == {"kind": "pods"}


async def test_client_cert_outside_masters_is_forbidden(cluster: Cluster, tmp_path: Path) -> None:
    bob = issue_client_cert(tmp_path, cn="bob", orgs=("dev",), ca=(cluster.paths.ca_cert, cluster.paths.ca_key))
    status, _ctype, body = await cluster.get("/apis/apps/v1/deployments", cert=bob)
    assert status == 403
    assert body["message"] == (
        'deployments.apps is forbidden: User "bob" cannot list resource "deployments" '
        'in API group "apps" at the cluster scope'
    )
    # authenticated users may still read the public endpoints
    status, _ctype, body = await cluster.get("/healthz", cert=bob)
    assert (status, body["name"], body["groups"]) == (200, "bob", ["dev", "system:authenticated"])


async def test_certificate_from_another_ca_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    mallory = issue_client_cert(tmp_path, cn="mallory", orgs=("system:masters",))
    with pytest.raises(aiohttp.ClientError):
        await cluster.get("/api/v1/namespaces/default/pods", cert=mallory)


async def test_token_file_changes_are_picked_up(cluster: Cluster) -> None:
    status, _ctype, _body = await cluster.get("/api/v1/namespaces/default/pods", token="new-admin-token")
    assert status == 401
    with cluster.paths.tokens.open("a") as f:
        f.write("new-admin-token,carol,uid-carol,system:masters\n")
    status, _ctype, body = await cluster.get("/api/v1/namespaces/default/pods", token="new-admin-token")
    assert (status, body["name"]) == (200, "carol")


# -- the pure parts ----------------------------------------------------------------------------


def test_parse_token_file() -> None:
    text = "\n".join(
        [
            "# comment",
            "",
            't1,user1,uid1,"group1,group2"',
            "t2,user2,uid2",
            "t3,user3",
            "t4, user4 , uid4, solo",
        ]
    )
    assert parse_token_file(text) == {
        "t1": UserInfo("user1", ("group1", "group2"), "uid1"),
        "t2": UserInfo("user2", (), "uid2"),
        "t4": UserInfo("user4", ("solo",), "uid4"),
    }


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_user_from_peer_cert() -> None:
    cert = {
        "subject": (
            (("organizationName", "system:masters"),),
            (("organizationName", "ops"),),
            (("commonName", "system:admin"),),
        )
    }
    assert user_from_peer_cert(cert) == UserInfo("system:admin", ("system:masters", "ops"))
    assert user_from_peer_cert({}) is None
    assert user_from_peer_cert(None) is None
    assert user_from_peer_cert({"subject": ((("organizationName", "x"),),)}) is None


USER_X = UserInfo("x")


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/default/pods", {}, ("list", "", "default", "pods", "", "")),
        (
            "GET",
            "/api/v1/namespaces/default/pods",
            {"watch": "true"},
            ("watch", "", "default", "pods", "", ""),
        ),
        ("GET", "/api/v1/watch/namespaces/default/pods", {}, ("watch", "", "default", "pods", "", "")),
        ("GET", "/api/v1/namespaces/default/pods/web", {}, ("get", "", "default", "pods", "", "web")),
        ("GET", "/api/v1/namespaces/ns/pods/web/log", {}, ("get", "", "ns", "pods", "log", "web")),
        ("PUT", "/api/v1/namespaces/ns/pods/web/status", {}, ("update", "", "ns", "pods", "status", "web")),
        (
            "POST",
            "/apis/apps/v1/namespaces/ns/deployments",
            {},
            ("create", "apps", "ns", "deployments", "", ""),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/d",
            {},
            ("patch", "apps", "ns", "deployments", "", "d"),
        ),
        ("DELETE", "/api/v1/namespaces/ns/pods", {}, ("deletecollection", "", "ns", "pods", "", "")),
        ("DELETE", "/api/v1/namespaces/ns/pods/p", {}, ("delete", "", "ns", "pods", "", "p")),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "", "namespaces", "", "")),
        (
            "GET",
            "/api/v1/namespaces/kube-system",
            {},
            ("get", "", "kube-system", "namespaces", "", "kube-system"),
        ),
        ("PUT", "/api/v1/namespaces/t/finalize", {}, ("update", "", "t", "namespaces", "finalize", "t")),
        ("GET", "/api/v1/nodes", {"fieldSelector": "metadata.name=n1"}, ("list", "", "", "nodes", "", "n1")),
        ("GET", "/apis/apps/v1/deployments", {}, ("list", "apps", "", "deployments", "", "")),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else "",
)
def test_request_attributes(method: str, path: str, query: dict[str, str], expected: tuple[str, ...]) -> None:
    a = request_attributes(method, path, query, USER_X)
    assert a.resource_request
    assert (a.verb, a.api_group, a.namespace, a.resource, a.subresource, a.name) == expected


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/healthz", "/openapi/v2"])
def test_non_resource_requests(path: str) -> None:
    a = request_attributes("GET", path, {}, USER_X)
    assert (a.resource_request, a.verb, a.path) == (False, "get", path)


def test_forbidden_messages() -> None:
    named = request_attributes("GET", "/api/v1/namespaces/ns/pods/web/log", {}, USER_X)
    err = forbidden(named)
    assert err.message == (
        'pods "web" is forbidden: User "x" cannot get resource "pods/log" in API group "" in the namespace "ns"'
    )
    assert err.status()["details"] == {"name": "web", "kind": "pods"}
    path = request_attributes("GET", "/metrics", {}, USER_X)
    assert forbidden(path, "no RBAC policy matched").message == (
        'forbidden: User "x" cannot get path "/metrics": no RBAC policy matched'
    )


async def test_custom_authorizer_slots_in(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    class AllowReaders:
        async def authorize(self, attributes: RequestAttributes) -> tuple[Decision, str]:
            if attributes.verb in ("get", "list", "watch"):
                return Decision.ALLOW, ""
            return Decision.DENY, "read-only cluster"

    async def plain_user(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[USER] = UserInfo("reader", ("system:authenticated",))
        return await handler(request)

    app = web.Application(middlewares=[web.middleware(plain_user), authorization_middleware(AllowReaders())])
    app.router.add_route("*", "/api/v1/namespaces/{ns}/configmaps", whoami)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/namespaces/a/configmaps")
        assert resp.status == 200
        resp = await client.post("/api/v1/namespaces/a/configmaps")
        assert resp.status == 403
        assert (await resp.json())["message"].endswith('in the namespace "a": read-only cluster')

"""`GET /openapi/v2`: an OpenAPI v2 (Swagger 2.0) document with no definitions.

Clients read skiff's schemas from OpenAPI v3 (`openapi.py`). kubectl still asks
for v2 in one case: an object whose kind is not in any v3 document (a custom
resource whose CRD is not installed). It then looks the kind up in v2, skips
client-side validation when the kind is not there either, and goes on to
report "no matches for kind ... ensure CRDs are installed first", as against
Kubernetes. Without a v2 document it stops earlier with "the server could not
find the requested resource". So v2 is served as a valid document with empty
definitions: every kind skiff knows is in v3.

kubectl asks for gnostic's protobuf encoding (`openapi_v2.Document`); other
clients get JSON.
"""

from __future__ import annotations

import json

from aiohttp import web

from skiff import __version__

PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
TITLE = "Kubernetes"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    out = bytearray([number << 3 | 2])
    size = len(payload)
    while size > 0x7F:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def document_json(version: str) -> bytes:
    doc = {"swagger": "2.0", "info": {"title": TITLE, "version": version}, "paths": {}, "definitions": {}}
    return json.dumps(doc, separators=(",", ":")).encode()


def document_protobuf(version: str) -> bytes:
    """openapi.v2.Document{swagger: "2.0", info: {title, version}, paths: {}, definitions: {}}."""
    info = _field(1, TITLE.encode()) + _field(2, version.encode())
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"") + _field(9, b"")


async def handle_v2(request: web.Request) -> web.Response:
    version = f"v{__version__}"
    if "protobuf" in request.headers.get("Accept", ""):
        return web.Response(body=document_protobuf(version), content_type=PROTOBUF)
    return web.Response(body=document_json(version), content_type="application/json")

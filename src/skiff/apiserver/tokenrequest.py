"""`POST serviceaccounts/<name>/token`: the TokenRequest API (`kubectl create token`).

As Kubernetes' `pkg/registry/core/serviceaccount/storage/token.go`: the
body is an `authentication.k8s.io/v1 TokenRequest`; `expirationSeconds`
(default 3600) is at least 600 and at most 2^32; `boundObjectRef` may name
a Pod, Secret or Node, which must exist (in the account's namespace) and
match the uid given, and then the token dies with it. The answer (201)
echoes the request with the audiences filled in and carries `status.token`
and `status.expirationTimestamp`. `attach` wires the signer into the
registry once storage is open, as the Service allocators are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from skiff.api import errors, validation
from skiff.apiserver import content, objects
from skiff.apiserver.admission_plugins.node_restriction import token_request_problem
from skiff.apiserver.auth import USER
from skiff.apiserver.node_authz import node_identity
from skiff.apiserver.paths import Target
from skiff.apiserver.sa_token import ServiceAccountTokens

if TYPE_CHECKING:
    from skiff.apiserver.handlers import Rest
    from skiff.apiserver.registry import Registry
    from skiff.apiserver.store import Store

Obj = dict[str, Any]
GROUP, VERSION, KIND = "authentication.k8s.io", "v1", "TokenRequest"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
BINDABLE = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}
EXTRA_KEY = "token_issuer"


def attach(registry: Registry, store: Store, tokens: ServiceAccountTokens) -> None:
    """Let `tokens` read accounts and pods from `store`, and the token subresource find `tokens`."""

    async def lookup(plural: str, namespace: str, name: str) -> Obj | None:
        rt = registry.get("", "v1", plural)
        if rt is None or not name:
            return None
        kv = await store.read(rt.key(namespace if rt.namespaced else None, name))
        return objects.decode(rt, kv) if kv is not None else None

    tokens.lookup = lookup
    sa_rt = registry.get("", "v1", "serviceaccounts")
    if sa_rt is not None:
        sa_rt.extra[EXTRA_KEY] = tokens


def validate(name: str, spec: Obj) -> None:
    errs = []
    seconds = spec.get("expirationSeconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        errs.append(validation.invalid("spec.expirationSeconds", seconds, "must be an integer"))
    elif seconds < MIN_EXPIRATION:
        errs.append(validation.invalid("spec.expirationSeconds", seconds,
                                       "may not specify a duration less than 10 minutes"))  # fmt: skip
    elif seconds > MAX_EXPIRATION:
        errs.append(validation.invalid("spec.expirationSeconds", seconds,
                                       "may not specify a duration larger than 2^32 seconds"))  # fmt: skip
    audiences = spec.get("audiences")
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        errs.append(validation.invalid("spec.audiences", audiences, "must be a list of strings"))
    if errs:
        raise errors.field_error(KIND, name, errs, group=GROUP)


async def handle(rest: Rest, request: web.Request, t: Target) -> web.StreamResponse:
    if request.method != "POST":
        raise errors.MethodNotAllowed(f"{request.method} is not supported on serviceaccounts/token")
    tokens = t.rt.extra.get(EXTRA_KEY)
    if not isinstance(tokens, ServiceAccountTokens):
        raise errors.NotFound("the server could not find the requested resource (token signing is not configured)")
    name, ns = t.name or "", t.namespace or ""
    body = content.decode_body(await content.read_body(request), content.media_type(request)) or {}
    if not isinstance(body, dict) or body.get("kind", KIND) != KIND:
        raise errors.BadRequest(f"the body must be an {GROUP}/{VERSION} TokenRequest")
    spec: Obj = dict(body.get("spec") or {})
    if spec.get("audiences") is None:
        spec["audiences"] = []
    if spec.get("expirationSeconds") is None:
        spec["expirationSeconds"] = DEFAULT_EXPIRATION
    validate(name, spec)
    sa = await rest.store.get(t.rt, ns, name)  # 404 serviceaccounts "x" not found
    await _node_restriction(rest, request, ns, name, spec.get("boundObjectRef"))
    bound = await _bound_object(rest, ns, spec.get("boundObjectRef"))
    issued = tokens.issue(sa, audiences=spec["audiences"] or tokens.audiences,
                          expiration_seconds=int(spec["expirationSeconds"]), bound=bound)  # fmt: skip
    spec["audiences"] = issued["aud"]
    answer = {
        "kind": KIND,
        "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": objects.now_rfc3339()},
        "spec": spec,
        "status": {
            "token": issued["token"],
            "expirationTimestamp": datetime.fromtimestamp(issued["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    return content.json_response(answer, status=201)


async def _node_restriction(rest: Rest, request: web.Request, ns: str, name: str, ref: Any) -> None:
    """NodeRestriction for TokenRequests: a node's token must be bound to a pod running on it."""
    user = request.get(USER)
    if user is None:
        return
    node, is_node = node_identity(user)
    if not is_node:
        return
    pod = None
    if isinstance(ref, dict) and ref.get("kind") == "Pod" and ref.get("name"):
        rt = rest.registry.get("", "v1", "pods")
        assert rt is not None
        kv = await rest.store.read(rt.key(ns, str(ref["name"])))
        pod = objects.decode(rt, kv) if kv is not None else None
    problem = token_request_problem(node, ref, pod) if node else f'could not determine node from user "{user.name}"'
    if problem is not None:
        raise errors.Forbidden(f'serviceaccounts "{name}" is forbidden: {problem}', name=name, kind="serviceaccounts")


async def _bound_object(rest: Rest, ns: str, ref: Any) -> Obj | None:
    if not ref:
        return None
    if not isinstance(ref, dict):
        raise errors.BadRequest("spec.boundObjectRef must be an object")
    kind = str(ref.get("kind", ""))
    plural = BINDABLE.get(kind)
    if plural is None:
        raise errors.BadRequest(f"cannot bind token for object of type {kind}")
    rt = rest.registry.get("", "v1", plural)
    assert rt is not None
    obj = await rest.store.get(rt, ns if rt.namespaced else None, str(ref.get("name", "")))
    uid = ref.get("uid")
    if uid and obj["metadata"].get("uid") != uid:
        raise errors.Conflict(
            f'Operation cannot be fulfilled on {kind} "{ref.get("name")}": the UID in the bound object reference '
            f"({uid}) does not match the UID in record. The object might have been deleted and then recreated",
            name=str(ref.get("name")), kind=kind,
        )  # fmt: skip
    return {"kind": kind, "metadata": obj["metadata"]}

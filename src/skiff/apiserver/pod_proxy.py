"""pods/log, pods/exec, pods/attach and pods/portforward: proxied to the pod's node, as kube-apiserver does.

The apiserver checks what it can (the pod, its container, its phase) with Kubernetes' messages,
then calls the node's kubelet API at the Node's InternalIP and
`status.daemonEndpoints.kubeletEndpoint.Port` with its kubelet-client certificate (CN
kube-apiserver-kubelet-client, O system:masters, issued from the cluster CA beside the other
credentials). Logs stream back as text/plain; exec, attach and port-forward are WebSockets whose
messages are relayed unchanged both ways (the subprotocol is the one the kubelet picked from those
the client offered). An answer of the kubelet other than success becomes a Status with its code
and its text, which kubectl prints as `Error from server (BadRequest): ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from skiff.api import errors
from skiff.api.kubelet_api import KUBELET_CLIENT_GROUP, KUBELET_CLIENT_USER
from skiff.apiserver import certs, pki
from skiff.apiserver.paths import Target

if TYPE_CHECKING:
    from skiff.apiserver.handlers import Rest

log = logging.getLogger(__name__)
Obj = dict[str, Any]

KUBELET_TLS: web.AppKey[ssl.SSLContext] = web.AppKey("kubelet_tls", ssl.SSLContext)
CLOSE_TIMEOUT = 1.0  # how long a closing WebSocket waits for the peer's close frame (some clients never send it)
CLIENT_CHECK = 1.0  # seconds between checks that a log follower is still connected
SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})
_STATUS_ERRORS: dict[int, type[errors.StatusError]] = {
    400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    503: errors.ServiceUnavailable,
}  # fmt: skip


# --- the kubelet-client credential --------------------------------------------------------------


def kubelet_client_paths(paths: pki.PKIPaths) -> tuple[Path, Path]:
    return paths.tls_dir / "kubelet-client.crt", paths.tls_dir / "kubelet-client.key"


def ensure_kubelet_client_cert(paths: pki.PKIPaths) -> tuple[Path, Path]:
    """The apiserver's client certificate for kubelets (kube-apiserver's --kubelet-client-certificate).

    Issued by the cluster CA, reused while valid. Blocking.
    """
    cert_path, key_path = kubelet_client_paths(paths)
    certs.ensure_client_cert(cert_path, key_path, pki.load_ca(paths), user=KUBELET_CLIENT_USER,
                             groups=[KUBELET_CLIENT_GROUP])  # fmt: skip
    return cert_path, key_path


def kubelet_client_context(paths: pki.PKIPaths) -> ssl.SSLContext:
    """TLS to kubelets: the kubelet-client certificate; kubelets' self-signed serving certificates are
    not verified (no --kubelet-certificate-authority). Blocking."""
    cert, key = ensure_kubelet_client_cert(paths)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    return ctx


# --- checks Kubernetes makes before it calls the kubelet ----------------------------------------


def _names(containers: list[Obj]) -> str:
    return " ".join(c.get("name", "") for c in containers)


def validate_container(pod: Obj, container: str) -> str:
    """The container the request is for (the only one when none is named), or Kubernetes' BadRequest."""
    spec = pod.get("spec") or {}
    containers, init = spec.get("containers") or [], spec.get("initContainers") or []
    name = pod["metadata"]["name"]
    if not container:
        if len(containers) == 1:
            return str(containers[0].get("name"))
        if not containers:
            raise errors.BadRequest(f"the pod {name} does not have any containers")
        message = f"a container name must be specified for pod {name}, choose one of: [{_names(containers)}]"
        if init:
            message += f" or one of the init containers: [{_names(init)}]"
        raise errors.BadRequest(message)
    every = [*containers, *init, *(spec.get("ephemeralContainers") or [])]
    if not any(c.get("name") == container for c in every):
        raise errors.BadRequest(f"container {container} is not valid for pod {name}")
    return container


async def _node_address(rest: Rest, node_name: str) -> tuple[str, int]:
    rt = rest.registry.get("", "v1", "nodes")
    assert rt is not None
    node = await rest.store.get(rt, None, node_name)
    status = node.get("status") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    host = addresses.get("InternalIP") or addresses.get("ExternalIP") or addresses.get("Hostname")
    if not host:
        raise errors.BadRequest(f"node {node_name} has no address to reach its kubelet at")
    port = int(((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 10250)
    return (f"[{host}]" if ":" in host else host), port


def _kubelet_error(code: int, text: str) -> errors.StatusError:
    return _STATUS_ERRORS.get(code, errors.InternalError)(text.strip() or f"the kubelet answered {code}")


# --- handlers -----------------------------------------------------------------------------------


async def handle(rest: Rest, request: web.Request, t: Target) -> web.StreamResponse:
    assert t.name is not None
    pod = await rest.store.get(t.rt, t.namespace, t.name)
    sub = t.subresource
    if sub == "log":
        if request.method != "GET":
            raise errors.MethodNotAllowed(f"{request.method} is not supported on pods/log")
        return await _logs(rest, request, pod)
    if request.method not in ("GET", "POST"):
        raise errors.MethodNotAllowed(f"{request.method} is not supported on pods/{sub}")
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    phase = (pod.get("status") or {}).get("phase")
    if sub == "portforward":
        if phase != "Running":
            raise errors.BadRequest(f"pod {name} is not running and cannot be forwarded")
        path = f"/portForward/{ns}/{name}"
    else:
        container = validate_container(pod, request.query.get("container", ""))
        if phase in ("Succeeded", "Failed"):
            raise errors.BadRequest(f"cannot {sub} into a container in a completed pod; current phase is {phase}")
        path = f"/{sub}/{ns}/{name}/{container}"
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise errors.BadRequest(f"pod {name} does not have a host assigned")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        # kubectl's SPDY fallback after a refused WebSocket: what the kubelet says (container not found...),
        # else that only WebSocket is served
        raise await _kubelet_refusal(rest, request, node, path)
    return await _relay_websocket(rest, request, node, path)


async def _kubelet_refusal(rest: Rest, request: web.Request, node: str, path: str) -> errors.StatusError:
    host, port = await _node_address(rest, node)
    url = URL(f"https://{host}:{port}{path}").with_query(request.query)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            async with session.get(url, ssl=request.app[KUBELET_TLS]) as plain:
                text = (await plain.content.read(4096)).decode(errors="replace")
                return _kubelet_error(plain.status if plain.status >= 400 else 400, text)
        except aiohttp.ClientError as e:
            return errors.InternalError(f"error dialing the kubelet of node {node}: {e}")


async def _logs(rest: Rest, request: web.Request, pod: Obj) -> web.StreamResponse:
    container = validate_container(pod, request.query.get("container", ""))
    node = (pod.get("spec") or {}).get("nodeName")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    if not node:  # not scheduled yet: no logs (Kubernetes answers an empty stream)
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    host, port = await _node_address(rest, node)
    meta = pod["metadata"]
    url = URL(f"https://{host}:{port}/containerLogs/{meta['namespace']}/{meta['name']}/{container}")
    query = {k: v for k, v in request.query.items() if k != "container" and k != "insecureSkipTLSVerifyBackend"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            upstream = await session.get(url.with_query(query), ssl=request.app[KUBELET_TLS])
        except aiohttp.ClientError as e:
            raise errors.InternalError(f'Get "{url}": {e}') from e
        async with upstream:
            if upstream.status != 200:
                raise _kubelet_error(upstream.status, (await upstream.content.read(4096)).decode(errors="replace"))
            await resp.prepare(request)
            while True:
                try:  # a follow of a silent container: notice a client that went away
                    chunk = await asyncio.wait_for(upstream.content.readany(), CLIENT_CHECK)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if not chunk:
                    break
                try:
                    await resp.write(chunk)
                except ConnectionResetError:  # the client went away
                    return resp
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


async def _relay_websocket(rest: Rest, request: web.Request, node: str, path: str) -> web.StreamResponse:
    host, port = await _node_address(rest, node)
    url = URL(f"https://{host}:{port}{path}").with_query(request.query)
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    tls = request.app[KUBELET_TLS]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
        try:
            upstream = await session.ws_connect(url, protocols=offered, ssl=tls, max_msg_size=0, autoping=True,
                                                method=request.method)  # fmt: skip
        except aiohttp.WSServerHandshakeError:
            # the kubelet refused before upgrading: fetch its words (a plain request fails the same way)
            raise await _kubelet_refusal(rest, request, node, path) from None
        except aiohttp.ClientError as e:
            raise errors.InternalError(f"error dialing the kubelet of node {node}: {e}") from e
        async with upstream:
            client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                           max_msg_size=0, timeout=CLOSE_TIMEOUT)  # fmt: skip
            await client.prepare(request)
            await _pipe(client, upstream)
    return client


async def _pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def down() -> None:  # kubelet -> client
        async for msg in upstream:
            if msg.type == WSMsgType.BINARY:
                await client.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await client.send_str(msg.data)

    async def up() -> None:  # client -> kubelet
        async for msg in client:
            if msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await upstream.send_str(msg.data)

    tasks = [asyncio.create_task(down(), name="kubelet->client"), asyncio.create_task(up(), name="client->kubelet")]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        await upstream.close()
        await client.close()

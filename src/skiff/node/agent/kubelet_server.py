"""The kubelet API of the node agent: container logs, exec, attach and port-forward over HTTPS.

The apiserver proxies `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` here (the
Node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`, 10250 by default):

    GET /containerLogs/{namespace}/{pod}/{container}   follow, tailLines, sinceSeconds, sinceTime,
                                                        previous, timestamps, limitBytes
    GET|POST /exec/{namespace}/{pod}/{container}        WebSocket, v5/v4.channel.k8s.io
    GET|POST /attach/{namespace}/{pod}/{container}      WebSocket, the container's output (and stdin)
    GET|POST /portForward/{namespace}/{pod}             WebSocket, SPDY/3.1+portforward.k8s.io or
                                                        v4.channel.k8s.io (ports=...)

Callers authenticate with a client certificate signed by the cluster CA (fetched from the server
at start, the agent's kubeconfig vouching for it) and only the apiserver's kubelet-client
identity is let in, as a kubelet with webhook authorization lets only that user reach these
paths. The serving certificate is self-signed and kept in the state directory (the apiserver does
not verify it, as kube-apiserver without --kubelet-certificate-authority).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skiff.api.kubelet_api import EXEC_PROTOCOLS, KUBELET_CLIENT_USER, PORT_FORWARD_TUNNEL_PROTOCOL, exec_error
from skiff.client import Client, Informer
from skiff.node.agent import container_logs, portforward, streams
from skiff.node.agent.container_logs import LogOptionError, LogOptions
from skiff.node.runtime.attach import open_session
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.sandbox import SandboxNotFound
from skiff.node.runtime.types import ContainerState

log = logging.getLogger(__name__)
Obj = dict[str, Any]


CLOSE_TIMEOUT = 1.0  # how long a closing WebSocket waits for the peer's close frame


class KubeletError(Exception):
    """An answer other than success: the HTTP code and the kubelet's plain-text message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _serving_pair(tls_dir: Path, node_name: str, node_ip: str) -> tuple[Path, Path]:
    """A self-signed serving certificate for this node (reused while valid). Blocking."""
    cert_path, key_path = tls_dir / "kubelet.crt", tls_dir / "kubelet.key"
    now = datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc - now > datetime.timedelta(days=30) and key_path.exists():
            return cert_path, key_path
    except (OSError, ValueError):
        pass
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@{int(now.timestamp())}")])
    sans: list[x509.GeneralName] = [x509.DNSName(node_name), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]  # fmt: skip
    if node_ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(node_ip)))
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def ssl_context(tls_dir: Path, node_name: str, node_ip: str, client_ca: bytes) -> ssl.SSLContext:
    """TLS with the node's serving certificate; client certificates verified against the cluster CA. Blocking."""
    cert, key = _serving_pair(tls_dir, node_name, node_ip)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=client_ca.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL  # no certificate: a 401 that says so, rather than a failed handshake
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _subject(peercert: Any) -> tuple[str, list[str]]:
    """The common name and organizations of a verified peer certificate (`SSLSocket.getpeercert()`)."""
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return cn, orgs


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    if not peercert:
        return web.Response(status=401, text="Unauthorized")
    user, _groups = _subject(peercert)
    if user != KUBELET_CLIENT_USER:
        verb = "create" if request.method == "POST" else "get"
        resource = request.path.strip("/").split("/", 1)[0]
        return web.Response(status=403, text=f"Forbidden (user={user}, verb={verb}, resource=nodes, "
                                             f"subresource={resource.lower()})")  # fmt: skip
    try:
        return await handler(request)
    except KubeletError as e:
        return web.Response(status=e.code, text=e.message)


class KubeletServer:
    def __init__(self, *, client: Client, pods: Informer, runtime: Runtime, state_dir: Path, node_name: str,
                 node_ip: str, port: int, address: str = "") -> None:  # fmt: skip
        self.client = client
        self.pods = pods
        self.runtime = runtime
        self.state_dir = state_dir
        self.node_name = node_name
        self.node_ip = node_ip
        self.port = port
        self.address = address
        self._runner: web.AppRunner | None = None

    async def _cluster_ca(self) -> bytes:
        """The cluster CA: the server's /cacerts, read over the connection the kubeconfig verifies."""
        async with self.client.session().get(self.client.config.server + "/cacerts") as resp:
            resp.raise_for_status()
            return await resp.read()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[authenticate])
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        for verb in ("GET", "POST"):
            app.router.add_route(verb, "/exec/{namespace}/{pod}/{container}", self.exec)
            app.router.add_route(verb, "/attach/{namespace}/{pod}/{container}", self.attach)
            app.router.add_route(verb, "/portForward/{namespace}/{pod}", self.port_forward)
        return app

    async def start(self) -> bool:
        """Listen; on failure (the port taken, the CA unreadable) say why and go on without the kubelet API:
        the pods run all the same, only logs, exec and port-forward cannot reach this node."""
        try:
            ca = await self._cluster_ca()
            ctx = await asyncio.to_thread(ssl_context, self.state_dir / "kubelet-tls", self.node_name, self.node_ip, ca)
            self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.address or None, self.port, ssl_context=ctx, reuse_address=True)
            await site.start()
        except (OSError, ssl.SSLError, aiohttp.ClientError, ValueError) as e:
            log.error("kubelet API not served on port %d (kubectl logs, exec and port-forward will not reach "
                      "this node): %s", self.port, e)  # fmt: skip
            await self.stop()
            return False
        log.info("kubelet API listening on port %d", self.port)
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- lookups --------------------------------------------------------------------------------
    def _pod(self, request: web.Request) -> Obj:
        ns, name = request.match_info["namespace"], request.match_info["pod"]
        pod = self.pods.get(f"{ns}/{name}")
        if pod is None:
            raise KubeletError(404, f'pod "{name}" not found')
        return pod

    async def _running_container(self, pod: Obj, container: str) -> str:
        uid = pod["metadata"]["uid"]
        found = [c for c in await self.runtime.list()
                 if c.pod_uid == uid and c.name == container and c.state == ContainerState.RUNNING]  # fmt: skip
        if not found:
            raise KubeletError(404, f"container not found ({container!r})".replace("'", '"'))
        return max(found, key=lambda c: c.attempt).id

    @staticmethod
    def _require_websocket(request: web.Request) -> None:
        """The streaming endpoints speak WebSocket only (a plain SPDY upgrade is not served)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise KubeletError(400, "Upgrade request required")

    def _container_exited(self, cid: str) -> bool:
        d = self.runtime.containers_dir / cid
        return (d / "exit.json").exists() or not d.exists()

    # --- logs -----------------------------------------------------------------------------------
    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        container = request.match_info["container"]
        try:
            opts = LogOptions.from_query(request.query)
        except LogOptionError as e:
            raise KubeletError(400, str(e)) from None
        path, live_id = self._log_target(pod, container, opts.previous)

        async def running() -> bool:
            if request.transport is None or request.transport.is_closing():
                return False  # the caller went away: stop following
            return live_id is not None and not await asyncio.to_thread(self._container_exited, live_id)

        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the caller went away
            if path is not None:
                async for chunk in container_logs.stream(path, opts, running):
                    await resp.write(chunk)
            await resp.write_eof()
        return resp

    def _log_target(self, pod: Obj, container: str, previous: bool) -> tuple[Path | None, str | None]:
        """The log file to read (and the running container writing it, to follow), as the kubelet
        picks the container from the pod's status; its errors word for word."""
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or []),
                    *(status.get("ephemeralContainerStatuses") or [])]  # fmt: skip
        st = next((s for s in statuses if s.get("name") == container), None)
        if st is None:
            raise KubeletError(400, f'container "{container}" in pod "{name}" is not available')
        state, last = st.get("state") or {}, st.get("lastState") or {}
        logs_dir = self.state_dir / "pods" / pod["metadata"]["uid"] / "logs" / container
        files = container_logs.attempts(logs_dir)
        if previous:
            if not last.get("terminated"):
                raise KubeletError(400, f'previous terminated container "{container}" in pod "{name}" not found')
            # while it waits to restart the newest log is the last terminated one; else the one before
            index = 0 if state.get("waiting") else 1
            return (logs_dir / f"{files[index]}.log" if len(files) > index else None), None
        if state.get("running"):
            cid = str(st.get("containerID") or "").removeprefix("runc://") or None
            return (logs_dir / f"{files[0]}.log" if files else None), cid
        if state.get("terminated") or last.get("terminated"):
            return (logs_dir / f"{files[0]}.log" if files else None), None
        reason = (state.get("waiting") or {}).get("reason")
        if reason == "ErrImagePull":
            raise KubeletError(400, f'container "{container}" in pod "{name}" is waiting to start: '
                                    "image can't be pulled")  # fmt: skip
        if reason == "ImagePullBackOff":
            raise KubeletError(400, f'container "{container}" in pod "{name}" is waiting to start: '
                                    "trying and failing to pull image")  # fmt: skip
        if reason:
            raise KubeletError(400, f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        raise KubeletError(400, f'container "{container}" in pod "{name}" is waiting to start - no logs yet')

    # --- exec and attach ------------------------------------------------------------------------
    async def exec(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        container = request.match_info["container"]
        q = request.query
        argv = q.getall("command", [])
        if not argv:
            raise KubeletError(400, "you must specify at least 1 command")
        flags = {k: q.get(k, "").lower() in ("true", "1") for k in ("stdin", "stdout", "stderr", "tty")}
        cid = await self._running_container(pod, container)
        self._require_websocket(request)
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0, timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        try:
            handle = await self.runtime.exec_process(cid, argv, tty=flags["tty"])
        except Exception as e:  # the client is told on the error channel
            await streams.send_status(ws, exec_error(f"failed to exec in container: {e}"))
            await ws.close()
            return ws
        try:
            await streams.run_exec(ws, handle, argv, stdin=flags["stdin"], stdout=flags["stdout"],
                                   stderr=flags["stderr"] and not flags["tty"])  # fmt: skip
        finally:
            await ws.close()
        return ws

    async def attach(self, request: web.Request) -> web.StreamResponse:
        """The container's output from now on. A container started with `stdin: true` is attached through its
        shim: output as it is written (a terminal's prompt and echo at once) and, with `stdin=true`, the
        client's input and terminal size; any other container's output is followed in its log."""
        pod = self._pod(request)
        container = request.match_info["container"]
        cid = await self._running_container(pod, container)
        path, _ = self._log_target(pod, container, False)
        self._require_websocket(request)
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0, timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        wants_stdin = request.query.get("stdin", "").lower() in ("true", "1")
        session = await open_session(self.runtime.containers_dir / cid, stdin=wants_stdin)
        reader = asyncio.create_task(streams.attach_input(ws, session, stdin=wants_stdin), name=f"attach {cid}")

        async def running() -> bool:
            return not reader.done() and not await asyncio.to_thread(self._container_exited, cid)

        try:
            if session is not None:
                await streams.attach_output(ws, session)
            elif path is not None:
                async for chunk in container_logs.stream(path, LogOptions(follow=True, tail_lines=0), running):
                    await streams.send(ws, 1, chunk)
            await streams.send_status(ws, {"metadata": {}, "status": "Success"})
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()
        return ws

    # --- port-forward ---------------------------------------------------------------------------
    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        try:
            sandbox = self.runtime.sandbox(pod["metadata"]["uid"])
        except SandboxNotFound:
            raise KubeletError(404, f'pod "{pod["metadata"]["name"]}" has no sandbox on this node') from None
        self._require_websocket(request)
        try:
            ports = [int(p) for raw in request.query.getall("ports", []) for p in raw.split(",") if p.strip()]
        except ValueError:
            raise KubeletError(400, "invalid port in the ports query parameter") from None
        if any(not 0 < p < 65536 for p in ports):
            raise KubeletError(400, "port must be greater than 0 and less than 65536")
        protocols = (PORT_FORWARD_TUNNEL_PROTOCOL, *EXEC_PROTOCOLS[1:])
        ws = web.WebSocketResponse(protocols=protocols, max_msg_size=0, timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)

        async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            sock = await asyncio.to_thread(portforward.connect_in_netns, sandbox.netns, port)
            return await asyncio.open_connection(sock=sock)

        try:
            if ws.ws_protocol == PORT_FORWARD_TUNNEL_PROTOCOL:
                await portforward.serve_websocket(ws, dial, pod=pod["metadata"]["name"])
            else:  # channels: one connection per port of the query
                await portforward.serve_channels(ws, dial, ports, pod=pod["metadata"]["name"])
        finally:
            await ws.close()
        return ws


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")

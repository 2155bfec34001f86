"""The API server process: credentials, storage, the HTTPS listener and a clean shutdown.

`serve` is what `skiff server` runs. It wires the pieces the rest of the
apiserver package provides: the PKI and kubeconfig (`pki.py`, in a
thread), the store (`storage.factory.open_backend`), the application
(`app.create_app`) behind authentication and authorization (`auth.py`),
served over HTTPS only. SIGTERM or SIGINT stops it in phases: stop
accepting, end long-running requests (watches, log follows, exec), give
other in-flight requests a short grace, run the app's cleanup, close the
store, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import logging
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from skiff.api import errors
from skiff.apiserver import fastroute, leanhttp, pod_proxy
from skiff.apiserver.access_review import AccessReviews
from skiff.apiserver.admission_plugins import AdmissionConfig
from skiff.apiserver.app import CACHE, REGISTRY, STORE, create_app
from skiff.apiserver.auth import REQUEST_ATTRIBUTES, Authenticator, JoinTokenAuthenticator, TokenFile
from skiff.apiserver.authchain import auth_middleware
from skiff.apiserver.authz import Authorizer, default_authorizer
from skiff.apiserver.ipalloc import ServiceIPRange
from skiff.apiserver.local_access import LocalAccess
from skiff.apiserver.node_authz import NodeAuthorizer
from skiff.apiserver.pki import PKIPaths, ensure_pki
from skiff.apiserver.rbac import RBACAuthorizer
from skiff.apiserver.rbac_escalation import EscalationCheck
from skiff.apiserver.rbac_escalation import attach as attach_escalation_check
from skiff.apiserver.sa_token import ServiceAccountTokens
from skiff.apiserver.service_alloc import ServiceNetworkConfig
from skiff.storage.factory import open_backend
from skiff.storage.interface import StorageError

log = logging.getLogger(__name__)

DEFAULT_PORT = 6443

# how long in-flight requests may take to finish once shutdown starts
SHUTDOWN_GRACE = 5.0
GC_YOUNG_THRESHOLD = 50_000  # allocations between young-generation collections (CPython: 700)
# how long long-running requests get to end by themselves before they are cancelled
LONG_RUNNING_GRACE = 1.0

# Kubernetes' long-running requests: they never finish on their own
_LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
_LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})


@dataclass
class ServerConfig:
    data_dir: str
    bind_address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    datastore_endpoint: str | None = None
    tls_sans: tuple[str, ...] = ()
    compact_interval: float = 300.0
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    services: ServiceNetworkConfig = field(default_factory=ServiceNetworkConfig)


class ServerStartError(Exception):
    """The server cannot start (data directory not writable, address in use...); the message says why."""


def local_server_url(bind_address: str, port: int) -> str:
    """The URL a client on this host uses: loopback when bound to every address, else the bind address."""
    host = bind_address.strip() or "0.0.0.0"
    if host in ("0.0.0.0", "127.0.0.1"):
        return f"https://127.0.0.1:{port}"
    if host == "::":
        return f"https://[::1]:{port}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"https://{host}:{port}"
    return f"https://[{ip}]:{port}" if ip.version == 6 else f"https://{ip}:{port}"


def make_ssl_context(paths: PKIPaths) -> ssl.SSLContext:
    """TLS 1.2+, the serving certificate, and optional client certificates verified against the CA.

    Blocking (reads files). A client without a certificate still connects
    (and then needs a token); one with a certificate the CA did not sign is
    refused in the handshake.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths.serving_cert, paths.serving_key)
    ctx.load_verify_locations(cafile=paths.ca_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # a connection's client certificate never changes (authentication remembers it per connection)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def serve(
    config: ServerConfig,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    authorizer: Authorizer | None = None,
    local: LocalAccess | None = None,
) -> None:
    """Run the API server until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly and return.

    `ready` is set once the listener accepts connections (and `local`'s socket, if given, is
    served too). Raises `ServerStartError` when it cannot start.
    """
    stop = stop if stop is not None else asyncio.Event()
    data_dir = Path(config.data_dir)
    server_url = local_server_url(config.bind_address, config.port)
    with _stop_on_signals(stop):
        paths, ssl_context = await _prepare_credentials(config, data_dir, server_url)
        try:
            backend = await asyncio.to_thread(open_backend, config.datastore_endpoint, str(data_dir))
            await backend.start()
        except (OSError, ValueError, StorageError) as e:
            raise ServerStartError(f"cannot open the datastore: {e}") from e
        try:
            tracker = LongRunningRequests()
            sa_tokens = await asyncio.to_thread(ServiceAccountTokens.from_data_dir, data_dir)
            rbac = RBACAuthorizer()  # reads the app's watch cache, attached below
            nodes = NodeAuthorizer()  # Node,RBAC: its graph follows the watch cache too
            chain = authorizer if authorizer is not None else default_authorizer(rbac, node=nodes)
            app = create_app(
                backend=backend,
                compact_interval=config.compact_interval,
                admission=config.admission,
                service_account_tokens=sa_tokens,
                services=dataclasses.replace(
                    config.services, advertise_address=config.bind_address, secure_port=config.port
                ),
                middlewares=[
                    # authentication, authorization and long-running tracking: one layer per request
                    auth_middleware(
                        Authenticator(
                            token_authenticators=[
                                *([local] if local is not None else []),
                                TokenFile(paths.tokens),
                                JoinTokenAuthenticator(paths.join_token),
                                sa_tokens,
                            ]
                        ),
                        chain,
                        tracker=tracker,
                    ),
                ],
            )
            rbac.attach(app[CACHE])
            nodes.graph.attach(app[CACHE])
            app.on_cleanup.append(lambda _app: nodes.close())
            app[STORE].access_reviews = AccessReviews(chain, rbac)
            attach_escalation_check(app[REGISTRY], EscalationCheck(chain, rbac))
            app.on_cleanup.append(lambda _app: rbac.close())
            app.router.add_get("/cacerts", _ca_certs(await asyncio.to_thread(paths.ca_cert.read_bytes)))
            app[pod_proxy.KUBELET_TLS] = await asyncio.to_thread(pod_proxy.kubelet_client_context, paths)
            app.on_shutdown.append(tracker.on_shutdown)
            access_log = logging.getLogger("aiohttp.access")
            runner = web.AppRunner(
                app,
                handle_signals=False,
                shutdown_timeout=SHUTDOWN_GRACE,
                access_log=access_log if access_log.isEnabledFor(logging.DEBUG) else None,
            )
            await runner.setup()
            assert runner.server is not None
            # REST paths skip the router walk, plain REST requests aiohttp's request handling too
            lean = leanhttp.LeanServer(fastroute.install(runner, app), runner.server)
            try:
                await _listen(runner, lean, config, ssl_context)
                if local is not None:
                    await local.listen(
                        runner, lambda sock: leanhttp.LeanSockSite(runner, lean, sock, shutdown_timeout=SHUTDOWN_GRACE)
                    )
                log.info(
                    "skiff apiserver listening on https://%s:%d; kubeconfig: %s",
                    _url_host(config.bind_address),
                    config.port,
                    paths.kubeconfig,
                )
                log.info(
                    "join token for other machines: %s (there: skiff agent --server https://THIS-HOST:%d "
                    '--token "TOKEN")',
                    paths.join_token,
                    config.port,
                )
                _tune_gc()
                if ready is not None:
                    ready.set()
                await stop.wait()
                log.info("shutting down")
            finally:
                await runner.cleanup()
                if local is not None:
                    local.remove()
        finally:
            await backend.close()
    log.info("stopped")


def _ca_certs(pem: bytes) -> Handler:
    """GET /cacerts: the cluster CA, unauthenticated, for agents to check against their join token (as k3s)."""

    async def ca_certs(request: web.Request) -> web.StreamResponse:
        return web.Response(body=pem, content_type="application/x-pem-file")

    return ca_certs


def _tune_gc() -> None:
    """Keep the cyclic garbage collector from pausing requests for long.

    What was loaded at start (modules, schemas, the watch cache's first state)
    lives as long as the server: frozen, later collections skip it. A larger
    young generation means fewer collections under load; objects that die
    young are freed by reference counting anyway. Full collections of a
    server holding tens of thousands of objects cost tens of milliseconds,
    which would show up as the p99 of requests in flight at the time.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)  # full collections still come, far apart


async def _prepare_credentials(
    config: ServerConfig, data_dir: Path, server_url: str
) -> tuple[PKIPaths, ssl.SSLContext]:
    # the kubernetes Service's address in the configured range (pki adds the default range's)
    extra_sans = [*config.tls_sans, ServiceIPRange.parse(config.services.cluster_ip_range).kubernetes_ip]
    if config.bind_address.strip() not in ("", "0.0.0.0", "::"):
        extra_sans.append(config.bind_address.strip())
    try:
        paths = await asyncio.to_thread(ensure_pki, data_dir, server_url=server_url, extra_sans=extra_sans)
        ssl_context = await asyncio.to_thread(make_ssl_context, paths)
    except OSError as e:
        raise ServerStartError(f"cannot set up credentials in {data_dir}: {e}") from e
    return paths, ssl_context


async def _listen(
    runner: web.AppRunner, lean: leanhttp.LeanServer, config: ServerConfig, ssl_context: ssl.SSLContext
) -> None:
    """Listen with plain REST requests served by `leanhttp`, everything else by aiohttp."""
    host = config.bind_address.strip() or None
    site = leanhttp.LeanTCPSite(
        runner, lean, host, config.port, ssl_context=ssl_context, reuse_address=True, shutdown_timeout=SHUTDOWN_GRACE
    )
    try:
        await site.start()
    except OSError as e:
        raise ServerStartError(
            f"cannot listen on {_url_host(config.bind_address)}:{config.port}: {e.strerror or e}"
        ) from e


def _url_host(bind_address: str) -> str:
    host = bind_address.strip() or "0.0.0.0"
    return f"[{host}]" if ":" in host else host


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set `stop` on SIGTERM and SIGINT while inside (only possible in the main thread)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _on_signal, sig, stop)
        except (NotImplementedError, RuntimeError, ValueError):
            log.debug("cannot handle %s here; stop the server through its stop event", sig.name)
        else:
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.info("received %s again; shutdown is already under way", sig.name)
    else:
        log.info("received %s", sig.name)
    stop.set()


class LongRunningRequests:
    """Tracks watches, log follows, exec… so that shutdown can end them instead of waiting.

    A `RequestTracker` for `authchain.auth_middleware` (or a middleware of its
    own, `middleware`), after authorization: it reads `REQUEST_ATTRIBUTES`.
    On shutdown, such requests get `LONG_RUNNING_GRACE` seconds to end by
    themselves (the app's own shutdown hooks may close watches), then are
    cancelled.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._closing = False

    @property
    def middleware(self) -> Middleware:
        @web.middleware
        async def track_long_running(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self.wants(request):
                return await handler(request)
            return await self.run(request, handler)

        return track_long_running

    def wants(self, request: web.Request) -> bool:
        return self._is_long_running(request)

    async def run(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._closing:
            # a client whose watch was just closed re-watches on its kept-alive connection: turning it
            # away keeps a new long-running request from holding the shutdown for its whole grace
            raise errors.ServiceUnavailable("the server is shutting down; retry against a running server")
        task = asyncio.current_task()
        if task is None:
            return await handler(request)
        self._tasks.add(task)
        try:
            return await handler(request)
        finally:
            self._tasks.discard(task)

    @staticmethod
    def _is_long_running(request: web.Request) -> bool:
        attributes = request.get(REQUEST_ATTRIBUTES)
        if attributes is None or not attributes.resource_request:
            return False
        return (
            attributes.verb in _LONG_RUNNING_VERBS
            or attributes.subresource in _LONG_RUNNING_SUBRESOURCES
            or (attributes.verb == "get" and request.query.get("watch", "") in ("1", "true", "True"))
        )

    async def on_shutdown(self, _app: web.Application) -> None:
        self._closing = True
        tasks = [t for t in self._tasks if not t.done()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=LONG_RUNNING_GRACE)
        if pending:
            log.info("closing %d long-running request(s)", len(pending))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=LONG_RUNNING_GRACE)

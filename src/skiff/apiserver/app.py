"""The aiohttp application: health, version, discovery, OpenAPI and every REST path.

`create_app` is the seam between the HTTP server (TLS, authentication,
lifecycle in `serve.py`) and the API machinery (registry, generic store,
watch cache). The caller opens and closes the storage backend; the app's
startup hook starts the watch cache and makes sure the namespaces and the
system PriorityClasses every cluster has exist, repairs the Service
allocation records and creates the `kubernetes` Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from skiff import __version__
from skiff.api import errors
from skiff.apiserver import content
from skiff.apiserver.admission_plugins import AdmissionConfig, build_chain
from skiff.apiserver.builtin import builtin_types
from skiff.apiserver.compactor import DEFAULT_INTERVAL, Compactor
from skiff.apiserver.crd_controller import CRDController
from skiff.apiserver.discovery import setup_discovery
from skiff.apiserver.fastroute import rest_route
from skiff.apiserver.function_crd import ensure_function_crd
from skiff.apiserver.handlers import Rest
from skiff.apiserver.metrics import setup_metrics
from skiff.apiserver.openapi import setup_openapi
from skiff.apiserver.options import WriteOptions
from skiff.apiserver.priorityclass import ensure_system_priority_classes
from skiff.apiserver.rbac_bootstrap import ensure_bootstrap_policy
from skiff.apiserver.registry import Registry
from skiff.apiserver.sa_token import ServiceAccountTokens
from skiff.apiserver.service_alloc import ServiceAllocators, ServiceNetworkConfig
from skiff.apiserver.service_repair import ensure_kubernetes_service, repair, repair_loop
from skiff.apiserver.service_strategy import attach as attach_service_allocators
from skiff.apiserver.storage_strategy import ensure_local_path_class
from skiff.apiserver.store import Store
from skiff.apiserver.tokenrequest import attach as attach_token_issuer
from skiff.apiserver.watchcache import WatchCache
from skiff.storage.interface import Backend, StorageError, Unavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

REGISTRY = web.AppKey("registry", Registry)
STORE = web.AppKey("store", Store)
CACHE = web.AppKey("watch_cache", WatchCache)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
KUBERNETES_VERSION = ("1", "37")


@web.middleware
async def status_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a Kubernetes Status; client mistakes are never 500s."""
    try:
        return await handler(request)
    except errors.StatusError as status_err:
        return content.status_response(status_err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        err: errors.StatusError
        if exc.status == 404:
            err = errors.NotFound("the server could not find the requested resource")
        elif exc.status == 405:
            err = errors.MethodNotAllowed("the server does not allow this method on the requested resource")
        elif exc.status == 413:
            err = errors.RequestEntityTooLarge("the request body is too large (limit 3 MiB)")
        else:
            err = errors.StatusError(exc.reason or "error")
            err.code, err.reason = exc.status, exc.reason.replace(" ", "") if exc.reason else "Unknown"
        return content.status_response(err)
    except Unavailable as exc:
        return content.status_response(errors.ServiceUnavailable(f"storage is unavailable: {exc}"))
    except StorageError as exc:
        log.exception("storage error on %s %s", request.method, request.path)
        return content.status_response(errors.InternalError(f"storage error: {exc}"))


def create_app(
    *,
    backend: Backend,
    middlewares: Iterable[Any] = (),
    compact_interval: float = DEFAULT_INTERVAL,
    admission: AdmissionConfig | None = None,
    services: ServiceNetworkConfig | None = None,
    service_account_tokens: ServiceAccountTokens | None = None,
) -> web.Application:
    """Build the API application over an opened storage backend.

    `middlewares` (authentication, then authorization) run after Status
    error shaping and before the REST handlers. `admission` holds the
    admission plugins' flags (default: Kubernetes' defaults).
    """
    app = web.Application(middlewares=[status_errors, *list(middlewares)], client_max_size=64 * 1024 * 1024)
    registry = Registry()
    for rt in builtin_types():
        registry.add(rt)
    cache = WatchCache(backend)
    store = Store(backend, registry, cache)  # consistent reads from the watch cache
    store.admission_chain = build_chain(admission or AdmissionConfig(), store, registry)
    compactor = Compactor(backend, compact_interval, on_compact=cache.mark_compacted)
    allocators = ServiceAllocators(backend, services or ServiceNetworkConfig())  # cluster IPs and node ports
    attach_service_allocators(registry, allocators)
    if service_account_tokens is not None:  # the TokenRequest API and token authentication read the store
        attach_token_issuer(registry, store, service_account_tokens)
    rest = Rest(store, registry, cache)
    crds = CRDController(store, registry, cache)  # serves the kinds of CustomResourceDefinitions
    app[REGISTRY], app[STORE], app[CACHE] = registry, store, cache
    state: dict[str, Any] = {"ready": False}

    async def on_startup(app: web.Application) -> None:
        await cache.start()
        await ensure_namespaces(store, registry)
        await ensure_system_priority_classes(store, registry)
        await ensure_local_path_class(store, registry)
        await ensure_function_crd(store, registry)
        await ensure_bootstrap_policy(store, registry)  # kube-apiserver's rbac/bootstrap-roles
        await repair(allocators, backend)  # free what a crash leaked before anything is allocated
        await ensure_kubernetes_service(store, registry, allocators)
        state["repair"] = asyncio.create_task(repair_loop(allocators, backend), name="service allocation repair")
        await crds.start()
        compactor.start()
        state["ready"] = True

    async def on_cleanup(app: web.Application) -> None:
        state["ready"] = False
        if "repair" in state:
            state["repair"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state["repair"]
        await crds.close()
        await compactor.close()
        await cache.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        if not state["ready"]:
            return web.Response(status=503, text="storage not ready")
        try:
            await backend.current_revision()
        except StorageError as exc:
            return web.Response(status=503, text=f"storage not ready: {exc}")
        return web.Response(text="ok")

    async def version(request: web.Request) -> web.Response:
        major, minor = KUBERNETES_VERSION
        return content.json_response(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{major}.{minor}.0-skiff.{__version__}",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "",
                "goVersion": f"python{platform.python_version()}",
                "compiler": platform.python_implementation().lower(),
                "platform": f"linux/{platform.machine()}",
            }
        )

    for path in ("/healthz", "/livez"):
        app.router.add_get(path, healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/version", version)
    setup_discovery(app, registry)
    setup_openapi(app, registry)
    setup_metrics(app, registry, store)  # metrics.k8s.io: in memory, routed ahead of the generic handlers
    rest_route(app, "/api/v1/", (), app.router.add_route("*", "/api/v1/{tail:.+}", rest.handle))
    group_route = app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", rest.handle)
    rest_route(app, "/apis/", ("group", "version"), group_route)
    return app


async def ensure_namespaces(store: Store, registry: Registry) -> None:
    ns_rt = registry.get("", "v1", "namespaces")
    assert ns_rt is not None
    for name in SYSTEM_NAMESPACES:
        try:
            await store.create(ns_rt, None, {"metadata": {"name": name}}, WriteOptions())
        except errors.AlreadyExists:
            pass

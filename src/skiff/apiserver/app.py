"""The aiohttp application: routes every Kubernetes REST path to the generic handlers.

`create_app` is the seam between the HTTP server (TLS, authentication,
lifecycle in `serve.py`) and the API machinery (registry, generic store,
watch, discovery, OpenAPI).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from skiff.storage.interface import Backend


def create_app(*, backend: Backend, middlewares: Iterable[web.middleware] = ()) -> web.Application:  # type: ignore[valid-type]
    """Build the API application over an opened (or to-be-opened) backend.

    The app's startup hook starts the API machinery (watch cache, built-in
    namespaces); `/readyz` answers 200 once storage is open. `middlewares`
    run before the REST handlers (authentication, then authorization).
    """
    raise NotImplementedError("being written")

"""REST requests handed to their handler chain without aiohttp's router walk.

Why this exists: nearly every request the API server sees is a REST path
(`/api/v1/...`, `/apis/<group>/<version>/...`), and all of them end in the
same handler behind the same middlewares. aiohttp's `Application._handle`
still resolves each one by walking the URL's parts through its resource
index and running a regex, and wraps the middlewares per request: ~5 % of a
create's event-loop time.

`install` puts a dispatcher in front of the application's handler on the
running server: a path that can only be one of the REST routes gets that
route's match info (so `request.match_info` and `request.app` are what the
router would give) and goes straight into the middleware chain built once;
anything else -- other routes, a path another resource could claim (e.g.
metrics.k8s.io), percent-escapes, `Expect:` -- takes aiohttp's own path.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.web import UrlMappingMatchInfo

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# the routes `install` may dispatch to, set by create_app: (static prefix, number of fixed segments, route)
REST_ROUTES = web.AppKey("rest_routes", list)


def rest_route(app: web.Application, prefix: str, names: Sequence[str], route: web.AbstractRoute) -> None:
    """Register `route` (pattern `prefix` + one `{name}` per `names` segment + `{tail:.+}`) for `install`."""
    app.setdefault(REST_ROUTES, []).append((prefix, tuple(names), route))


class RestRoutes:
    """The REST routes registered with `rest_route`, each with its middleware chain built once.

    `find` gives the chain and the match info the router would give for a path
    that can only be one of them, None for anything the router must decide.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._table: list[tuple[str, tuple[str, ...], tuple[str, ...], web.AbstractRoute, Handler]] = []
        for prefix, names, route in app.get(REST_ROUTES, ()):
            handler: Handler = route.handler
            for middleware in reversed(app.middlewares):
                handler = functools.partial(middleware, handler=handler)
            self._table.append((prefix, names, _claimed_by_others(app, prefix, names, route), route, handler))

    def __bool__(self) -> bool:
        return bool(self._table)

    def find(self, path: str) -> tuple[Handler, web.AbstractRoute, dict[str, str]] | None:
        """The handler chain, route and match parameters of an unescaped `path` (no `%`, `{`, `}`), or None."""
        for prefix, names, others, route, handler in self._table:
            if not path.startswith(prefix) or path.startswith(others):
                continue
            parts = path[len(prefix) :].split("/", len(names))
            if len(parts) <= len(names) or not parts[-1] or not all(parts[:-1]):
                continue
            return handler, route, {**dict(zip(names, parts, strict=False)), "tail": parts[-1]}
        return None

    def match_info(self, route: web.AbstractRoute, params: dict[str, str]) -> UrlMappingMatchInfo:
        """What the router's resolve would give for a path `find` found."""
        match = UrlMappingMatchInfo(params, route)
        match.add_app(self.app)
        match.freeze()
        return match


def install(runner: web.AppRunner, app: web.Application) -> RestRoutes:
    """Dispatch the REST routes registered with `rest_route` directly on `runner`'s server; returns them."""
    routes = RestRoutes(app)
    server = runner.server
    if server is None or not routes:
        return routes
    slow = server.request_handler

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        if "%" not in raw and "{" not in raw and "}" not in raw and "Expect" not in request.headers:
            found = routes.find(request.path)
            if found is not None:
                handler, route, params = found
                request._match_info = routes.match_info(route, params)  # type: ignore[attr-defined]  # what Application._handle sets
                return await handler(request)  # type: ignore[arg-type]  # a web.Request: the app's request factory
        return await slow(request)

    server.request_handler = dispatch
    return routes


def _claimed_by_others(
    app: web.Application, prefix: str, names: tuple[str, ...], route: web.AbstractRoute
) -> tuple[str, ...]:
    """Static prefixes of other resources that could match a path `install` would dispatch under `prefix`
    (aiohttp prefers the longest static prefix): a path starting with one of them is left to the router."""
    depth = prefix.count("/") + len(names)  # slashes in the shortest such path: prefix, one per name, a tail
    claimed = []
    for resource in app.router.resources():
        if resource is route.resource:
            continue
        canonical = resource.canonical
        static = canonical.split("{", 1)[0]
        if not (static.startswith(prefix) or prefix.startswith(static)):
            continue
        # without a pattern of its own a resource matches paths of exactly its segments; ours end in a non-empty tail
        if ":" in canonical or (canonical.count("/") >= depth and not canonical.endswith("/")):
            claimed.append(static)
    return tuple(claimed)

"""The request object the API server's REST handlers get on `leanhttp`'s path.

Why this exists: `leanhttp` serves plain REST requests without aiohttp's
`web.Request` (and its payload stream, per-request task and timers). The
handler chain and middlewares still read a request: `LeanRequest` is the part
of `web.Request` they read -- method, path, query, headers, transport, app,
match_info, the request's own mapping and a body that has arrived whole --
so the same handlers serve both paths. `tests/unit/test_leanhttp_request.py`
checks that every `request.<name>` on the REST path exists here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion, HttpVersion11
from aiohttp.web import UrlMappingMatchInfo
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from skiff.apiserver.fastroute import RestRoutes

if TYPE_CHECKING:
    from skiff.apiserver.leanhttp import LeanProtocol

_EMPTY_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())


class _Body:
    """The request's `content` as `content.read_body` reads it: a body that has arrived whole."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def is_eof(self) -> bool:
        return True

    def read_nowait(self, n: int = -1) -> bytes:
        data, self._data = self._data, b""
        return data

    async def read(self) -> bytes:
        return self.read_nowait()


class LeanRequest:
    """The part of `web.Request` the REST handler chain reads, for a request `LeanProtocol` serves.

    Method, path (never percent-escaped here), query, headers, the transport
    (client certificate), `app`, `match_info`, the request's own mapping
    (`request[USER] = ...`) and a body that has arrived whole.
    """

    __slots__ = (
        "_params",
        "_query",
        "_route",
        "_routes",
        "_state",
        "content",
        "content_length",
        "headers",
        "method",
        "path",
        "protocol",
        "query_string",
        "raw_path",
        "transport",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        content_length: int | None,
        protocol: LeanProtocol,
        routes: RestRoutes,
        route: web.AbstractRoute,
        params: dict[str, str],
    ) -> None:
        self.method = method
        self.path = path
        self.raw_path = f"{path}?{query_string}" if query_string else path
        self.query_string = query_string
        self.headers = headers
        self.transport = protocol.transport
        self.protocol = protocol
        self.content = _Body(body)
        self.content_length = content_length
        self._routes = routes
        self._route = route
        self._params = params
        self._query: MultiDictProxy[str] | None = None
        self._state: dict[Any, Any] = {}

    @property
    def app(self) -> web.Application:
        return self._routes.app

    @property
    def match_info(self) -> UrlMappingMatchInfo:
        return self._routes.match_info(self._route, self._params)

    @property
    def query(self) -> MultiDictProxy[str]:
        query = self._query
        if query is None:
            qs = self.query_string
            query = MultiDictProxy(MultiDict(parse_qsl(qs, keep_blank_values=True))) if qs else _EMPTY_QUERY
            self._query = query
        return query

    # the request's own mapping, as web.Request's
    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def __iter__(self) -> Iterator[Any]:
        return iter(self._state)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    # the rest of web.Request's reading side that a handler may reach for
    @property
    def version(self) -> HttpVersion:
        return HttpVersion11

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def scheme(self) -> str:
        return "https" if self.transport is not None and self.transport.get_extra_info("sslcontext") else "http"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def remote(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple | list) and peer else None

    @property
    def rel_url(self) -> URL:
        return URL.build(path=self.path, query_string=self.query_string, encoded=True)

    @property
    def url(self) -> URL:
        return URL.build(scheme=self.scheme, authority=self.host).join(self.rel_url)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip().lower()

    @property
    def body_exists(self) -> bool:
        return bool(self.content_length)

    can_read_body = body_exists

    async def read(self) -> bytes:
        return await self.content.read()

    async def text(self) -> str:
        return (await self.read()).decode("utf-8")

    async def json(self) -> Any:
        return orjson.loads(await self.read())

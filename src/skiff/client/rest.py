"""The async client every component uses to talk to the API server.

One `Client` holds one aiohttp session (a keep-alive connection pool) and
offers the Kubernetes verbs on plain-dict objects: get, list (with paging),
create, update, update_status, patch (merge, strategic, JSON, apply), delete,
watch (streams decoded in `skiff.client.watching`), and an event recorder.
Failures arrive as `skiff.api.errors` exceptions (NotFound, Conflict, Gone,
Invalid...) or `ServerUnreachable`, translated in `skiff.client.errors`.

Transport seam: pass `session=` to run the client over any aiohttp session
(another connector, a test server); the client then leaves closing it to you.

`lean_requests=True` (or `Client.lean()`, a sibling for the same server and
credentials) sends every request but watches over `skiff.client.http11`'s small
keep-alive HTTP/1.1 path instead of aiohttp's session: a fraction of the CPU per
request, for components whose writes are on a hot path (the scheduler's bindings
and events). Answers and errors are the same either way.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Literal

import aiohttp
import orjson

from skiff.client import errors as client_errors
from skiff.client import http11
from skiff.client.events import EventRecorder
from skiff.client.kubeconfig import ClientConfig, load_kubeconfig
from skiff.client.resources import Resource
from skiff.client.watching import WatchEvent, decode_stream

Obj = dict[str, Any]
PatchType = Literal["merge", "strategic", "json", "apply"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}
_NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class Client:
    """An API client over one keep-alive connection pool; use as `async with Client(...) as client`."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "skiff-client",
        request_timeout: float = 60.0,
        pool_size: int = 256,
        lean_requests: bool = False,
    ) -> None:
        self.config = config
        self.user_agent = user_agent
        self.request_timeout = request_timeout
        self.pool_size = pool_size
        self.lean_requests = lean_requests and session is None  # an injected session is the transport to use
        self._session = session
        self._owns_session = session is None
        self._pool: http11.HTTPPool | None = None
        self._base_path = ""  # the server URL's path, if it has one
        self._recorders: dict[tuple[str, str | None], EventRecorder] = {}

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, *, context: str | None = None, **kwargs: Any
    ) -> Client:
        """A client for the current (or named) context of a kubeconfig (path, $KUBECONFIG, ~/.kube/config)."""
        return cls(load_kubeconfig(path, context=context), **kwargs)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def lean(self, *, pool_size: int | None = None) -> Client:
        """A client for the same server and credentials whose requests (not watches) take the lean path.

        It has connections of its own: close it when done. Over an injected session (the transport
        seam) it uses that session, as this client does.
        """
        injected = None if self._owns_session else self._session
        return Client(self.config, session=injected, user_agent=self.user_agent, request_timeout=self.request_timeout,
                      pool_size=pool_size or self.pool_size, lean_requests=True)  # fmt: skip

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self.config.unix_socket:  # the server's local socket (skiff.client.local): no TLS
                connector = aiohttp.UnixConnector(self.config.unix_socket, limit=self.pool_size, keepalive_timeout=60)
            else:
                connector = aiohttp.TCPConnector(
                    limit=self.pool_size, ssl=self.config.ssl_context or False, keepalive_timeout=60
                )
            self._session = aiohttp.ClientSession(connector=connector)
            self._owns_session = True
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One request; the decoded JSON answer, or the matching StatusError / ServerUnreachable."""
        data = None if body is None else orjson.dumps(body)
        if self.lean_requests:
            return await self._lean_request(method, path, params, data, content_type)
        url = self.config.server + path
        try:
            async with self.session().request(
                method,
                url,
                params=_params(params),
                data=data,
                headers=self._headers(content_type if data is not None else None),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                server_hostname=self.config.tls_server_name,
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise client_errors.from_response(resp.status, raw, method=method, url=url)
        except _NETWORK_ERRORS as exc:
            raise client_errors.ServerUnreachable(self.config.server, f"{method} {path}: {_describe(exc)}") from exc
        result: Obj = orjson.loads(raw) if raw else {}
        return result

    async def _lean_request(
        self, method: str, path: str, params: Mapping[str, Any] | None, data: bytes | None, content_type: str
    ) -> Obj:
        pool = self._pool or self._new_pool()
        query = _params(params)
        target = self._base_path + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = self._headers(content_type if data is not None else None)
        try:
            response = await pool.request(method, target, headers, data)
        except (OSError, TimeoutError) as exc:
            raise client_errors.ServerUnreachable(self.config.server, f"{method} {path}: {_describe(exc)}") from exc
        if response.status >= 300:
            raise client_errors.from_response(response.status, response.body, method=method,
                                              url=self.config.server + target)  # fmt: skip
        result: Obj = orjson.loads(response.body) if response.body else {}
        return result

    def _new_pool(self) -> http11.HTTPPool:
        url = urllib.parse.urlsplit(self.config.server)
        self._base_path = url.path.rstrip("/")
        tls = url.scheme == "https" and not self.config.unix_socket
        self._pool = http11.HTTPPool(
            host=url.hostname or "localhost", port=url.port or (443 if tls else 80),
            ssl_context=(self.config.ssl_context or _default_tls()) if tls else None,
            server_hostname=self.config.tls_server_name, unix_socket=self.config.unix_socket,
            limit=self.pool_size, timeout=self.request_timeout,
        )  # fmt: skip
        return self._pool

    # --- reads --------------------------------------------------------------------------------
    async def get(
        self, resource: Resource, name: str, *, namespace: str | None = None, subresource: str | None = None
    ) -> Obj:
        return await self.request("GET", resource.path(_ns(resource, namespace), name, subresource))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        """One list page: the List object (items carry apiVersion and kind; `metadata.continue` if more)."""
        params = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
            "continue": continue_,
            "resourceVersion": resource_version,
        }
        result = await self.request("GET", resource.path(namespace), params=params)
        result["items"] = [resource.stamp(item) for item in result.get("items") or []]
        return result

    async def iter_list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> AsyncGenerator[Obj, None]:
        """Every matching object, fetched `page_size` at a time with continue tokens."""
        token: str | None = None
        while True:
            page = await self.list(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size,
                continue_=token,
            )
            for item in page["items"]:
                yield item
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return

    # --- writes -------------------------------------------------------------------------------
    async def create(
        self,
        resource: Resource,
        obj: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Create `obj` (namespace from the argument or its metadata); `subresource` posts to e.g. pods/x/binding."""
        ns = _ns(resource, namespace or obj.get("metadata", {}).get("namespace"))
        path = resource.path(ns, name, subresource) if subresource else resource.path(ns)
        body = obj if subresource else resource.stamp(dict(obj))
        return await self.request("POST", path, params=_write_params(field_manager, dry_run), body=body)

    async def update(
        self,
        resource: Resource,
        obj: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Replace `obj` (PUT); its metadata.resourceVersion guards against lost updates (409 Conflict)."""
        meta = obj.get("metadata") or {}
        ns = _ns(resource, namespace or meta.get("namespace"))
        path = resource.path(ns, _name(meta), subresource)
        body = resource.stamp(dict(obj))
        return await self.request("PUT", path, params=_write_params(field_manager, dry_run), body=body)

    async def update_status(self, resource: Resource, obj: Obj, *, namespace: str | None = None) -> Obj:
        """Replace the status of `obj` through its status subresource."""
        return await self.update(resource, obj, namespace=namespace, subresource="status")

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Patch one object. `patch_type="apply"` is server-side apply and needs `field_manager`."""
        if patch_type == "apply" and not field_manager:
            raise ValueError("a server-side apply patch needs a field_manager")
        params = _write_params(field_manager, dry_run)
        if force is not None:
            params["force"] = force
        path = resource.path(_ns(resource, namespace), name, subresource)
        return await self.request(
            "PATCH", path, params=params, body=patch, content_type=PATCH_CONTENT_TYPES[patch_type]
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Delete one object; the answer is the object (if finalizers keep it) or a Success Status.

        `preconditions` may hold `uid` and/or `resourceVersion` the object must still have.
        """
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = dict(preconditions)
        if dry_run:
            body["dryRun"] = ["All"]
        return await self.request("DELETE", resource.path(_ns(resource, namespace), name), body=body)

    # --- watch --------------------------------------------------------------------------------
    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after `resource_version` (or synthetic ADDED events first when it is None or "0").

        Ends when the server closes the stream (e.g. after `timeout_seconds`). An ERROR event is raised
        as its StatusError (a compacted resourceVersion: `errors.Gone`); a broken connection as
        `ServerUnreachable`. Close early with `contextlib.aclosing(client.watch(...))`.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": allow_bookmarks or None,
        }
        url = self.config.server + resource.path(namespace)
        total = timeout_seconds + self.request_timeout if timeout_seconds else None
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self.request_timeout)
        try:
            async with self.session().get(
                url,
                params=_params(params),
                headers=self._headers(),
                timeout=timeout,
                server_hostname=self.config.tls_server_name,
            ) as resp:
                if resp.status >= 300:
                    raise client_errors.from_response(resp.status, await resp.read(), method="GET", url=url)
                async with contextlib.aclosing(decode_stream(resp.content.iter_any(), resource)) as events:
                    async for event in events:
                        yield event
        except _NETWORK_ERRORS as exc:
            detail = f"watch {resource.plural}: {_describe(exc)}"
            raise client_errors.ServerUnreachable(self.config.server, detail) from exc

    # --- events -------------------------------------------------------------------------------
    async def create_event(
        self,
        involved: Obj,
        *,
        reason: str,
        message: str,
        type: Literal["Normal", "Warning"] = "Normal",
        component: str = "skiff",
        host: str | None = None,
    ) -> Obj | None:
        """Record a core/v1 Event about `involved`; repeats of one event raise its count instead.

        Returns the Event written, or None when the write failed (recording events never fails a caller).
        """
        recorder = self._recorders.get((component, host))
        if recorder is None:
            recorder = self._recorders[(component, host)] = EventRecorder(self, component=component, host=host)
        return await recorder.record(involved, type=type, reason=reason, message=message)


def _default_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _ns(resource: Resource, namespace: str | None) -> str | None:
    if resource.namespaced and not namespace:
        raise ValueError(f"{resource.plural} are namespaced: a namespace is needed")
    return namespace if resource.namespaced else None


def _name(meta: Obj) -> str:
    name = meta.get("name")
    if not name:
        raise ValueError("the object has no metadata.name")
    return str(name)


def _params(params: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None or value == "":
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _write_params(field_manager: str | None, dry_run: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if field_manager:
        params["fieldManager"] = field_manager
    if dry_run:
        params["dryRun"] = "All"
    return params


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text

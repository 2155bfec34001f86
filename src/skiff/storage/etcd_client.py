"""A minimal etcd v3 client over etcd's gRPC-gateway JSON API (HTTP/1.1).

etcd serves every v3 RPC as `POST /v3/<service>/<method>` with a JSON body
(bytes fields base64, int64 fields as decimal strings) and streams watch
responses as newline-separated JSON objects. Speaking that through aiohttp
keeps skiff free of gRPC/protobuf dependencies. This module only moves JSON
and handles endpoints; `etcd.EtcdBackend` gives it the storage semantics.

Failover: requests go to the endpoint that last worked; when it cannot be
connected to, the next endpoint is tried. A request whose connection broke
*after* it was sent is retried elsewhere only when it is a read (a write may
have been applied), otherwise the caller gets `Unavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from skiff.storage.interface import KeyValue, StorageError, Unavailable

Json = dict[str, Any]

_JSON_HEADERS = {"Content-Type": "application/json"}

# gRPC status codes that mean "try again / elsewhere" rather than "your request is wrong"
_UNAVAILABLE_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE


class EtcdError(StorageError):
    """An error answer from etcd (`message` is etcd's text, `code` the gRPC status)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"etcd: {message}")
        self.message = message
        self.code = code

    @property
    def compacted(self) -> bool:
        return "required revision has been compacted" in self.message

    @property
    def future_revision(self) -> bool:
        return "required revision is a future revision" in self.message


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def parse_kv(obj: Json) -> KeyValue:
    return KeyValue(
        key=unb64(obj.get("key")).decode(),
        value=unb64(obj.get("value")),
        create_revision=int(obj.get("create_revision", 0)),
        mod_revision=int(obj.get("mod_revision", 0)),
    )


def header_revision(resp: Json) -> int:
    return int(resp.get("header", {}).get("revision", 0))


def _ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class EtcdClient:
    def __init__(
        self,
        endpoints: list[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 3.0,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdClient needs at least one endpoint")
        for endpoint in endpoints:
            if not endpoint.startswith(("http://", "https://")):
                raise ValueError(f"etcd endpoint must be http:// or https://, got {endpoint!r}")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._ssl: ssl.SSLContext | bool = (
            _ssl_context(ca_file, cert_file, key_file) if any(e.startswith("https://") for e in endpoints) else False
        )
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._current = 0

    async def start(self) -> None:
        if self._session is None:
            # limit=0: every watch holds a connection for its lifetime
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def closed(self) -> bool:
        return self._session is None

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise Unavailable("etcd client is not started (or closed)")
        return self._session

    def _rotation(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def call(self, path: str, body: Json, *, idempotent: bool = False) -> Json:
        """POST `body` to `path` on a working endpoint and return the decoded answer."""
        session = self._require_session()
        last_error: BaseException | None = None
        for index in self._rotation():
            url = self.endpoints[index] + path
            try:
                async with session.post(
                    url, data=orjson.dumps(body), headers=_JSON_HEADERS, timeout=self._timeout
                ) as resp:
                    text = await resp.read()
            except aiohttp.ClientConnectorError as exc:  # never reached the server: safe to retry
                last_error = exc
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not idempotent:
                    raise Unavailable(f"etcd {url}: {exc!r} (the write may have happened)") from exc
                last_error = exc
                continue
            answer = _decode(text, resp.status)
            error = answer.get("error")
            if error is not None or resp.status != 200:
                message = answer.get("message") or error or text.decode(errors="replace")
                exc_ = EtcdError(str(message), int(answer.get("code", 0)))
                if exc_.code in _UNAVAILABLE_CODES or resp.status == 503:
                    if idempotent:
                        last_error = exc_
                        continue
                    raise Unavailable(str(exc_)) from exc_
                raise exc_
            self._current = index
            return answer
        raise Unavailable(f"no etcd endpoint reachable ({', '.join(self.endpoints)}): {last_error!r}")

    async def stream(self, path: str, body: Json) -> AsyncGenerator[Json, None]:
        """POST to a streaming endpoint; yields each JSON message. Raises Unavailable on any break."""
        session = self._require_session()
        resp: aiohttp.ClientResponse | None = None
        last_error: BaseException | None = None
        for index in self._rotation():
            try:
                resp = await session.post(
                    self.endpoints[index] + path,
                    data=orjson.dumps(body),
                    headers=_JSON_HEADERS,
                    timeout=self._stream_timeout,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = exc
                continue
            self._current = index
            break
        if resp is None:
            raise Unavailable(f"no etcd endpoint reachable ({', '.join(self.endpoints)}): {last_error!r}")
        try:
            if resp.status != 200:
                answer = _decode(await resp.read(), resp.status)
                raise EtcdError(str(answer.get("message") or answer), int(answer.get("code", 0)))
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (newline := buffer.find(b"\n")) >= 0:
                    line, buffer = buffer[:newline], buffer[newline + 1 :]
                    if line.strip():
                        yield _decode(line, 200)
            raise Unavailable("etcd closed the stream")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"etcd stream broke: {exc!r}") from exc
        finally:
            resp.close()


def _decode(raw: bytes, status: int) -> Json:
    try:
        answer = orjson.loads(raw) if raw else {}
    except ValueError:
        text = raw[:200].decode(errors="replace")
        return {"error": f"HTTP {status}: {text}", "message": f"HTTP {status}: {text}"}
    if not isinstance(answer, dict):
        return {"error": f"unexpected answer: {raw[:200].decode(errors='replace')}"}
    return answer


async def sleep_backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

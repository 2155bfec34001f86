"""The function runtime: a small HTTP server, run inside a generic python-image container, that loads
a handler and answers each request with `handle(event, context)`.

It must run on the bare python image (the standard library only, no skiff, no aiohttp): the gateway
starts it as `python3 -c <this file's source>`, so one image serves every function and the code
arrives through a mounted ConfigMap (`SKIFF_FN_CODE_DIR`), an env var (`SKIFF_FN_SOURCE`, for
inline code) or the image itself (already on `sys.path`).

Contract: the event is the request body decoded as JSON (or the raw text when it is not JSON); the
context carries the function's name, the request id, method, path, query and headers, and the
deadline. A dict or list return value is answered as JSON, a str as text, bytes as they are, None
as 204. An exception is 500 with a short body; its traceback goes to the container log only. A call
that outlives `SKIFF_FN_TIMEOUT` seconds is answered 504 with `X-Skiff-Retire: 1`, and the runtime
then exits (a thread cannot be killed; as Lambda, the sandbox of a timed-out call is discarded), so
the gateway routes the next calls to a fresh instance. The handler runs in a thread pool sized by
`SKIFF_FN_CONCURRENCY`, so a blocking handler does not stop other calls. `GET /healthz` answers 200
once the handler is loaded: the gateway's readiness check. The handler is loaded before the port is
opened; a load error ends the process.

Warm pool: with `SKIFF_FN_POOL=1` the runtime starts with no handler (the interpreter and the
server already up: the slow part of a cold start) and waits for one `POST /_skiff/load` from the
gateway (with the pod's `SKIFF_FN_POOL_TOKEN` as `X-Skiff-Pool-Token`: no other pod on the network
can load code into it) carrying the handler, its code (`source`, or `files` written to a directory on sys.path),
env, timeout and concurrency; from then on it is that function's instance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import json
import os
import signal
import sys
import time
import traceback
import types
import uuid
from collections.abc import Callable
from typing import Any

MAX_HEADER = 64 * 1024
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
           403: "Forbidden", 413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
           504: "Gateway Timeout"}  # fmt: skip


class Context:
    """What a handler knows about its call besides the event."""

    def __init__(self, request_id: str, method: str, path: str, headers: dict[str, str], deadline: float) -> None:
        self.function_name = os.environ.get("SKIFF_FN_NAME", "")
        self.namespace = os.environ.get("SKIFF_FN_NAMESPACE", "")
        self.request_id = request_id
        self.method = method
        self.path, _, self.query = path.partition("?")
        self.headers = headers
        self.deadline = deadline

    def remaining_time(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def load_handler(spec: str) -> Callable[[Any, Context], Any]:
    """`module.func` from the inline source, the code directory or the image."""
    module_name, _, func_name = spec.rpartition(".")
    source = os.environ.get("SKIFF_FN_SOURCE")
    if source is not None:
        module = types.ModuleType(module_name)
        module.__file__ = f"<{module_name}>"
        sys.modules[module_name] = module
        exec(compile(source, f"{module_name}.py", "exec"), module.__dict__)
    else:
        code_dir = os.environ.get("SKIFF_FN_CODE_DIR", "")
        if code_dir:
            sys.path.insert(0, code_dir)
        module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise AttributeError(f"module {module_name!r} has no function {func_name!r}")
    return func  # type: ignore[no-any-return]


def encode(result: Any) -> tuple[int, str, bytes]:
    if result is None:
        return 204, "text/plain", b""
    if isinstance(result, bytes):
        return 200, "application/octet-stream", result
    if isinstance(result, str):
        return 200, "text/plain; charset=utf-8", result.encode()
    return 200, "application/json", json.dumps(result).encode()


class Runtime:
    def __init__(self, handler: Callable[[Any, Context], Any] | None, timeout: float, workers: int) -> None:
        self.handler = handler
        self.timeout = timeout
        self.retiring = False  # a call timed out: answer it, then exit
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler")

    def load(self, body: bytes) -> tuple[int, str, bytes]:
        """A warm-pool runtime becomes one function's instance."""
        if self.handler is not None:
            return 409, "text/plain", b"a handler is loaded already"
        try:
            spec = json.loads(body)
            os.environ.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
            os.environ["SKIFF_FN_HANDLER"] = spec["handler"]
            if spec.get("source") is not None:
                os.environ["SKIFF_FN_SOURCE"] = spec["source"]
            else:
                code_dir = os.path.join("/tmp", "skiff-function")
                os.makedirs(code_dir, exist_ok=True)
                for name, text in (spec.get("files") or {}).items():
                    with open(os.path.join(code_dir, os.path.basename(name)), "w") as f:
                        f.write(text)
                os.environ["SKIFF_FN_CODE_DIR"] = code_dir
            handler = load_handler(spec["handler"])
        except Exception:
            text = traceback.format_exc()
            print(f"loading the handler failed\n{text}", file=sys.stderr, flush=True)
            return 500, "text/plain", text.encode()
        self.timeout = float(spec.get("timeout") or self.timeout)
        workers = int(spec.get("concurrency") or 10)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler")
        self.handler = handler
        print(f"skiff function runtime: loaded {spec['handler']}", file=sys.stderr, flush=True)
        return 200, "text/plain", b"loaded"

    async def call(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        if path.split("?")[0] == "/healthz":
            return 200, "text/plain", b"ok"
        if path == "/_skiff/load" and method == "POST":
            if headers.get("x-skiff-pool-token", "") != os.environ.get("SKIFF_FN_POOL_TOKEN", ""):
                return 403, "text/plain", b"the pool token does not match"
            return self.load(body)
        if self.handler is None:
            return 503, "text/plain", b"no handler loaded (a warm-pool runtime)"
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        try:
            event: Any = json.loads(body) if body else None
        except ValueError:
            event = body.decode(errors="replace")
        ctx = Context(rid, method, path, headers, time.monotonic() + self.timeout)
        assert self.handler is not None
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context().run
        future = loop.run_in_executor(self.pool, run, self.handler, event, ctx)
        try:
            result = await asyncio.wait_for(future, self.timeout)
            return encode(result)
        except TimeoutError:
            print(f"request {rid}: timed out after {self.timeout:g}s; exiting", file=sys.stderr, flush=True)
            self.retiring = True
            return 504, "application/json", json.dumps({"error": "function timed out", "requestId": rid}).encode()
        except Exception:
            print(f"request {rid}: handler raised an exception\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            return 500, "application/json", json.dumps({"error": "function failed", "requestId": rid}).encode()

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, version = [*lines[0].split(" "), "", "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, ctype, payload = await self.call(method, path, headers, body)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                retire = "X-Skiff-Retire: 1\r\n" if self.retiring else ""
                writer.write(
                    f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n"
                    f"{retire}\r\n"
                    .encode() + payload
                )  # fmt: skip
                await writer.drain()
                if self.retiring:
                    os._exit(0)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # pid 1 ignores SIGTERM unless it handles it
    pooled = os.environ.get("SKIFF_FN_POOL") == "1"
    handler = None if pooled else load_handler(os.environ.get("SKIFF_FN_HANDLER", "handler.handle"))
    runtime = Runtime(
        handler,
        float(os.environ.get("SKIFF_FN_TIMEOUT", "30")),
        int(os.environ.get("SKIFF_FN_CONCURRENCY", "10")),
    )
    port = int(os.environ.get("SKIFF_FN_PORT", "8080"))
    server = await asyncio.start_server(runtime.serve_connection, "0.0.0.0", port, limit=MAX_HEADER)
    print(f"skiff function runtime: {os.environ.get('SKIFF_FN_HANDLER')} on :{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

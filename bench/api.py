"""End-to-end API throughput and watch latency of a real `skiff server`, as a printed table.

Why this exists: the storage benchmark (`bench/storage.py`) measures the
backends alone; users see the whole request path -- TLS, authentication,
admission, encoding, the watch cache and fan-out. This starts throw-away
servers (temp data dirs under /var/tmp so fsync hits a real disk, free
loopback ports) and drives them over HTTPS with the admin client
certificate from *separate processes*, so the load generator never shares the
server's event loop:

* creates/s of small ConfigMaps and p50/p99 latency with 1, 16 and 64 clients;
* gets/s and p50/p99 latency with 1, 16 and 64 clients;
* time to list 1,000 objects, unpaginated and with limit=500 (mean of runs);
* watch delivery delay with many concurrent watchers (one HTTP/1.1
  connection each, spread over client processes): N objects are created with
  their send time stamped in them; every watcher x event pair's delay is
  reported (p50/p99/max) with whether every watcher saw every event;
* on etcd (`--backend etcd|both`, needs the `etcd` binary) the same creates,
  plus raw etcd puts through etcd's JSON gateway at the same concurrency in the
  same run, printed as the ratio skiff/raw.

It prints figures and the issue's targets beside them and never fails on time.

    .venv/bin/python -m bench.api [--quick] [--backend sqlite|etcd|both] [--watchers N]
                                  [--watcher lean|aiohttp] [--watch-procs N] [--only watch]
                                  [--profile DIR] [--json FILE]

`--profile DIR` records a py-spy profile of the server per phase (collapsed
stacks, `DIR/<backend>-<phase>.txt`) and prints the hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

try:
    import orjson

    _loads: Any = orjson.loads
except ImportError:  # pragma: no cover - skiff depends on orjson
    _loads = json.loads

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/api.py` as well as `python -m bench.api`
    sys.path.insert(0, str(REPO))

from bench.proc import CLK_TCK, cpu_seconds  # noqa: E402

from skiff.client.http11 import HTTPPool  # noqa: E402

CONCURRENCY = (1, 16, 64)
TARGET_CREATES = 1500.0  # creates/s on SQLite
TARGET_CREATE_P99_MS = 50.0  # at 64 clients
TARGET_WATCH_MS = 100.0  # every watcher sees every event within this
PROFILE_RATE = 200  # py-spy samples per second
PHASES = ("create", "get", "list", "watch")  # create includes the raw etcd puts


@dataclass
class Profile:
    """How much work each phase does."""

    warmup: float = 1.0
    seconds: float = 5.0
    list_objects: int = 1000
    list_runs: int = 5
    watchers: int = 1000
    watch_events: int = 100
    watch_rate: float = 10.0  # creates/s while watchers listen
    watch_procs: int = 2  # lean watchers: 2 processes give a lower p99 than 1 on the 2-core box (bench/RESULTS.md)
    watcher: str = "lean"  # or "aiohttp": the earlier watcher, about twice the server's CPU per watcher x event
    client: str = "lean"  # create/get load: skiff.client.http11's keep-alive pool, or "aiohttp"'s ClientSession
    watch_grace: float = 10.0  # how long after the last create a watcher may still deliver


FULL = Profile()
QUICK = Profile(warmup=0.25, seconds=1.0, list_runs=3, watchers=200, watch_events=20, watch_rate=20.0, watch_grace=5)


# ---------------------------------------------------------------- helpers shared by all processes
@dataclass(frozen=True)
class Target:
    """Where to send requests: `tls_dir` holds ca.crt/admin.crt/admin.key (None: plain HTTP, etcd)."""

    url: str
    tls_dir: str | None
    cpu_pids: tuple[int, ...] = ()  # processes whose CPU time the load worker samples (server, etcd)


def client_ssl(tls_dir: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.crt"))
    ctx.load_cert_chain(os.path.join(tls_dir, "admin.crt"), os.path.join(tls_dir, "admin.key"))
    return ctx


def session_for(target: Target, limit: int) -> aiohttp.ClientSession:
    """A keep-alive pool of up to `limit` connections (0: unlimited)."""
    ssl_arg: ssl.SSLContext | bool = client_ssl(target.tls_dir) if target.tls_dir else False
    connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_arg, keepalive_timeout=120, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=None)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs of the machine spent busy (not idle, not waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def configmap(name: str, data: dict[str, str] | None = None) -> bytes:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data or {"key": "value"}}
    return json.dumps(body, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- load worker (runs in its own process)
@dataclass
class LoadSpec:
    target: Target
    op: str  # create | get | etcd-put
    clients: int
    seconds: float = 0.0  # measured window; 0 means count mode
    warmup: float = 0.0
    count: int = 0  # count mode: exactly this many operations, no measurement
    namespace: str = "bench"
    prefix: str = "c"
    names: int = 0  # get: objects f"{prefix}{i:07d}" for i < names exist
    value: bytes = b""  # etcd-put: the value to store
    client: str = "lean"  # lean: skiff.client.http11.HTTPPool; aiohttp: aiohttp.ClientSession


@dataclass
class LoadResult:
    ops: int = 0
    errors: int = 0
    first_error: str = ""
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # cores used by the load process during the window
    server_cpu: list[float] = field(default_factory=list)  # cores used by each of target.cpu_pids
    other_cpu: float = 0.0  # cores used by everything else on the machine (other work disturbing the run)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def run_load(spec: LoadSpec) -> LoadResult:
    """Entry point in the load process."""
    return asyncio.run(_load(spec))


def pool_for(target: Target, limit: int) -> HTTPPool:
    """The client library's lean keep-alive HTTP/1.1 pool (what the scheduler writes with), TLS when `tls_dir`."""
    parts = urllib.parse.urlsplit(target.url)
    ctx = client_ssl(target.tls_dir) if target.tls_dir else None
    assert parts.hostname and parts.port
    return HTTPPool(host=parts.hostname, port=parts.port, ssl_context=ctx, limit=limit, timeout=120)


async def _load(spec: LoadSpec) -> LoadResult:
    if spec.client == "lean":
        pool = pool_for(spec.target, spec.clients)
        try:
            return await _load_with(spec, _lean_one(spec, pool))
        finally:
            pool.close()
    async with session_for(spec.target, spec.clients) as session:
        return await _load_with(spec, _aiohttp_one(spec, session))


def _lean_one(spec: LoadSpec, pool: HTTPPool) -> Callable[[int], Awaitable[str | None]]:
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    path = urllib.parse.urlsplit(spec.target.url).path
    create_path = f"{path}/api/v1/namespaces/{spec.namespace}/configmaps"

    async def one(i: int) -> str | None:
        """One operation; None when it succeeded, else what went wrong."""
        name = f"{spec.prefix}{i:07d}"
        if spec.op == "create":
            resp = await pool.request("POST", create_path, json_headers, configmap(name))
            return None if resp.status == 201 else f"create {resp.status}: {resp.body[:200]!r}"
        if spec.op == "get":
            name = f"{spec.prefix}{i % spec.names:07d}"
            resp = await pool.request("GET", f"{create_path}/{name}", json_headers, None)
            return None if resp.status == 200 else f"get {resp.status}: {resp.body[:200]!r}"
        if spec.op == "etcd-put":
            body = {"key": b64(f"/bench-raw/{name}".encode()), "value": b64(spec.value)}
            resp = await pool.request("POST", f"{path}/v3/kv/put", json_headers, json.dumps(body).encode())
            return None if resp.status == 200 else f"put {resp.status}: {resp.body[:200]!r}"
        raise ValueError(spec.op)

    return one


def _aiohttp_one(spec: LoadSpec, session: aiohttp.ClientSession) -> Callable[[int], Awaitable[str | None]]:
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    url = spec.target.url
    create_url = f"{url}/api/v1/namespaces/{spec.namespace}/configmaps"

    async def one(i: int) -> str | None:
        """One operation; None when it succeeded, else what went wrong."""
        name = f"{spec.prefix}{i:07d}"
        if spec.op == "create":
            async with session.post(create_url, data=configmap(name), headers=json_headers) as resp:
                await resp.read()
                return None if resp.status == 201 else f"create {resp.status}: {(await resp.text())[:200]}"
        if spec.op == "get":
            name = f"{spec.prefix}{i % spec.names:07d}"
            async with session.get(f"{create_url}/{name}", headers=json_headers) as resp:
                await resp.read()
                return None if resp.status == 200 else f"get {resp.status}: {(await resp.text())[:200]}"
        if spec.op == "etcd-put":
            body = {"key": b64(f"/bench-raw/{name}".encode()), "value": b64(spec.value)}
            async with session.post(f"{url}/v3/kv/put", json=body) as resp:
                await resp.read()
                return None if resp.status == 200 else f"put {resp.status}: {(await resp.text())[:200]}"
        raise ValueError(spec.op)

    return one


async def _load_with(spec: LoadSpec, one: Callable[[int], Awaitable[str | None]]) -> LoadResult:
    result = LoadResult()
    next_index = 0
    counting = spec.seconds <= 0
    began = time.perf_counter()
    window_start = began + spec.warmup
    window_end = window_start + spec.seconds
    latencies: list[float] = []

    async def client() -> None:
        nonlocal next_index
        while True:
            i = next_index
            next_index += 1
            if counting and i >= spec.count:
                return
            t0 = time.perf_counter()
            if not counting and t0 >= window_end:
                return
            try:
                err = await one(i)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                err = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            if err is not None:
                result.errors += 1
                result.first_error = result.first_error or err
            elif counting:
                result.ops += 1
            elif t0 >= window_start and t1 <= window_end:
                latencies.append((t1 - t0) * 1000)

    async def sample_cpu() -> tuple[float, list[float], float]:
        """CPU seconds used in the window by this process, by each watched process, and by the machine."""
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        pids = spec.target.cpu_pids
        mine, theirs, busy = time.process_time(), [cpu_seconds(p) for p in pids], machine_busy_seconds()
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        used = [cpu_seconds(p) - t for p, t in zip(pids, theirs, strict=True)]
        return time.process_time() - mine, used, machine_busy_seconds() - busy

    sampler = asyncio.create_task(sample_cpu()) if not counting else None
    await asyncio.gather(*(client() for _ in range(spec.clients)))
    if counting:
        result.seconds = time.perf_counter() - began
        return result
    assert sampler is not None
    mine, theirs, busy = await sampler
    result.seconds = spec.seconds
    result.ops = len(latencies)
    result.latencies_ms = sorted(latencies)
    result.client_cpu = mine / spec.seconds
    result.server_cpu = [t / spec.seconds for t in theirs]
    result.other_cpu = max(0.0, busy - mine - sum(theirs)) / spec.seconds
    return result


# ---------------------------------------------------------------- watch worker (runs in its own process)
@dataclass
class WatchSpec:
    target: Target
    namespace: str
    resource_version: str
    watchers: int
    events: int  # how many ADDED events every watcher should see
    prefix: str  # names of the expected objects start with this
    connect_parallel: int = 32  # TLS handshakes in flight at once
    watcher: str = "lean"  # lean: raw TLS sockets in one epoll loop; aiohttp: an aiohttp client response each


@dataclass
class WatchResult:
    opened: int = 0
    failed: int = 0
    first_error: str = ""
    delays_ms: list[float] = field(default_factory=list)  # one per watcher x event pair received
    by_event: dict[str, list[float]] = field(default_factory=dict)  # the same delays by event (object name)
    complete: int = 0  # watchers that saw every expected event
    received: int = 0
    open_seconds: float = 0.0
    client_cpu_seconds: float = 0.0


def run_watchers(spec: WatchSpec, conn: Connection) -> None:
    """Entry point in a watcher process: open, report ("ready", ...), wait for ("sent", t), report the result."""
    try:
        result = _watch_lean(spec, conn) if spec.watcher == "lean" else asyncio.run(_watch(spec, conn))
        conn.send(("result", result))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


async def _watch(spec: WatchSpec, conn: Connection) -> WatchResult:
    loop = asyncio.get_running_loop()
    result = WatchResult()
    url = (
        f"{spec.target.url}/api/v1/namespaces/{spec.namespace}/configmaps"
        f"?watch=true&resourceVersion={spec.resource_version}&timeoutSeconds=3600"
    )
    received: list[list[tuple[float, bytes]]] = [[] for _ in range(spec.watchers)]
    responses: list[aiohttp.ClientResponse] = []
    gate = asyncio.Semaphore(spec.connect_parallel)
    all_open = asyncio.Event()
    attempted = 0
    began = time.perf_counter()

    async with session_for(spec.target, 0) as session:

        def attempted_one() -> None:
            nonlocal attempted
            attempted += 1
            if attempted == spec.watchers:
                all_open.set()

        async def watcher(w: int) -> None:
            try:
                async with gate:
                    resp = await session.get(url, headers={"Accept": "application/json"})
                    if resp.status != 200:
                        raise RuntimeError(f"watch {resp.status}: {(await resp.text())[:200]}")
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
                result.failed += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                attempted_one()
                return
            result.opened += 1
            attempted_one()
            responses.append(resp)  # closed when every watcher is done (see _watch_lean)
            lines = received[w]
            try:
                while len(lines) < spec.events:
                    line = await resp.content.readline()
                    if not line:
                        return
                    lines.append((time.time(), line))  # parse later: keep the receive path short
            except (aiohttp.ClientError, OSError):
                return

        tasks = [asyncio.create_task(watcher(w)) for w in range(spec.watchers)]
        await all_open.wait()
        result.open_seconds = time.perf_counter() - began
        conn.send(("ready", result.opened, result.failed, result.first_error))
        cpu0 = time.process_time()
        _, last_sent, grace = await loop.run_in_executor(None, conn.recv)
        await asyncio.wait(tasks, timeout=max(0.0, last_sent + grace - time.time()))
        result.client_cpu_seconds = time.process_time() - cpu0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for resp in responses:
            resp.close()

    for lines in received:
        seen: set[str] = set()
        for t, line in lines:
            event = _loads(line)
            obj = event.get("object") or {}
            name = (obj.get("metadata") or {}).get("name", "")
            if event.get("type") != "ADDED" or not name.startswith(spec.prefix) or name in seen:
                continue
            seen.add(name)
            delay = (t - float(obj["data"]["sent"])) * 1000
            result.delays_ms.append(delay)
            result.by_event.setdefault(name, []).append(delay)
        result.received += len(seen)
        result.complete += len(seen) == spec.events
    return result


# ---------------------------------------------------------------- lean watcher (runs in its own process)
# What a watcher must do and nothing more: its own TLS connection (blocking handshake in a thread pool,
# then a non-blocking ssl socket in one epoll loop, decryption in C), the same watch request, the
# chunked framing undone and each event line's name and send stamp found by a bytes search. The
# aiohttp watcher (`--watcher aiohttp`) costs about twice the server's CPU per watcher x event.
class LeanStream:
    """One watch response body: undo the chunked framing, record each new expected event's delay."""

    __slots__ = ("body", "buf", "ended", "left", "prefix", "seen")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.buf = b""  # framing bytes not yet understood (a partial chunk-size line)
        self.left = 0  # bytes of the current chunk's data still to come
        self.body = bytearray()  # decoded data not yet ending in a newline
        self.seen: dict[bytes, float] = {}  # expected event (object name) -> its delay in ms
        self.ended = False  # the last chunk arrived

    @property
    def delays(self) -> list[float]:
        return list(self.seen.values())

    def feed(self, data: bytes, now: float) -> None:
        """Bytes off the connection, received at `now` (epoch seconds)."""
        if not (self.buf or self.left or self.body):  # the usual read: one whole chunk holding one whole event
            nl = data.find(b"\r\n")
            size = data[:nl]
            if 0 < nl < 9 and size.isalnum() and data.endswith(b"\n\r\n") and len(data) == nl + 4 + int(size, 16):
                line = data[nl + 2 : -3]
                if b"\n" not in line:
                    self._event(line, now)
                    return
        buf = self.buf + data if self.buf else data
        pos, end, body = 0, len(buf), self.body
        while pos < end:
            if self.left:
                take = min(self.left, end - pos)
                body += buf[pos : pos + take]
                pos += take
                self.left -= take
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            if nl > pos:  # a chunk-size line (an empty line is the CRLF after a chunk's data)
                size = int(buf[pos:nl].split(b";", 1)[0], 16)
                if size == 0:
                    self.ended = True
                    nl = end - 2
                self.left = size
            pos = nl + 2
        self.buf = buf[pos:]
        start = 0
        while (nl := body.find(b"\n", start)) >= 0:
            self._event(bytes(body[start:nl]), now)
            start = nl + 1
        if start:
            del body[:start]

    def _event(self, line: bytes, now: float) -> None:
        if not line.startswith(b'{"type":"ADDED"'):
            return
        i = line.find(b'"name":"') + 8
        name = line[i : line.find(b'"', i)]
        if i < 8 or not name.startswith(self.prefix) or name in self.seen:
            return
        i = line.find(b'"sent":"') + 8
        self.seen[name] = (now - float(line[i : line.find(b'"', i)])) * 1000


def _open_lean(spec: WatchSpec, ctx: ssl.SSLContext, host: str, port: int, request: bytes) -> tuple[Any, bytes]:
    """Connect, handshake, send the watch request, read the response head (blocking; runs in a thread)."""
    raw = socket.create_connection((host, port), timeout=60)
    sock = ctx.wrap_socket(raw, server_hostname=host)
    try:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            got = sock.recv(65536)
            if not got:
                raise RuntimeError("connection closed before the response head")
            head += got
        head, _, rest = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise RuntimeError(f"watch {status.decode(errors='replace')}: {rest[:200]!r}")
        if b"transfer-encoding: chunked" not in head.lower():
            raise RuntimeError(f"watch response is not chunked: {head[:300]!r}")
        sock.setblocking(False)
        return sock, rest
    except BaseException:
        sock.close()
        raise


def _watch_lean(spec: WatchSpec, conn: Connection) -> WatchResult:
    from urllib.parse import urlsplit

    result = WatchResult()
    parts = urlsplit(spec.target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    path = (
        f"/api/v1/namespaces/{spec.namespace}/configmaps"
        f"?watch=true&resourceVersion={spec.resource_version}&timeoutSeconds=3600"
    )
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n"
        "Accept-Encoding: identity\r\nUser-Agent: skiff-bench-lean-watcher\r\n\r\n"
    ).encode()
    if spec.target.tls_dir is None:
        raise RuntimeError("the lean watcher speaks TLS only")
    ctx = client_ssl(spec.target.tls_dir)
    prefix = spec.prefix.encode()
    began = time.perf_counter()
    streams: dict[int, tuple[Any, LeanStream]] = {}
    everyone: list[LeanStream] = []
    sel = selectors.DefaultSelector()
    with ThreadPoolExecutor(spec.connect_parallel) as opener:
        futures = [opener.submit(_open_lean, spec, ctx, host, port, request) for _ in range(spec.watchers)]
        for fut in futures:
            try:
                sock, rest = fut.result()
            except (OSError, RuntimeError, ValueError) as exc:
                result.failed += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            result.opened += 1
            stream = LeanStream(prefix)
            everyone.append(stream)
            streams[sock.fileno()] = (sock, stream)
            sel.register(sock, selectors.EVENT_READ, (sock, stream))
            if rest:
                stream.feed(rest, time.time())
    result.open_seconds = time.perf_counter() - began
    conn.send(("ready", result.opened, result.failed, result.first_error))
    cpu0 = time.process_time()
    gc.disable()  # nothing read here is cyclic; a collection would only walk the open connections
    sel.register(conn, selectors.EVENT_READ, None)
    deadline = float("inf")
    live = len(streams)
    while (live or deadline == float("inf")) and time.time() < deadline:  # always take the parent's "sent"
        for key, _ in sel.select(max(0.0, min(1.0, deadline - time.time()))):
            if key.data is None:  # the parent: ("sent", last_sent, grace)
                _, last_sent, grace = conn.recv()
                deadline = last_sent + grace
                sel.unregister(conn)
                continue
            sock, stream = key.data
            now = time.time()
            closed = False
            while True:
                try:
                    # 64 KiB: a bigger buffer is malloc'd by mmap and given back on every call
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                except (ssl.SSLWantWriteError, InterruptedError):
                    continue
                except OSError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                stream.feed(data, now)
                if not sock.pending():  # nothing decrypted left: epoll says when the socket has more
                    break
            if closed or stream.ended or len(stream.seen) >= spec.events:
                # a complete watcher stops reading but keeps its connection until every watcher is done: 1,000
                # closes at once would have the server tear down connections while the last event is delivered
                sel.unregister(sock)
                live -= 1
    result.client_cpu_seconds = time.process_time() - cpu0
    gc.enable()
    for sock, _ in streams.values():
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()
    sel.close()
    for stream in everyone:
        result.delays_ms += stream.delays
        for name, delay in stream.seen.items():
            result.by_event.setdefault(name.decode(), []).append(delay)
        result.received += len(stream.seen)
        result.complete += len(stream.seen) == spec.events
    return result


# ---------------------------------------------------------------- servers
@dataclass
class Etcd:
    """A throw-away single-member etcd on free loopback ports."""

    data_dir: Path
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Etcd:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("the etcd binary is not installed (apt-get install -y etcd-server)")
        from tests.e2e.cluster import free_port

        self.url, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        log = (self.data_dir.parent / "etcd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {log.name}")
            with contextlib.suppress(OSError):
                req = urllib.request.Request(f"{self.url}/v3/kv/range", data=b'{"key":"AA=="}', method="POST")
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            time.sleep(0.1)
        raise RuntimeError("etcd did not become ready")

    def sample_value(self, prefix: bytes) -> bytes:
        """The value stored under the first key with `prefix` (what skiff wrote), for raw puts of the same size."""
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        body = json.dumps({"key": b64(prefix), "range_end": b64(end), "limit": 1}).encode()
        req = urllib.request.Request(f"{self.url}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            kvs = json.loads(resp.read()).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else configmap("x" * 20) * 2

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Profiler:
    """py-spy attached to the server for one phase at a time (a no-op without --profile)."""

    def __init__(self, out_dir: Path | None, pid: int, backend: str, *, gil: bool = False) -> None:
        self.out_dir, self.pid, self.backend = out_dir, pid, backend
        self.binary = shutil.which("py-spy") if out_dir else None
        self.gil = gil
        if out_dir and not self.binary:
            print("warning: --profile needs py-spy on PATH; not profiling", file=sys.stderr)
        self.files: dict[str, tuple[Path, float]] = {}  # phase -> (collapsed stacks, seconds recorded)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.binary or not self.out_dir:
            yield
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{self.backend}-{name}.txt"
        proc = subprocess.Popen(
            [
                self.binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(PROFILE_RATE),
                "--nonblocking",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(out),
                *(["--gil"] if self.gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # let it attach
        began = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - began
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                self.files[name] = (out, seconds)


# Where the event loop's time goes, by the innermost frame that matches (rough, by file and function name).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "storage threads: reader-pool hop, wake-ups from threads",
        (
            "run_in_executor",
            "_chain_future",
            "_call_set_state",
            "ThreadPoolExecutor.submit",
            "wrap_future",
            "_read_from_self",
        ),
    ),
    ("storage writes: hand-off to the writer", ("Writer.submit", "SQLiteBackend._deliver")),
    ("storage: etcd client requests", ("etcd_client.py", "aiohttp/client", "client_proto.py", "client_reqrep.py")),
    ("TLS", ("ssl.py", "sslproto.py")),
    ("authentication, authorization", ("auth.py",)),
    ("admission, validation, defaulting", ("admission.py", "validation.py", "schema.py", "defaults.py", "strategy.py")),
    ("store: uid, timestamps, encode/decode", ("store.py", "objects.py")),
    (
        "watch fan-out: watch cache, queues, watchstream",
        ("watchstream.py", "watchcache.py", "queues.py", "watchhub.py"),
    ),
    (
        "HTTP request/response machinery (aiohttp, leanhttp), routing, handlers",
        (
            "aiohttp/web_",
            "aiohttp/http_",
            "aiohttp/streams.py",
            "leanhttp.py",
            "leanrequest.py",
            "httpframing.py",
            "fastroute.py",
            "paths.py",
            "content.py",
            "handlers.py",
            "serve.py",
        ),
    ),
)


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "event loop, other"


def summarize_profile(
    path: Path, seconds: float, rate: int = PROFILE_RATE, top: int = 10, *, gil: bool = False
) -> list[str]:
    """Per server thread: how busy it was, where the loop's time goes, the top functions (self and inclusive).

    py-spy leaves idle threads out, so a thread's samples / (rate x seconds)
    is roughly the share of the phase it spent running or waiting for the GIL
    (with --gil: holding the GIL).
    """
    threads: dict[str, tuple[Counter[str], Counter[str], Counter[tuple[str, str]], Counter[str], list[int]]] = {}
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_s = raw.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        n = int(count_s)
        frames = stack.split(";")
        thread = "?"
        if frames[0].startswith("thread ("):
            thread = frames.pop(0).split(": ", 1)[-1].rstrip("_0123456789") or "?"
        if not frames:
            continue
        own, total, edges, kinds, count = threads.setdefault(thread, (Counter(), Counter(), Counter(), Counter(), [0]))
        count[0] += n
        kinds[_category(frames)] += n
        names = [_short(f) for f in frames]
        own[names[-1]] += n
        for f in set(names):
            total[f] += n
        for edge in set(pairwise(names)):
            edges[edge] += n
    doing = "holding the GIL" if gil else "on CPU or waiting for the GIL"
    lines = [f"{path.name}: py-spy{' --gil' if gil else ''}, {seconds:.1f} s at {rate} Hz"]
    for thread, (own, total, edges, kinds, (samples,)) in sorted(threads.items(), key=lambda kv: -kv[1][4][0]):
        busy = 100 * samples / max(1.0, rate * seconds)
        lines.append(f"  thread {thread}: {samples} samples (~{busy:.0f}% of the phase {doing})")
        if samples < rate * seconds * 0.02:
            continue
        if thread == "MainThread":
            lines += [f"    by kind {100 * n / samples:5.1f}%  {k}" for k, n in kinds.most_common()]
        lines += [f"    self  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
        # inclusive: leave out pass-through frames (nearly all their samples go through one callee:
        # the loop, middlewares) so that what is left says where the time splits
        widest: Counter[str] = Counter()
        for (parent, _child), n in edges.items():
            widest[parent] = max(widest[parent], n)
        inner = [(f, n) for f, n in total.most_common() if widest[f] < 0.95 * n]
        lines += [f"    incl  {100 * n / samples:5.1f}%  {f}" for f, n in inner[:top]]
    return lines


def _short(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'func (module.py)'."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({'/'.join(file.split('/')[-2:])})" if file else name


# ---------------------------------------------------------------- the run
@dataclass
class Report:
    backend: str
    creates: dict[int, LoadResult] = field(default_factory=dict)
    raw_puts: dict[int, LoadResult] = field(default_factory=dict)
    gets: dict[int, LoadResult] = field(default_factory=dict)
    list_unpaginated_ms: float = float("nan")
    list_paginated_ms: float = float("nan")
    list_pages: int = 0
    list_items: int = 0
    watch: WatchResult | None = None
    watch_events: int = 0
    watch_watchers: int = 0
    watch_create_p50_ms: float = float("nan")
    watch_sent: dict[str, tuple[float, float]] = field(default_factory=dict)  # event -> (send time, create ms)
    watch_open_cpu: float = 0.0  # skiff CPU seconds spent while the watches were being opened
    watch_deliver_cpu: float = 0.0  # skiff CPU seconds from the first create until every watcher was done
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, tuple[Path, float]] = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def wait_quiet(limit: float, threshold: float = 0.25, window: float = 3.0) -> None:
    """Wait up to `limit` seconds for a `window` in which the machine's CPUs are less than `threshold` busy."""
    deadline = time.monotonic() + limit
    cpus = os.cpu_count() or 1
    while True:
        busy0 = machine_busy_seconds()
        await asyncio.sleep(window)
        share = (machine_busy_seconds() - busy0) / (window * cpus)
        if share < threshold:
            return
        if time.monotonic() >= deadline:
            log(f"machine still {100 * share:.0f}% busy after waiting {limit:g}s for quiet; going ahead")
            return
        log(f"machine {100 * share:.0f}% busy with other work; waiting for quiet")


async def run_backend(backend: str, prof: Profile, pool: ProcessPoolExecutor, args: argparse.Namespace) -> Report:
    from tests.e2e.cluster import Server

    report = Report(backend)
    workdir = Path(tempfile.mkdtemp(prefix=f"skiff-bench-{backend}-", dir=args.tmpdir))
    etcd: Etcd | None = None
    server: Server | None = None
    try:
        extra = ["--log-level", "warning"]
        if backend == "etcd":
            etcd = Etcd(workdir / "etcd").start()
            extra += ["--datastore-endpoint", etcd.url]
            log(f"etcd {etcd.url} started")
        server = Server(workdir / "skiff", extra_args=extra).start(timeout=60)
        assert server.proc is not None
        log(f"skiff ({backend}) {server.url} started, data in {workdir}")
        pids = (server.proc.pid,) + ((etcd.proc.pid,) if etcd and etcd.proc else ())
        target = Target(server.url, str(server.data_dir / "tls"), pids)
        profiler = Profiler(args.profile, server.proc.pid, backend, gil=args.profile_gil)
        for ns in ("bench", "list", "watch"):
            # waits for the namespace's kube-root-ca.crt, so that the watchers do not meet it as an extra event
            server.create_namespace(ns, timeout=60)

        async def load(spec: LoadSpec) -> LoadResult:
            return await asyncio.wrap_future(pool.submit(run_load, spec))

        with profiler.phase("create"):
            for clients in CONCURRENCY if "create" in args.only else ():
                spec = LoadSpec(
                    target, "create", clients, prof.seconds, prof.warmup, prefix=f"c{clients}-", client=prof.client
                )
                report.creates[clients] = r = await load(spec)
                log(f"create x{clients}: {r.rate:.0f}/s errors={r.errors} {r.first_error}")
        if etcd is not None and "create" in args.only:
            value = etcd.sample_value(b"/registry/configmaps/bench/")
            raw = Target(etcd.url, None, (etcd.proc.pid,) if etcd.proc else ())
            for clients in CONCURRENCY:
                spec = LoadSpec(
                    raw,
                    "etcd-put",
                    clients,
                    prof.seconds,
                    prof.warmup,
                    prefix=f"p{clients}-",
                    value=value,
                    client=prof.client,
                )
                report.raw_puts[clients] = r = await load(spec)
                log(f"raw etcd put x{clients}: {r.rate:.0f}/s ({len(value)} B values) errors={r.errors}")

        if {"get", "list"} & set(args.only):
            fill = await load(LoadSpec(target, "create", 16, count=prof.list_objects, namespace="list", prefix="o"))
            if fill.errors:
                report.notes.append(f"filling the list namespace: {fill.errors} errors, first: {fill.first_error}")
            log(f"{prof.list_objects} objects for list/get created in {fill.seconds:.1f}s")

        with profiler.phase("get"):
            for clients in CONCURRENCY if "get" in args.only else ():
                spec = LoadSpec(
                    target,
                    "get",
                    clients,
                    prof.seconds,
                    prof.warmup,
                    namespace="list",
                    prefix="o",
                    names=prof.list_objects,
                    client=prof.client,
                )
                report.gets[clients] = r = await load(spec)
                log(f"get x{clients}: {r.rate:.0f}/s errors={r.errors} {r.first_error}")

        if "list" in args.only:
            with profiler.phase("list"):
                await measure_lists(target, prof, report)
            log(f"list: {report.list_unpaginated_ms:.0f} ms unpaginated, {report.list_paginated_ms:.0f} ms paginated")

        if "watch" in args.only:
            await measure_watch(server, target, prof, report, profiler)
        report.profiles = dict(profiler.files)
    finally:
        if server is not None and server.proc is not None:
            code = server.stop()
            if code not in (0, -signal.SIGTERM):
                report.notes.append(f"skiff exited with {code}; log: {server.logs()[-2000:]}")
        if etcd is not None:
            etcd.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


async def measure_lists(target: Target, prof: Profile, report: Report) -> None:
    """Mean time to fetch every object of the list namespace, whole and in pages of 500 (body read, not parsed)."""
    url = f"{target.url}/api/v1/namespaces/list/configmaps"
    async with session_for(target, 1) as session:

        async def fetch(query: str) -> bytes:
            async with session.get(url + query, headers={"Accept": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"list {resp.status}: {body[:200]!r}")
            return body

        async def paged() -> tuple[int, list[Any]]:
            raws = [await fetch("?limit=500")]
            while cont := _loads(raws[-1])["metadata"].get("continue"):
                raws.append(await fetch(f"?limit=500&continue={cont}"))
            return len(raws), [item for r in raws for item in _loads(r)["items"]]

        def ours(listed: list[Any]) -> int:
            """The bench's own objects among those listed (the namespace also gets the cluster's kube-root-ca.crt)."""
            return sum(1 for item in listed if item["metadata"]["name"].startswith("o"))

        await fetch("")  # warm the connection
        for kind in ("whole", "paged"):
            times: list[float] = []
            for _ in range(prof.list_runs):
                t0 = time.perf_counter()
                # paged() parses each page to find the continue token; whole() parses after the clock stops
                if kind == "whole":
                    raw = await fetch("")
                    times.append((time.perf_counter() - t0) * 1000)
                    listed = _loads(raw)["items"]
                    report.list_items = len(listed)
                else:
                    pages, listed = await paged()
                    times.append((time.perf_counter() - t0) * 1000)
                    report.list_pages = pages
                if ours(listed) != prof.list_objects:
                    report.notes.append(
                        f"list ({kind}) returned {ours(listed)} of the bench's objects, expected {prof.list_objects}"
                    )
            mean = sum(times) / len(times)
            if kind == "whole":
                report.list_unpaginated_ms = mean
            else:
                report.list_paginated_ms = mean


async def measure_watch(server: Any, target: Target, prof: Profile, report: Report, profiler: Profiler) -> None:
    """Open the watchers (in `prof.watch_procs` processes), create the stamped objects, gather the delays."""
    status, listed, _ = server.raw("GET", "/api/v1/namespaces/watch/configmaps")
    if status != 200:
        raise RuntimeError(f"cannot list the watch namespace: {status}")
    rv = listed["metadata"]["resourceVersion"]
    ctx = multiprocessing.get_context("spawn")
    procs = max(1, min(prof.watch_procs, prof.watchers))
    shares = [prof.watchers // procs + (i < prof.watchers % procs) for i in range(procs)]
    children: list[tuple[Any, Connection]] = []
    for share in shares:
        parent_end, child_end = ctx.Pipe()
        spec = WatchSpec(target, "watch", rv, share, prof.watch_events, prefix="w", watcher=prof.watcher)
        proc = ctx.Process(target=run_watchers, args=(spec, child_end), daemon=True)
        proc.start()
        child_end.close()
        children.append((proc, parent_end))
    conns = [conn for _, conn in children]
    total = WatchResult()
    report.watch, report.watch_events, report.watch_watchers = total, prof.watch_events, prof.watchers
    server_pid = target.cpu_pids[0]
    try:
        began, cpu0 = time.perf_counter(), cpu_seconds(server_pid)
        with profiler.phase("watch-open"):
            for _, opened, failed, error in await _receive(conns, "ready"):
                total.opened += opened
                total.failed += failed
                total.first_error = total.first_error or error
        total.open_seconds = time.perf_counter() - began
        cpu1 = cpu_seconds(server_pid)
        report.watch_open_cpu = cpu1 - cpu0
        log(f"{total.opened} watches open ({total.failed} failed) in {total.open_seconds:.1f}s; creating")
        with profiler.phase("watch-deliver"):
            latencies = await _create_stamped(target, prof, report)
            report.watch_create_p50_ms = percentile(sorted(latencies), 50)
            last = time.time()
            for conn in conns:
                conn.send(("sent", last, prof.watch_grace))
            for _, part in await _receive(conns, "result"):
                total.delays_ms += part.delays_ms
                for name, delays in part.by_event.items():
                    total.by_event.setdefault(name, []).extend(delays)
                total.complete += part.complete
                total.received += part.received
                total.client_cpu_seconds += part.client_cpu_seconds
        report.watch_deliver_cpu = cpu_seconds(server_pid) - cpu1
        total.delays_ms.sort()
    finally:
        for proc, conn in children:
            conn.close()
            proc.join(10)
            if proc.is_alive():
                proc.kill()


async def _receive(conns: list[Connection], kind: str) -> list[Any]:
    """The next message of every watcher process, which must be of `kind`."""
    loop = asyncio.get_running_loop()
    messages = []
    for conn in conns:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] != kind:
            raise RuntimeError(f"watcher process failed: {msg}")
        messages.append(msg)
    return messages


async def _create_stamped(target: Target, prof: Profile, report: Report) -> list[float]:
    """Create the watched objects one at a time at `prof.watch_rate`, each holding its send time; their latencies."""
    latencies: list[float] = []
    url = f"{target.url}/api/v1/namespaces/watch/configmaps"
    async with session_for(target, 1) as session:
        t0 = time.perf_counter()
        for i in range(prof.watch_events):
            await asyncio.sleep(max(0.0, t0 + i / prof.watch_rate - time.perf_counter()))
            sent = time.time()
            body = configmap(f"w{i:05d}", {"sent": repr(sent)})
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status != 201:
                    report.notes.append(f"watch create {i}: {resp.status}")
            latencies.append((time.time() - sent) * 1000)
            report.watch_sent[f"w{i:05d}"] = (sent, latencies[-1])
    return latencies


# ---------------------------------------------------------------- output
def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # nan -> "-"


def render(reports: list[Report], prof: Profile) -> str:
    out: list[str] = []
    for rep in reports:
        out.append(f"\n== backend: {rep.backend} ==")
        etcd_col = f"{'etcd CPU':>10}" if rep.raw_puts else ""
        head = (
            f"{'operation':<30}{'clients':>8}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/op':>11}"
            f"{'skiff CPU':>11}{etcd_col}{'load CPU':>10}{'other CPU':>11}"
        )
        if rep.creates or rep.gets:
            out.append(head)
            out.append("-" * len(head))
        rows = [("create ConfigMap", rep.creates), ("get ConfigMap", rep.gets)]
        if rep.raw_puts:
            rows.insert(1, ("raw etcd put (JSON gateway)", rep.raw_puts))
        for label, results in rows:
            for clients, r in results.items():
                lat = r.latencies_ms
                per_op = _per(r.server_cpu[0] * r.seconds if r.server_cpu else 0.0, r.ops, 1e3, 2)
                cpus = [_pct(c) for c in r.server_cpu]
                if label.startswith("raw"):
                    cpus = ["-", *cpus]
                if not rep.raw_puts:
                    cpus = cpus[:1]
                line = (
                    f"{label:<30}{clients:>8}{fmt(r.rate, 0):>9}{fmt(percentile(lat, 50), 2):>9}"
                    f"{fmt(percentile(lat, 99), 2):>9}{per_op:>11}"
                    f"{cpus[0] if cpus else '-':>11}"
                    + (f"{cpus[1] if len(cpus) > 1 else '-':>10}" if rep.raw_puts else "")
                    + f"{_pct(r.client_cpu):>10}{_pct(r.other_cpu):>11}"
                )
                if r.errors:
                    line += f"  errors={r.errors} ({r.first_error[:80]})"
                out.append(line)
        if rep.raw_puts:
            for clients in CONCURRENCY:
                c, p = rep.creates.get(clients), rep.raw_puts.get(clients)
                if c and p and p.rate:
                    out.append(f"{'  skiff creates / raw etcd puts':<30}{clients:>8}{c.rate / p.rate:>9.2f}")
        if rep.list_pages:
            out.append(
                f"list {rep.list_items} objects, unpaginated (mean of {prof.list_runs}): "
                f"{fmt(rep.list_unpaginated_ms)} ms"
            )
            out.append(
                f"list {prof.list_objects} objects, limit=500 ({rep.list_pages} pages, mean of {prof.list_runs}): "
                f"{fmt(rep.list_paginated_ms)} ms"
            )
        w = rep.watch
        if w is not None:
            pairs = rep.watch_watchers * rep.watch_events
            d = w.delays_ms
            out.append(
                f"watch: {w.opened}/{rep.watch_watchers} watchers open in {w.open_seconds:.1f}s"
                + (f" ({w.failed} failed: {w.first_error[:80]})" if w.failed else "")
                + f"; {rep.watch_events} creates at {prof.watch_rate:g}/s"
                + f" (create p50 {fmt(rep.watch_create_p50_ms)} ms)"
            )
            out.append(
                f"watch: skiff CPU {rep.watch_open_cpu:.2f} s to open ({_per(rep.watch_open_cpu, w.opened, 1e3)} ms "
                f"per watch), {rep.watch_deliver_cpu:.2f} s to create and deliver "
                f"({_per(rep.watch_deliver_cpu, w.received, 1e6)} us per watcher x event)"
            )
            out.append(
                f"watch: {prof.watcher} watcher in {prof.watch_procs} process(es), client CPU "
                f"{w.client_cpu_seconds:.2f} s ({_per(w.client_cpu_seconds, w.received, 1e6)} us per watcher x event)"
            )
            out.append(
                f"watch delay (send -> received), {len(d)}/{pairs} watcher x event pairs: "
                f"p50 {fmt(percentile(d, 50))} ms, p99 {fmt(percentile(d, 99))} ms, "
                f"max {fmt(d[-1] if d else float('nan'))} ms"
            )
            if w.by_event:
                out.append(
                    "watch: slowest events (create ms; delay min / p50 / max ms over watchers): "
                    + "; ".join(
                        f"{name} ({fmt(rep.watch_sent.get(name, (0.0, float('nan')))[1])}; "
                        f"{fmt(min(ds))} / {fmt(percentile(sorted(ds), 50))} / {fmt(max(ds))})"
                        for name, ds in _slowest_events(w.by_event, 3)
                    )
                )
                # before the fan-out (the create, the server's loop) vs during it (the fan-out, the watchers)
                first = sorted(min(ds) for ds in w.by_event.values())
                spread = sorted(max(ds) - min(ds) for ds in w.by_event.values())
                out.append(
                    f"watch per event: first watcher p50 {fmt(percentile(first, 50))} / max {fmt(first[-1])} ms; "
                    f"first to last watcher p50 {fmt(percentile(spread, 50))} / max {fmt(spread[-1])} ms"
                )
            out.append(
                f"every watcher saw every event: {'yes' if w.complete == rep.watch_watchers else 'NO'} "
                f"({w.complete}/{rep.watch_watchers} watchers complete)"
            )
        for note in rep.notes:
            out.append(f"note: {note}")
    out.append("\n== targets (measured vs target; informational, never a failure) ==")
    for rep in reports:
        if rep.backend == "sqlite" and rep.creates:
            best_c, best = max(rep.creates.items(), key=lambda kv: kv[1].rate)
            out.append(
                _target(
                    f"SQLite creates/s (best, at {best_c} clients)",
                    f"{best.rate:,.0f}/s",
                    f">= {TARGET_CREATES:,.0f}/s",
                    best.rate >= TARGET_CREATES,
                )
            )
        r64 = rep.creates.get(64)
        if r64 is not None:
            p99 = percentile(r64.latencies_ms, 99)
            out.append(
                _target(
                    f"{rep.backend}: create p99 at 64 clients",
                    f"{fmt(p99)} ms",
                    f"<= {TARGET_CREATE_P99_MS:g} ms",
                    p99 <= TARGET_CREATE_P99_MS,
                )
            )
        w = rep.watch
        if w is not None:
            worst = w.delays_ms[-1] if w.delays_ms else float("inf")
            ok = w.complete == rep.watch_watchers and worst <= TARGET_WATCH_MS
            out.append(
                _target(
                    f"{rep.backend}: {rep.watch_watchers} watchers see every event",
                    f"{w.complete}/{rep.watch_watchers} complete, max {fmt(worst)} ms",
                    f"all, <= {TARGET_WATCH_MS:g} ms",
                    ok,
                )
            )
    return "\n".join(out)


def _slowest_events(by_event: dict[str, list[float]], n: int) -> list[tuple[str, list[float]]]:
    """The `n` events whose last watcher got them latest."""
    return sorted(by_event.items(), key=lambda item: max(item[1]), reverse=True)[:n]


def _per(total: float, count: int, scale: float, digits: int = 0) -> str:
    return f"{total / count * scale:.{digits}f}" if count else "-"


def _pct(cores: float) -> str:
    return f"{100 * cores:.0f}%"


def _target(what: str, measured: str, target: str, met: bool) -> str:
    return f"{what:<46} {measured:>28}   target {target:<16} {'met' if met else 'MISSED'}"


def skiff_source() -> str:
    """Where the server's code comes from (PYTHONPATH can point the bench at another checkout), with its commit."""
    import skiff

    src = Path(skiff.__file__).resolve().parent.parent
    git = subprocess.run(
        ["git", "-C", str(src), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    )
    if git.returncode != 0:
        return str(src)
    dirty = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=False
    )
    return f"{src} at {git.stdout.strip()}{' + uncommitted changes' if dirty.stdout.strip() else ''}"


def machine() -> str:
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":")[1].strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; MemTotal {mem}; "
        f"kernel {platform.release()}; Python {platform.python_version()}"
    )


async def main_async(args: argparse.Namespace) -> tuple[Profile, list[Report]]:
    prof = QUICK if args.quick else FULL
    if args.watchers is not None:
        prof.watchers = args.watchers
    if args.watch_events is not None:
        prof.watch_events = args.watch_events
    if args.seconds is not None:
        prof.seconds = args.seconds
    prof.watcher = args.watcher
    prof.client = args.client
    if args.watch_procs is not None:
        prof.watch_procs = args.watch_procs
    backends = ["sqlite", "etcd"] if args.backend == "both" else [args.backend]
    if "etcd" in backends and shutil.which("etcd") is None:
        print("etcd binary not found (apt-get install -y etcd-server): skipping the etcd backend", file=sys.stderr)
        backends.remove("etcd")
    reports: list[Report] = []
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.wrap_future(pool.submit(time.sleep, 0))  # start the load process before timing anything
        for backend in backends:
            if args.wait_quiet:
                await wait_quiet(args.wait_quiet)
            reports.append(await run_backend(backend, prof, pool, args))
    return prof, reports


def print_results(args: argparse.Namespace, prof: Profile, reports: list[Report]) -> None:
    print(f"skiff API benchmark ({'quick' if args.quick else 'full'}) -- {machine()}")
    print(f"skiff source: {skiff_source()}")
    print(
        "load from separate processes over HTTPS keep-alive. CPU columns: % of one core during the measured window"
        " (skiff server, etcd, the load process, everything else on the machine)"
    )
    print(render(reports, prof))
    for rep in reports:
        for path, seconds in rep.profiles.values():
            print()
            print("\n".join(summarize_profile(path, seconds, gil=args.profile_gil)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": machine(), "profile": asdict(prof), "reports": [_jsonable(r) for r in reports]}, f, indent=1
            )


def _jsonable(rep: Report) -> dict[str, Any]:
    def load(r: LoadResult) -> dict[str, Any]:
        lat = r.latencies_ms
        return {
            "rate": r.rate,
            "ops": r.ops,
            "errors": r.errors,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "server_cpu": r.server_cpu,
            "client_cpu": r.client_cpu,
        }

    w = rep.watch
    return {
        "backend": rep.backend,
        "creates": {c: load(r) for c, r in rep.creates.items()},
        "raw_puts": {c: load(r) for c, r in rep.raw_puts.items()},
        "gets": {c: load(r) for c, r in rep.gets.items()},
        "list_unpaginated_ms": rep.list_unpaginated_ms,
        "list_paginated_ms": rep.list_paginated_ms,
        "watch": None
        if w is None
        else {
            "watchers": rep.watch_watchers,
            "events": rep.watch_events,
            "opened": w.opened,
            "complete": w.complete,
            "pairs": len(w.delays_ms),
            "p50_ms": percentile(w.delays_ms, 50),
            "p99_ms": percentile(w.delays_ms, 99),
            "max_ms": w.delays_ms[-1] if w.delays_ms else None,
            # per event, in creation order: when it was sent, its create's latency, its delays over the watchers
            "by_event": [
                {
                    "name": name,
                    "sent": sent,
                    "create_ms": create_ms,
                    "received": len(ds := sorted(w.by_event.get(name, []))),
                    "min_ms": ds[0] if ds else None,
                    "p50_ms": percentile(ds, 50) if ds else None,
                    "max_ms": ds[-1] if ds else None,
                }
                for name, (sent, create_ms) in sorted(rep.watch_sent.items())
            ],
        },
        "notes": rep.notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of about 30 s per backend")
    parser.add_argument("--backend", choices=("sqlite", "etcd", "both"), default="both")
    parser.add_argument(
        "--watchers", type=int, help=f"concurrent watchers (default {FULL.watchers}, quick {QUICK.watchers})"
    )
    parser.add_argument("--watch-events", type=int, help="objects created while the watchers listen")
    parser.add_argument("--seconds", type=float, help="measured seconds per throughput point")
    parser.add_argument(
        "--watcher",
        choices=("lean", "aiohttp"),
        default="lean",
        help="lean: raw TLS sockets in one epoll loop per process (default); aiohttp: the earlier aiohttp client",
    )
    parser.add_argument(
        "--client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="create/get load: the client library's lean keep-alive HTTP/1.1 pool over TLS (default; what the"
        " scheduler writes with), or aiohttp's ClientSession (the earlier load client, ~0.2 ms more CPU per request)",
    )
    parser.add_argument("--watch-procs", type=int, help=f"watcher processes (default {FULL.watch_procs})")
    parser.add_argument(
        "--only",
        type=lambda v: [p.strip() for p in v.split(",")],
        default=list(PHASES),
        metavar="PHASES",
        help=f"run only these phases, comma-separated, of {','.join(PHASES)} (e.g. --only watch)",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record py-spy profiles of the server here")
    parser.add_argument(
        "--profile-gil", action="store_true", help="with --profile: sample only the thread holding the GIL"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--tmpdir",
        default="/var/tmp" if os.path.isdir("/var/tmp") else None,
        help="where the throw-away data dirs go (default /var/tmp: a real disk, so fsync counts)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each backend, wait up to this long for other work on the machine to calm down",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (server logs) afterwards")
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(PHASES):
        parser.error(f"--only: unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    prof, reports = asyncio.run(main_async(args))
    print_results(args, prof, reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())

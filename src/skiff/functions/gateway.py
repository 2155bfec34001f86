"""The function gateway: routes calls to instances, scales them from and to zero, meters every call.

`/fn/<namespace>/<name>[/path]` (or any path with `Host: <name>.<namespace>.<domain>`) is a call of
that function. A call goes to the ready instance with the fewest calls in flight that has room (concurrency);
with none free it is held while instances start (`skiff.functions.fleet`, which also scales,
adopts and stops them) — from zero this is the cold start: the call is answered as soon as the new
instance's runtime answers, with no error and no client retry. A body larger than `--max-body` is
413; a call that outlives `timeoutSeconds` is 504 (runtime).

The warm path is kept short: the function's state is one dict lookup, the body is read once and
written to the instance as it came, with the caller's headers, over a kept-alive connection
(`skiff.functions.proxy`); the answer's body is passed back as it came.

Cold starts are fast because the slow part (a pod, a container, an interpreter importing asyncio)
happens ahead of time: the gateway keeps `--warm-pool` generic runtimes started in every namespace
that has functions, and a function scaling from zero takes one and hands it its code (one HTTP
request), then the pool is refilled. Functions the pool cannot serve (their own image, other
resources) start a pod of their own.

The gateway serves `/metrics` (Prometheus) and
`/usage` (the bill from `skiff.functions.metering`, kept in SQLite in its data dir), and takes
messages for topic triggers at `POST /topics/<namespace>/<topic>` (`skiff.functions.topics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from skiff.api import errors
from skiff.client.rest import Client
from skiff.functions.access import Access
from skiff.functions.autoscale import gb_seconds
from skiff.functions.crd import FUNCTIONS, ensure_crd
from skiff.functions.fleet import Fleet, FleetConfig, FunctionState
from skiff.functions.metering import Invocation, Meter
from skiff.functions.promtext import GatewayMetrics
from skiff.functions.proxy import Answer, InstanceUnreachable, request_head
from skiff.functions.topics import TopicStore
from skiff.functions.triggers import Triggers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    image: str  # the generic python runtime image
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8070
    domain: str = "fn.skiff.local"
    node_name: str = ""  # bind instances to this node directly (skips the scheduler)
    max_body: int = 6 * 1024 * 1024
    warm_pool: int = 1  # ready generic runtimes kept per namespace with functions (0: none)
    advertise_url: str = ""  # the gateway as pods reach it, given to instances as $SKIFF_GATEWAY
    auth: str = "none"  # "token": calls need a bearer token allowed to invoke the function (skiff.functions.access)


class Gateway:
    def __init__(self, client: Client, config: GatewayConfig) -> None:
        self.client = client
        self.config = config
        self.metrics = GatewayMetrics()
        fleet = FleetConfig(image=config.image, node_name=config.node_name, warm_pool=config.warm_pool,
                            gateway_url=config.advertise_url)  # fmt: skip
        self.fleet = Fleet(client, fleet, self.metrics)
        self.functions = self.fleet.functions
        self.spawn = self.fleet.spawn
        self.meter = Meter(config.data_dir / "invocations.sqlite")
        self.topics = TopicStore(config.data_dir / "topics.sqlite")
        self.access = Access(client) if config.auth == "token" else None

    # --- calls -----------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        ns = info.get("ns", "")
        if ns:
            name, path = info["name"], "/" + info.get("tail", "")
        else:  # the Host-header form
            host = request.host.rsplit(":", 1)[0]
            suffix = "." + self.config.domain
            parts = host[: -len(suffix)].split(".") if host.endswith(suffix) else []
            if len(parts) != 2:
                raise web.HTTPNotFound(text="call /fn/<namespace>/<name> or Host: <name>.<namespace>.<domain>\n")
            name, ns = parts
            path = request.path
        state = self.functions.get(f"{ns}/{name}")
        if state is None:  # created a moment ago, before the watch told us? ask the API server
            with contextlib.suppress(errors.NotFound, errors.Invalid, ValueError):
                self.fleet.on_function(await self.client.get(FUNCTIONS, name, namespace=ns))
            state = self.functions.get(f"{ns}/{name}")
        if state is None:
            raise web.HTTPNotFound(text=f'function "{name}" not found in namespace "{ns}"\n')
        if self.access is not None and not state.spec.public:
            refused = await self.access.check(request, ns, name)
            if refused is not None:
                return refused
        body = await request.read()  # 413 when too large: refused before it is an invocation
        query = request.query_string
        head = request_head(request.method, f"{path}?{query}" if query else path, request.raw_headers, len(body))
        answer = await self.call(state, head, body)
        return web.Response(status=answer.status, body=answer.body,
                            headers={"Content-Type": answer.content_type.decode("latin-1")})  # fmt: skip

    async def invoke(
        self, state: FunctionState, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer:
        """One metered call of the function by a trigger; HTTP errors are raised as responses."""
        raw = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        return await self.call(state, request_head(method, target, raw, len(body)), body)

    async def call(self, state: FunctionState, head: bytes, body: bytes) -> Answer:
        """One metered call: an instance taken, the request sent, the answer read, the call recorded."""
        s = state.spec
        start_wall, start = time.time(), time.monotonic()
        state.last_activity = start
        status = 500
        try:
            inst = await self.fleet.acquire(state)
            try:
                async with asyncio.timeout(s.timeout_seconds + 5):
                    answer = await inst.conns.call(head, body)
                if answer.retire:  # a timed-out call: the runtime exits after it
                    inst.dead = True
                status = answer.status
                return answer
            except TimeoutError:
                raise web.HTTPGatewayTimeout(text=f"function {s.key}: no answer in {s.timeout_seconds:g}s\n") from None
            except InstanceUnreachable as e:
                inst.dead = True
                raise web.HTTPBadGateway(text=f"function {s.key}: instance {inst.pod}: {e}\n") from None
            finally:
                await self.fleet.release(state, inst)
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            duration = time.monotonic() - start
            state.invocations += 1
            state.errors += 1 if status >= 500 or status == 429 else 0
            self.metrics.observe(s.namespace, s.name, status, duration)
            self.meter.record(Invocation(s.namespace, s.name, start_wall, duration, status,
                                         gb_seconds(s.memory_bytes, duration)))  # fmt: skip

    # --- the rest of the API -------------------------------------------------------------------------
    async def usage(self, request: web.Request) -> web.Response:
        from skiff.functions.metering import summarize

        since = float(request.query.get("since") or 0)
        records = await self.meter.records(since=since, namespace=request.query.get("namespace") or None)
        return web.json_response({"since": since, "usage": [u.as_dict() for u in summarize(records)]})

    async def publish(self, request: web.Request) -> web.Response:
        """Store a message for every function of the namespace subscribed to the topic: 202."""
        ns, topic = request.match_info["ns"], request.match_info["topic"]
        body = await request.read()
        wanted = {"type": "topic", "topic": topic}
        subscribers = [s.spec.name for s in self.functions.values() if s.spec.namespace == ns
                       and any(t.items() >= wanted.items() for t in s.spec.triggers)]  # fmt: skip
        count = await self.topics.publish(ns, topic, sorted(subscribers), body)
        return web.json_response({"topic": topic, "namespace": ns, "deliveries": count}, status=202)

    async def metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/usage", self.usage)
        app.router.add_post("/topics/{ns}/{topic}", self.publish)
        app.router.add_route("*", "/fn/{ns}/{name}", self.handle)
        app.router.add_route("*", "/fn/{ns}/{name}/{tail:.*}", self.handle)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # --- lifetime --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        await ensure_crd(self.client)
        await self.meter.open()
        await self.topics.open()
        counts = await self.meter.counts()  # the Functions' counters carry on across restarts
        await self.fleet.start()
        for state in self.functions.values():
            state.invocations, state.errors = counts.get((state.spec.namespace, state.spec.name), (0, 0))
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        log.info("function gateway listening on http://%s:%d", self.config.host, self.config.port)
        meter_task = asyncio.create_task(self.meter.run(stop), name="meter")
        house = asyncio.create_task(self.fleet.housekeeping(stop), name="housekeeping")
        triggers = asyncio.create_task(Triggers(self).run(stop), name="triggers")
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await asyncio.gather(meter_task, house, triggers, return_exceptions=True)
            await self.fleet.stop()  # the instances keep running: the next gateway takes them over
            await self.meter.close()
            await self.topics.close()
            if self.access is not None:
                await self.access.close()

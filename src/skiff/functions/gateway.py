"""The function gateway: routes calls to instances, scales them from and to zero, meters every call.

`/fn/<namespace>/<name>[/path]` (or any path with `Host: <name>.<namespace>.<domain>`) is a call of
that function. The gateway keeps, per function, the ready instances and their calls in flight:

- a call goes to the ready instance with the fewest calls in flight that has room (concurrency);
- with none free, the call waits (up to `queueDepth` waiting, beyond that 429) while the autoscaler
  starts instances up to `maxScale` — from zero this is the cold start: the call is held and
  answered as soon as the new instance's runtime answers, with no error and no client retry;
- an instance left idle for `idleTimeout` seconds is stopped, down to `minScale` (0 by default);
- a body larger than `--max-body` is 413; a call that outlives `timeoutSeconds` is 504 (runtime).

Cold starts are fast because the slow part (a pod, a container, an interpreter importing asyncio)
happens ahead of time: the gateway keeps `--warm-pool` generic runtimes started in every namespace
that has functions, and a function scaling from zero takes one and hands it its code (one HTTP
request), then the pool is refilled. Functions the pool cannot serve (their own image, other
resources) start a pod of their own.

The gateway manages the pods itself (see `skiff.functions.instances`), writes each Function's
status (replicas, invocations, the Ready condition) and serves `/metrics` (Prometheus) and
`/usage` (the bill from `skiff.functions.metering`, kept in SQLite in its data dir), and takes
messages for topic triggers at `POST /topics/<namespace>/<topic>` (`skiff.functions.topics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from skiff.api import errors
from skiff.client.cache import Obj
from skiff.client.errors import ServerUnreachable
from skiff.client.informer import Informer
from skiff.client.resources import CONFIGMAPS, PODS
from skiff.client.rest import Client
from skiff.functions.autoscale import (
    ConcurrencyWindow,
    Load,
    desired_instances,
    gb_seconds,
    pick_least_loaded,
    scale_to,
)
from skiff.functions.crd import FUNCTIONS, LABEL, ensure_crd
from skiff.functions.instances import (
    POOL_LABEL,
    Instance,
    InstanceFailed,
    load_request,
    pod_failure,
    pod_manifest,
    pool_manifest,
    poolable,
    runtime_source,
    wait_healthy,
)
from skiff.functions.metering import Invocation, Meter
from skiff.functions.promtext import GatewayMetrics
from skiff.functions.spec import FunctionSpec
from skiff.functions.topics import TopicStore
from skiff.functions.triggers import Triggers

log = logging.getLogger(__name__)
COLD_START_TIMEOUT = 60.0  # seconds a held call waits for a first instance
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "upgrade"}


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


@dataclass
class FunctionState:
    spec: FunctionSpec
    instances: list[Instance] = field(default_factory=list)
    starting: int = 0
    waiting: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    failure: str = ""  # why the last instance failed to start ("" when the last start worked)
    failures: int = 0  # count of start failures, so waiters notice a new one
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    invocations: int = 0
    errors: int = 0
    written: dict[str, Any] = field(default_factory=dict)  # the status last written
    window: ConcurrencyWindow = field(default_factory=ConcurrencyWindow)  # for the stable window
    transition: tuple[str, str] = ("", "")  # the Ready status and when it last changed

    @property
    def in_flight(self) -> int:
        return sum(i.in_flight for i in self.instances)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class Gateway:
    def __init__(self, client: Client, config: GatewayConfig) -> None:
        self.client = client
        self.config = config
        self.source = runtime_source()
        self.functions: dict[str, FunctionState] = {}
        self.fn_informer = Informer(client, FUNCTIONS)
        self.pod_informer = Informer(client, PODS, label_selector=LABEL)
        self.pod_changed: dict[str, asyncio.Event] = {}
        self.pool: dict[str, list[Instance]] = {}  # namespace → warm runtimes with no function yet
        self.pool_starting: dict[str, int] = {}
        self.meter = Meter(config.data_dir / "invocations.sqlite")
        self.topics = TopicStore(config.data_dir / "topics.sqlite")
        self.metrics = GatewayMetrics()
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    # --- watching functions and pods ----------------------------------------------------------
    def _on_function(self, obj: Obj) -> None:
        spec = FunctionSpec.from_object(obj)
        state = self.functions.get(spec.key)
        if state is None:
            self.functions[spec.key] = FunctionState(spec)
        elif state.spec != spec:
            old, state.spec = state.spec, spec
            if (old.inline, old.config_map, old.image, old.handler, old.env) != (
                spec.inline, spec.config_map, spec.image, spec.handler, spec.env,
            ):  # fmt: skip
                for inst in state.instances:  # new code: new instances serve the next calls
                    inst.dead = True
                self.spawn(self._reap(state), f"replace {spec.key}")

    def _on_function_delete(self, obj: Obj) -> None:
        spec = FunctionSpec.from_object(obj)
        self.functions.pop(spec.key, None)  # the garbage collector deletes the pods it owns

    def _on_pod(self, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        ev = self.pod_changed.get(name)
        if ev is not None:
            ev.set()
        if pod_failure(pod) or pod["metadata"].get("deletionTimestamp"):
            self._instance_gone(pod)

    def _instance_gone(self, pod: Obj) -> None:
        for inst in self.pool.get(pod["metadata"].get("namespace", ""), []):
            if inst.pod == pod["metadata"]["name"]:
                inst.dead = True
        key = f"{pod['metadata'].get('namespace')}/{pod['metadata'].get('labels', {}).get(LABEL, '')}"
        state = self.functions.get(key)
        if state is not None:
            for inst in state.instances:
                if inst.pod == pod["metadata"]["name"]:
                    inst.dead = True

    # --- scaling ---------------------------------------------------------------------------------
    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_log_failure)

    def _scale_up(self, state: FunctionState) -> None:
        s = state.spec
        live = [i for i in state.instances if not i.dead]
        want = desired_instances(Load(state.in_flight, state.waiting), concurrency=s.concurrency,
                                 min_scale=s.min_scale, max_scale=s.max_scale)  # fmt: skip
        for _ in range(want - len(live) - state.starting):
            state.starting += 1
            cold = not live
            warm = self.pool.get(s.namespace) if poolable(s) else None
            if warm:
                self.spawn(self._claim(state, warm.pop(), cold=cold), f"claim {s.key}")
            else:
                self.spawn(self._start_instance(state, cold=cold), f"start {s.key}")

    async def _launch(self, manifest: dict[str, Any]) -> Instance:
        """Create a pod and wait until its runtime answers; its pod is deleted when it does not."""
        namespace = manifest["metadata"]["namespace"]
        created = await self.client.create(PODS, manifest)
        pod_name = created["metadata"]["name"]
        ev = self.pod_changed.setdefault(pod_name, asyncio.Event())
        try:
            deadline = time.monotonic() + COLD_START_TIMEOUT
            ip = ""
            while not ip:
                pod = self.pod_informer.get(f"{namespace}/{pod_name}") or created
                if failure := pod_failure(pod):
                    raise InstanceFailed(f"instance {pod_name}: {failure}")
                ip = (pod.get("status") or {}).get("podIP", "")
                if not ip:
                    ev.clear()
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await ev.wait()
            assert self.session is not None
            health = asyncio.create_task(wait_healthy(self.session, ip, deadline=deadline))
            while not health.done():  # a container that exits before it answers is a failure at once
                ev.clear()
                changed = asyncio.create_task(ev.wait())
                await asyncio.wait([health, changed], return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                pod = self.pod_informer.get(f"{namespace}/{pod_name}") or {}
                if failure := pod_failure(pod):
                    health.cancel()
                    raise InstanceFailed(f"instance {pod_name}: {failure}")
            health.result()
            return Instance(pod_name, ip)
        except BaseException:
            self.spawn(self._delete_pod(namespace, pod_name), f"delete {pod_name}")
            raise
        finally:
            self.pod_changed.pop(pod_name, None)

    async def _start_instance(self, state: FunctionState, *, cold: bool) -> None:
        s = state.spec
        began = time.monotonic()
        try:
            manifest = pod_manifest(s, image=self.config.image, source=self.source, node_name=self.config.node_name)
            inst = await self._launch(manifest)
            self._ready(state, inst, cold=cold, how=f"started in {(time.monotonic() - began) * 1000:.0f} ms")
        except (InstanceFailed, TimeoutError, errors.StatusError, ServerUnreachable) as e:
            self._failed(state, f"an instance failed to start: {e}")
        finally:
            state.starting -= 1
            await state.notify()

    async def _claim(self, state: FunctionState, inst: Instance, *, cold: bool) -> None:
        """Make a warm-pool runtime an instance of the function: hand it the code, then label the pod."""
        s = state.spec
        began = time.monotonic()
        try:
            files: dict[str, str] = {}
            if s.config_map:
                files = (await self.client.get(CONFIGMAPS, s.config_map, namespace=s.namespace)).get("data") or {}
            assert self.session is not None
            async with self.session.post(f"{inst.url}/_skiff/load", json=load_request(s, files),
                                         headers={"X-Skiff-Pool-Token": inst.token},
                                         timeout=aiohttp.ClientTimeout(total=30)) as resp:  # fmt: skip
                text = (await resp.text()).strip()
                if resp.status != 200:
                    raise InstanceFailed(f"loading the code into {inst.pod} failed: {''.join(text.splitlines()[-1:])}")
            self._ready(
                state, inst, cold=cold, how=f"loaded into a warm runtime in {(time.monotonic() - began) * 1000:.0f} ms"
            )
            owner = {"apiVersion": FUNCTIONS.api_version, "kind": FUNCTIONS.kind, "name": s.name, "uid": s.uid,
                     "controller": True, "blockOwnerDeletion": True}  # fmt: skip
            patch = {"metadata": {"labels": {LABEL: s.name, POOL_LABEL: None}, "ownerReferences": [owner]}}
            self.spawn(self.client.patch(PODS, inst.pod, patch, namespace=s.namespace), f"label {inst.pod}")
        except (InstanceFailed, errors.StatusError, ServerUnreachable, aiohttp.ClientError, OSError, TimeoutError) as e:
            self._failed(state, str(e))
            self.spawn(self._delete_pod(s.namespace, inst.pod), f"delete {inst.pod}")
        finally:
            state.starting -= 1
            await state.notify()

    def _ready(self, state: FunctionState, inst: Instance, *, cold: bool, how: str) -> None:
        s = state.spec
        state.instances.append(inst)
        state.failure = ""
        if cold:
            self.metrics.cold_starts[(s.namespace, s.name)] += 1
        log.info("function %s: instance %s at %s %s", s.key, inst.pod, inst.ip, how)

    def _failed(self, state: FunctionState, why: str) -> None:
        state.failure = why
        state.failures += 1
        log.warning("function %s: %s", state.spec.key, why)

    async def _fill_pool(self, namespace: str) -> None:
        self.pool_starting[namespace] = self.pool_starting.get(namespace, 0) + 1
        try:
            token = secrets.token_hex(16)
            manifest = pool_manifest(namespace, image=self.config.image, source=self.source, token=token,
                                     node_name=self.config.node_name)  # fmt: skip
            inst = await self._launch(manifest)
            inst.token = token
            self.pool.setdefault(namespace, []).append(inst)
        except (InstanceFailed, TimeoutError, errors.StatusError, ServerUnreachable) as e:
            log.warning("warm pool of %s: %s", namespace, e)
            await asyncio.sleep(2.0)  # a failing pool (no image, no node) does not spin
        finally:
            self.pool_starting[namespace] -= 1

    async def _tend_pool(self) -> None:
        """Keep `warm_pool` ready runtimes in every namespace that has functions; none elsewhere."""
        wanted = {s.spec.namespace for s in self.functions.values() if s.spec.uid}
        for ns in wanted:
            self.pool[ns] = [i for i in self.pool.get(ns, []) if not i.dead]
            for _ in range(self.config.warm_pool - len(self.pool[ns]) - self.pool_starting.get(ns, 0)):
                self.spawn(self._fill_pool(ns), f"warm pool {ns}")
        for ns in [ns for ns in self.pool if ns not in wanted]:
            for inst in self.pool.pop(ns):
                await self._delete_pod(ns, inst.pod)

    async def _delete_pod(self, namespace: str, name: str) -> None:
        with contextlib.suppress(errors.NotFound):
            await self.client.delete(PODS, name, namespace=namespace, grace_period_seconds=1)

    async def _reap(self, state: FunctionState) -> None:
        """Drop dead instances; stop idle ones when the idle timeout has passed."""
        s = state.spec
        for inst in [i for i in state.instances if i.dead]:
            state.instances.remove(inst)
            if inst.in_flight == 0:
                await self._delete_pod(s.namespace, inst.pod)
            else:  # calls still running on an old instance: delete once they are done
                self.spawn(self._delete_when_idle(state, inst), f"drain {inst.pod}")
        idle_for = time.monotonic() - state.last_activity
        now = time.monotonic()
        state.window.record(now, state.in_flight + state.waiting)
        target = scale_to(Load(state.in_flight, state.waiting), len(state.instances), idle_for=idle_for,
                          idle_timeout=s.idle_timeout, concurrency=s.concurrency, min_scale=s.min_scale,
                          max_scale=s.max_scale, stable_average=state.window.average(now, s.idle_timeout))  # fmt: skip
        for inst in sorted(state.instances, key=lambda i: i.in_flight)[: max(0, len(state.instances) - target)]:
            if inst.in_flight == 0:
                state.instances.remove(inst)
                log.info("function %s: instance %s stopped (%d wanted, idle for %.0fs)", s.key, inst.pod, target,
                         idle_for)  # fmt: skip
                await self._delete_pod(s.namespace, inst.pod)
        if state.waiting or len(state.instances) + state.starting < s.min_scale:
            self._scale_up(state)

    async def _delete_when_idle(self, state: FunctionState, inst: Instance) -> None:
        async with state.changed:
            await state.changed.wait_for(lambda: inst.in_flight == 0)
        await self._delete_pod(state.spec.namespace, inst.pod)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._tend_pool()
            except (errors.StatusError, ServerUnreachable) as e:
                log.warning("warm pool: %s", e)
            for state in list(self.functions.values()):
                try:
                    await self._reap(state)
                    await self._write_status(state)
                except (errors.StatusError, ServerUnreachable) as e:
                    log.warning("function %s: %s", state.spec.key, e)
                self.metrics.instances[(state.spec.namespace, state.spec.name)] = len(state.instances)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def _write_status(self, state: FunctionState) -> None:
        s = state.spec
        if state.failure and not state.instances:
            ready, reason, message = "False", "InstanceFailed", state.failure
        elif state.instances:
            ready, reason, message = "True", "Running", f"{len(state.instances)} instance(s) serving"
        else:
            ready, reason, message = "True", "ScaledToZero", "no instance; the next call starts one"
        cond: dict[str, Any] = {"type": "Ready", "status": ready, "reason": reason, "message": message}
        status: dict[str, Any] = {"replicas": len(state.instances), "invocations": state.invocations}
        status["errors"] = state.errors
        status["conditions"] = [cond]
        if status == state.written:
            return
        if state.transition[0] != ready:
            state.transition = (ready, _now())
        body = {"status": {**status, "conditions": [{**cond, "lastTransitionTime": state.transition[1]}]}}
        try:
            await self.client.patch(FUNCTIONS, s.name, body, namespace=s.namespace, subresource="status")
        except errors.NotFound:
            return
        state.written = status

    # --- calls -----------------------------------------------------------------------------------
    async def _acquire(self, state: FunctionState) -> Instance:
        s = state.spec
        deadline = time.monotonic() + COLD_START_TIMEOUT
        failures = state.failures
        waiting = False
        try:
            async with state.changed:
                while True:
                    free = [i for i in state.instances if not i.dead]
                    idx = pick_least_loaded([i.in_flight for i in free], s.concurrency)
                    if idx is not None:
                        free[idx].in_flight += 1
                        return free[idx]
                    if state.failures != failures and not free and state.starting == 0:
                        raise web.HTTPServiceUnavailable(text=f"{state.failure}\n")
                    if not waiting:
                        if state.waiting >= s.queue_depth:
                            raise web.HTTPTooManyRequests(text=f"function {s.key}: {state.waiting} calls queued\n")
                        state.waiting += 1
                        waiting = True
                    self._scale_up(state)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise web.HTTPServiceUnavailable(text=f"function {s.key}: no instance ready in time\n")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(state.changed.wait(), min(remaining, 1.0))
        finally:
            if waiting:
                state.waiting -= 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ns, name, path = request.match_info.get("ns", ""), request.match_info.get("name", ""), ""
        if ns:
            path = request.match_info.get("tail", "")
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
                self._on_function(await self.client.get(FUNCTIONS, name, namespace=ns))
            state = self.functions.get(f"{ns}/{name}")
        if state is None:
            raise web.HTTPNotFound(text=f'function "{name}" not found in namespace "{ns}"\n')
        return await self._call(state, request, "/" + path.lstrip("/"))

    async def _call(self, state: FunctionState, request: web.Request, path: str) -> web.StreamResponse:
        body = await request.read()  # 413 when too large: refused before it is an invocation
        target = path + (f"?{request.query_string}" if request.query_string else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        return await self.invoke(state, request.method, target, headers, body)

    async def invoke(
        self, state: FunctionState, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> web.Response:
        """One metered call of the function (HTTP, or a trigger's); HTTP errors are raised as responses."""
        s = state.spec
        start_wall, start = time.time(), time.monotonic()
        state.last_activity = start
        status = 500
        try:
            inst = await self._acquire(state)
            try:
                response = await self._forward(s, inst, method, target, headers, body)
                status = response.status
                return response
            finally:
                inst.in_flight -= 1
                state.last_activity = time.monotonic()
                await state.notify()
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

    async def _forward(
        self, s: FunctionSpec, inst: Instance, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> web.Response:
        assert self.session is not None
        headers = {**headers, "X-Request-Id": headers.get("X-Request-Id") or uuid.uuid4().hex}
        try:
            timeout = aiohttp.ClientTimeout(total=s.timeout_seconds + 5)
            async with self.session.request(method, inst.url + target, data=body, headers=headers,
                                            timeout=timeout) as resp:  # fmt: skip
                payload = await resp.read()
                if resp.headers.get("X-Skiff-Retire"):  # a timed-out call: the runtime exits after it
                    inst.dead = True
                ctype = resp.headers.get("Content-Type", "application/octet-stream")
                return web.Response(status=resp.status, body=payload, headers={"Content-Type": ctype})
        except TimeoutError:
            raise web.HTTPGatewayTimeout(text=f"function {s.key}: no answer in {s.timeout_seconds:g}s\n") from None
        except (aiohttp.ClientError, OSError) as e:
            inst.dead = True
            raise web.HTTPBadGateway(text=f"function {s.key}: instance {inst.pod}: {e}\n") from None

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
        self.fn_informer.add_handlers(on_add=self._on_function, on_update=lambda _old, new: self._on_function(new),
                                      on_delete=self._on_function_delete)  # fmt: skip
        self.pod_informer.add_handlers(on_add=self._on_pod, on_update=lambda _old, new: self._on_pod(new),
                                       on_delete=self._instance_gone)  # fmt: skip
        self.fn_informer.start()
        self.pod_informer.start()
        await asyncio.gather(self.fn_informer.wait_synced(), self.pod_informer.wait_synced())
        for state in self.functions.values():
            state.invocations, state.errors = counts.get((state.spec.namespace, state.spec.name), (0, 0))
        for pod in self.pod_informer.list():  # instances of an earlier gateway: not tracked, so stopped
            await self._delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        log.info("function gateway listening on http://%s:%d", self.config.host, self.config.port)
        meter_task = asyncio.create_task(self.meter.run(stop), name="meter")
        house = asyncio.create_task(self._housekeeping(stop), name="housekeeping")
        triggers = asyncio.create_task(Triggers(self).run(stop), name="triggers")
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await asyncio.gather(meter_task, house, triggers, return_exceptions=True)
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            leftovers = [(s.spec.namespace, i) for s in self.functions.values() for i in s.instances]
            leftovers += [(ns, i) for ns, insts in self.pool.items() for i in insts]
            for ns, inst in leftovers:  # stopped with the gateway: nothing would route to them
                with contextlib.suppress(errors.StatusError, ServerUnreachable):
                    await self._delete_pod(ns, inst.pod)
            await self.meter.close()
            await self.topics.close()
            await self.session.close()
            await self.fn_informer.stop()
            await self.pod_informer.stop()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())

"""The instances of every function: started (a pod, or a warm-pool runtime handed the code), adopted
after a gateway restart, scaled by the autoscaler, stopped, and reported in each Function's status.

The gateway's call path (`skiff.functions.gateway`) asks the fleet for an instance (`acquire`) and
gives it back (`release`); everything else here runs on the pod watch and a housekeeping tick:

- a call with no free instance waits (up to `queueDepth` waiting, beyond that 429) while instances
  are started up to `maxScale` — from zero this is the cold start;
- every half second, and whenever calls wait, `skiff.functions.autoscale.decide` (stable and
  panic windows over each function's time-weighted concurrency) sets the count; idle instances
  beyond it are stopped, down to `minScale`;
- the warm pool keeps `--warm-pool` generic runtimes in every namespace that has functions;
- a gateway that starts finds the instances and pool runtimes a previous one left running (their
  pods carry the function label) and takes them over after one health check, so a restart neither
  orphans nor doubles them; pods it cannot use (pending, failed, of a deleted function) are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from skiff.api import errors
from skiff.client.cache import Obj
from skiff.client.errors import ServerUnreachable
from skiff.client.informer import Informer
from skiff.client.resources import CONFIGMAPS, PODS
from skiff.client.rest import Client
from skiff.functions.autoscale import ConcurrencyWindow, Decision, Observation, decide, pick_least_loaded
from skiff.functions.crd import CODE_ANNOTATION, FUNCTIONS, LABEL
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
    takeover,
    wait_healthy,
)
from skiff.functions.promtext import GatewayMetrics
from skiff.functions.spec import FunctionSpec
from skiff.functions.status import function_status, with_transition

log = logging.getLogger(__name__)
COLD_START_TIMEOUT = 60.0  # seconds a held call waits for a first instance
ADOPT_TIMEOUT = 3.0  # seconds an instance found at start has to answer its health check


@dataclass(frozen=True)
class FleetConfig:
    image: str  # the generic python runtime image
    node_name: str = ""  # bind instances to this node directly (skips the scheduler)
    warm_pool: int = 1  # ready generic runtimes kept per namespace with functions (0: none)
    gateway_url: str = ""  # the gateway as pods reach it: $SKIFF_GATEWAY in every instance ("" : none)


@dataclass
class FunctionState:
    spec: FunctionSpec
    instances: list[Instance] = field(default_factory=list)
    starting: int = 0
    waiting: int = 0
    active: int = 0  # calls in flight on its instances
    waiters: int = 0  # tasks waiting on `changed` (no notify needed without)
    last_activity: float = field(default_factory=time.monotonic)
    failure: str = ""  # why the last instance failed to start ("" when the last start worked)
    failures: int = 0  # count of start failures, so waiters notice a new one
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    invocations: int = 0
    errors: int = 0
    written: dict[str, Any] = field(default_factory=dict)  # the status last written
    window: ConcurrencyWindow = field(default_factory=lambda: ConcurrencyWindow(time.monotonic()))
    panic_until: float = 0.0
    transition: tuple[str, str] = ("", "")  # the Ready status and when it last changed

    def load_changed(self) -> None:
        self.window.record(time.monotonic(), self.active + self.waiting)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class Fleet:
    def __init__(self, client: Client, config: FleetConfig, metrics: GatewayMetrics) -> None:
        self.client = client
        self.config = config
        self.metrics = metrics
        self.source = runtime_source()
        self.functions: dict[str, FunctionState] = {}
        self.fn_informer = Informer(client, FUNCTIONS)
        self.pod_informer = Informer(client, PODS, label_selector=LABEL)
        self.pod_changed: dict[str, asyncio.Event] = {}
        self.pool: dict[str, list[Instance]] = {}  # namespace → warm runtimes with no function yet
        self.pool_starting: dict[str, int] = {}
        self.session: aiohttp.ClientSession | None = None  # health checks and code loads
        self.tasks: set[asyncio.Task[Any]] = set()

    # --- watching functions and pods ----------------------------------------------------------
    def on_function(self, obj: Obj) -> None:
        spec = FunctionSpec.from_object(obj)
        state = self.functions.get(spec.key)
        if state is None:
            state = self.functions[spec.key] = FunctionState(spec)
            state.window.keep = spec.stable_window
        elif state.spec != spec:
            old, state.spec = state.spec, spec
            state.window.keep = spec.stable_window
            if old.code_digest != spec.code_digest:
                for inst in state.instances:  # new code: new instances serve the next calls
                    inst.dead = True
                self.spawn(self.autoscale(state), f"replace {spec.key}")

    def _on_function_delete(self, obj: Obj) -> None:
        spec = FunctionSpec.from_object(obj)
        state = self.functions.pop(spec.key, None)  # the garbage collector deletes the pods it owns
        for inst in state.instances if state else []:
            inst.conns.close()

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

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_log_failure)

    # --- calls -----------------------------------------------------------------------------------
    async def acquire(self, state: FunctionState) -> Instance:
        """An instance with room for one more call (least in flight first); waits for one to start."""
        s = state.spec
        free = [i for i in state.instances if not i.dead]
        idx = pick_least_loaded([i.in_flight for i in free], s.concurrency)
        if idx is not None:  # the warm path: no lock, no wait
            return self._take(state, free[idx])
        deadline = time.monotonic() + COLD_START_TIMEOUT
        failures = state.failures
        waiting = False
        try:
            async with state.changed:
                while True:
                    free = [i for i in state.instances if not i.dead]
                    idx = pick_least_loaded([i.in_flight for i in free], s.concurrency)
                    if idx is not None:
                        return self._take(state, free[idx])
                    # two starts failed for this call (one may be the node's passing trouble): say why
                    if state.failures - failures >= 2 and not free and state.starting == 0:
                        raise web.HTTPServiceUnavailable(text=f"{state.failure}\n")
                    if not waiting:
                        if state.waiting >= s.queue_depth:
                            raise web.HTTPTooManyRequests(text=f"function {s.key}: {state.waiting} calls queued\n")
                        state.waiting += 1
                        state.load_changed()
                        waiting = True
                    self._grow(state, self._decide(state).desired)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise web.HTTPServiceUnavailable(text=f"function {s.key}: no instance ready in time\n")
                    state.waiters += 1
                    try:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(state.changed.wait(), min(remaining, 1.0))
                    finally:
                        state.waiters -= 1
        finally:
            if waiting:
                state.waiting -= 1
                state.load_changed()

    def _take(self, state: FunctionState, inst: Instance) -> Instance:
        inst.in_flight += 1
        state.active += 1
        state.load_changed()
        return inst

    async def release(self, state: FunctionState, inst: Instance) -> None:
        inst.in_flight -= 1
        state.active -= 1
        state.last_activity = time.monotonic()
        state.load_changed()
        if state.waiters:
            await state.notify()

    # --- scaling ---------------------------------------------------------------------------------
    def _decide(self, state: FunctionState) -> Decision:
        s, now = state.spec, time.monotonic()
        demand = state.active + state.waiting
        obs = Observation(now=now, ready=sum(1 for i in state.instances if not i.dead), demand=demand,
                          stable=state.window.average(now, s.stable_window),
                          panic=state.window.average(now, s.policy.panic_window),
                          idle_for=now - state.last_activity if demand == 0 else 0.0)  # fmt: skip
        decision = decide(obs, s.policy, state.panic_until)
        if bool(decision.panic_until) != bool(state.panic_until):
            how = "entering" if decision.panic_until else "leaving"
            log.info("function %s: %s panic mode (panic window %.1f, stable %.1f, %d ready)", s.key, how,
                     obs.panic, obs.stable, obs.ready)  # fmt: skip
        state.panic_until = decision.panic_until
        return decision

    def _grow(self, state: FunctionState, want: int) -> None:
        s = state.spec
        live = [i for i in state.instances if not i.dead]
        for _ in range(want - len(live) - state.starting):
            state.starting += 1
            cold = not live
            warm = self.pool.get(s.namespace) if poolable(s) else None
            if warm:
                self.spawn(self._claim(state, warm.pop(), cold=cold), f"claim {s.key}")
            else:
                self.spawn(self._start_instance(state, cold=cold), f"start {s.key}")

    async def autoscale(self, state: FunctionState) -> None:
        """Drop dead instances; move to the autoscaler's count (stopping idle instances only)."""
        s = state.spec
        for inst in [i for i in state.instances if i.dead]:
            state.instances.remove(inst)
            if inst.in_flight == 0:
                inst.conns.close()
                await self._delete_pod(s.namespace, inst.pod)
            else:  # calls still running on an old instance: delete once they are done
                self.spawn(self._delete_when_idle(state, inst), f"drain {inst.pod}")
        target = self._decide(state).desired
        for inst in sorted(state.instances, key=lambda i: i.in_flight)[: max(0, len(state.instances) - target)]:
            if inst.in_flight == 0:
                state.instances.remove(inst)
                inst.conns.close()
                log.info("function %s: instance %s stopped (%d wanted, idle for %.0fs)", s.key, inst.pod, target,
                         time.monotonic() - state.last_activity)  # fmt: skip
                await self._delete_pod(s.namespace, inst.pod)
        if target > len(state.instances) + state.starting:
            self._grow(state, target)

    async def _delete_when_idle(self, state: FunctionState, inst: Instance) -> None:
        async with state.changed:
            state.waiters += 1
            try:
                await state.changed.wait_for(lambda: inst.in_flight == 0)
            finally:
                state.waiters -= 1
        inst.conns.close()
        await self._delete_pod(state.spec.namespace, inst.pod)

    # --- starting instances --------------------------------------------------------------------
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
            manifest = pod_manifest(s, image=self.config.image, source=self.source, node_name=self.config.node_name,
                                    gateway_url=self.config.gateway_url)  # fmt: skip
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
            body = load_request(s, files, gateway_url=self.config.gateway_url)
            async with self.session.post(f"{inst.url}/_skiff/load", json=body,
                                         headers={"X-Skiff-Pool-Token": inst.token},
                                         timeout=aiohttp.ClientTimeout(total=30)) as resp:  # fmt: skip
                text = (await resp.text()).strip()
                if resp.status == 409:  # loaded already: claimed by a gateway that stopped before labelling it
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=409, message=text)
                if resp.status != 200:
                    raise InstanceFailed(f"loading the code into {inst.pod} failed: {''.join(text.splitlines()[-1:])}")
            self._ready(
                state, inst, cold=cold, how=f"loaded into a warm runtime in {(time.monotonic() - began) * 1000:.0f} ms"
            )
            owner = {"apiVersion": FUNCTIONS.api_version, "kind": FUNCTIONS.kind, "name": s.name, "uid": s.uid,
                     "controller": True, "blockOwnerDeletion": True}  # fmt: skip
            patch = {"metadata": {"labels": {LABEL: s.name, POOL_LABEL: None}, "ownerReferences": [owner],
                                  "annotations": {CODE_ANNOTATION: s.code_digest}}}  # fmt: skip
            self.spawn(self.client.patch(PODS, inst.pod, patch, namespace=s.namespace), f"label {inst.pod}")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:  # the runtime's fault, not the code's
            log.warning("function %s: warm runtime %s unusable (%s); starting an instance of its own", s.key,
                        inst.pod, e)  # fmt: skip
            self.spawn(self._delete_pod(s.namespace, inst.pod), f"delete {inst.pod}")
            state.starting += 1
            self.spawn(self._start_instance(state, cold=cold), f"start {s.key}")
        except (InstanceFailed, errors.StatusError, ServerUnreachable) as e:
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

    # --- the warm pool ---------------------------------------------------------------------------
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
            for inst in self.pool[ns][self.config.warm_pool :]:  # more than wanted (taken over): stop the rest
                self.pool[ns].remove(inst)
                await self._delete_pod(ns, inst.pod)
            for _ in range(self.config.warm_pool - len(self.pool[ns]) - self.pool_starting.get(ns, 0)):
                self.spawn(self._fill_pool(ns), f"warm pool {ns}")
        for ns in [ns for ns in self.pool if ns not in wanted]:
            for inst in self.pool.pop(ns):
                await self._delete_pod(ns, inst.pod)

    async def _delete_pod(self, namespace: str, name: str) -> None:
        with contextlib.suppress(errors.NotFound):
            await self.client.delete(PODS, name, namespace=namespace, grace_period_seconds=1)

    # --- adopting what a previous gateway left running --------------------------------------------
    async def adopt(self) -> None:
        """Take over the running instances and pool runtimes of a previous gateway; delete the rest."""
        found = await asyncio.gather(*(self._adopt(pod) for pod in self.pod_informer.list()))
        adopted = [name for name in found if name]
        if adopted:
            log.info("took over %d running instance(s): %s", len(adopted), ", ".join(sorted(adopted)))

    async def _adopt(self, pod: Obj) -> str:
        meta, ns = pod["metadata"], pod["metadata"]["namespace"]
        state = self.functions.get(f"{ns}/{(meta.get('labels') or {}).get(LABEL, '')}")
        inst = takeover(pod, state.spec if state is not None else None)
        if inst is not None:
            assert self.session is not None
            try:
                await wait_healthy(self.session, inst.ip, deadline=time.monotonic() + ADOPT_TIMEOUT)
            except TimeoutError:
                inst = None
        if inst is None:
            with contextlib.suppress(errors.StatusError, ServerUnreachable):
                await self._delete_pod(ns, meta["name"])
            return ""
        if inst.token:
            self.pool.setdefault(ns, []).append(inst)
        else:
            assert state is not None
            state.instances.append(inst)
        return inst.pod

    # --- the tick: pool, scale, status -------------------------------------------------------------
    async def housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._tend_pool()
            except (errors.StatusError, ServerUnreachable) as e:
                log.warning("warm pool: %s", e)
            for state in list(self.functions.values()):
                try:
                    await self.autoscale(state)
                    await self._write_status(state)
                except (errors.StatusError, ServerUnreachable) as e:
                    log.warning("function %s: %s", state.spec.key, e)
                self.metrics.instances[(state.spec.namespace, state.spec.name)] = len(state.instances)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def _write_status(self, state: FunctionState) -> None:
        s = state.spec
        status = function_status(replicas=len(state.instances), invocations=state.invocations, errors=state.errors,
                                 failure=state.failure)  # fmt: skip
        if status == state.written:
            return
        body, state.transition = with_transition(status, state.transition)
        try:
            await self.client.patch(FUNCTIONS, s.name, {"status": body}, namespace=s.namespace, subresource="status")
        except errors.NotFound:
            return
        state.written = status

    # --- lifetime --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Watch functions and pods, then take over what a previous gateway left running."""
        self.fn_informer.add_handlers(on_add=self.on_function, on_update=lambda _old, new: self.on_function(new),
                                      on_delete=self._on_function_delete)  # fmt: skip
        self.pod_informer.add_handlers(on_add=self._on_pod, on_update=lambda _old, new: self._on_pod(new),
                                       on_delete=self._instance_gone)  # fmt: skip
        self.fn_informer.start()
        self.pod_informer.start()
        await asyncio.gather(self.fn_informer.wait_synced(), self.pod_informer.wait_synced())
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        await self.adopt()

    async def stop(self) -> None:
        """Stop the background work; instances keep running for the next gateway to take over."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.tasks:  # what the cancelled ones left to do: deleting the pods of starts cut short
            await asyncio.wait(list(self.tasks), timeout=5.0)
        for state in self.functions.values():
            for inst in state.instances:
                inst.conns.close()
        if self.session is not None:
            await self.session.close()
        await self.fn_informer.stop()
        await self.pod_informer.stop()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())

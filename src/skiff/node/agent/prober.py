"""The prober manager: one asyncio worker per running container and probe, as the kubelet's.

`ProbeManager.sync(pod, pod_ip, attempts)` is called by the pod's sync: a worker starts for each
probe of each running container (keyed by container ID and probe kind) and stops once that
container no longer runs; a restarted container is a new ID, so a new worker with fresh results.
A worker probes every `periodSeconds` (the first probe as soon as `initialDelaySeconds` since the
container started have passed), keeps its result in a `Tracker` (thresholds, hold after a liveness
failure) and records `Unhealthy` events for failures, as the kubelet does. Liveness and readiness
wait until the startup probe has succeeded; the startup worker stops then.

When a result changes the pod's worker is woken (`on_change`); the sync then reads
`states()` (containers' `started` and `ready`, hence the pod's ContainersReady and Ready) and
`failed()` (a liveness or startup failure: the container is killed and restarted per restartPolicy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from skiff.client import EventRecorder
from skiff.client.tasks import cancel_and_wait, spawn
from skiff.node.agent import actions
from skiff.node.agent.podstatus import RUNNING, Attempt
from skiff.node.agent.probes import (
    LIVENESS,
    STARTUP,
    ActionError,
    ProbeSpec,
    Result,
    Tracker,
    container_probe_state,
    http_target,
    probe_specs,
    resolve_port,
    tcp_target,
)
from skiff.node.runtime.runtime import Runtime

log = logging.getLogger(__name__)
Obj = dict[str, Any]
RETRIES = 3  # an action that errors (not fails) is tried again at once, as the kubelet's maxProbeRetries
EVENT_BURST, EVENT_REFILL = 25, 300.0  # client-go's event spam filter: 25 events, then one per 5 minutes


class _Worker:
    def __init__(self, manager: ProbeManager, uid: str, attempt: Attempt, container: Obj, spec: ProbeSpec,
                 initial: Result | None) -> None:  # fmt: skip
        self.manager = manager
        self.uid = uid
        self.cid = attempt.id
        self.container = container
        self.started_at = attempt.started_at or time.time()
        self.spec = spec
        self.tracker = Tracker(spec, initial)
        self.poke = asyncio.Event()
        self.event_tokens, self.event_clock = float(EVENT_BURST), time.monotonic()
        name = container.get("name", "")
        self.task = spawn(self._run(), name=f"prober {spec.kind} {uid}/{name}", logger=log)

    async def _run(self) -> None:
        while True:
            wait = self.spec.period
            if not self.tracker.on_hold:
                delay = self.started_at + self.spec.initial_delay - time.time()
                if delay > 0:
                    wait = delay
                elif self.spec.kind == STARTUP and self.tracker.result == Result.SUCCESS:
                    return  # started: the result stays cached while the container runs
                elif self.spec.kind == STARTUP or self.manager.started(self.cid):
                    await self._probe()
            self.poke.clear()
            try:
                async with asyncio.timeout(wait):  # (3.11's wait_for may swallow a cancellation)
                    await self.poke.wait()
            except TimeoutError:
                pass

    async def _probe(self) -> None:
        outcome = await self.manager.run(self)
        for _ in range(RETRIES - 1):
            if outcome.result != Result.UNKNOWN:
                break
            outcome = await self.manager.run(self)
        label = self.spec.label
        if outcome.result == Result.UNKNOWN:
            await self.manager.event(self, "Warning", "Unhealthy", f"{label} probe errored: {outcome.error}")
        elif outcome.result == Result.FAILURE:
            await self.manager.event(self, "Warning", "Unhealthy", f"{label} probe failed: {outcome.output}")
        elif outcome.warning:
            await self.manager.event(self, "Warning", "ProbeWarning", f"{label} probe warning: {outcome.output}")
        if self.tracker.observe(outcome.result):
            log.info("%s probe of container %s (pod %s): %s %s", self.spec.kind, self.container.get("name"), self.uid,
                     self.tracker.result, (outcome.output or outcome.error)[:200])  # fmt: skip
            self.manager.changed(self)


class ProbeManager:
    """Prober workers by container ID and probe kind; results live as long as their container runs."""

    def __init__(self, runtime: Runtime, recorder: EventRecorder,
                 on_change: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.runtime = runtime
        self.recorder = recorder
        self.on_change = on_change
        self._workers: dict[str, dict[str, _Worker]] = {}  # container ID -> kind -> worker
        self._containers: dict[str, set[str]] = {}  # pod uid -> IDs of its containers with workers
        self._pods: dict[str, Obj] = {}  # uid -> the pod as last synced (events name it)
        self._ips: dict[str, str] = {}
        self._specs: dict[str, dict[str, tuple[Obj, list[ProbeSpec]]]] = {}  # uid -> name -> (container, probes)

    # --- called by the pod's sync ---------------------------------------------------------------
    def sync(self, pod: Obj, pod_ip: str, attempts: Iterable[Attempt]) -> None:
        """Workers for the probes of the pod's running containers; stop those of containers gone."""
        uid = pod["metadata"]["uid"]
        self._pods[uid], self._ips[uid] = pod, pod_ip
        specs = self._specs.get(uid)
        if specs is None:
            containers = (pod.get("spec") or {}).get("containers") or []
            specs = self._specs[uid] = {c.get("name", ""): (c, probe_specs(c)) for c in containers}
        running = {a.id: a for a in attempts if a.state == RUNNING and a.id and specs.get(a.name, (None, []))[1]}
        mine = self._containers.setdefault(uid, set())
        for cid in [cid for cid in mine if cid not in running]:
            mine.discard(cid)
            for worker in self._workers.pop(cid, {}).values():
                worker.task.cancel()
        for cid, attempt in running.items():
            if cid in self._workers:
                continue
            container, probes = specs[attempt.name]
            self._workers[cid] = {spec.kind: _Worker(self, uid, attempt, container, spec,
                                                     _initial(pod, attempt, spec.kind)) for spec in probes}  # fmt: skip
            mine.add(cid)

    def states(self, attempts: Iterable[Attempt]) -> dict[str, tuple[bool, bool]]:
        """Container ID -> (started, ready) for the running containers that have probes."""
        out = {}
        for a in attempts:
            workers = self._workers.get(a.id)
            if workers:
                results = {kind: w.tracker.result for kind, w in workers.items()}
                out[a.id] = container_probe_state(a.state == RUNNING, results)
        return out

    def failed(self, container_id: str) -> ProbeSpec | None:
        """The liveness or startup probe the container failed (it is to be killed), if any."""
        workers = self._workers.get(container_id) or {}
        for kind in (LIVENESS, STARTUP):
            worker = workers.get(kind)
            if worker is not None and worker.tracker.result == Result.FAILURE:
                return worker.spec
        return None

    def started(self, container_id: str) -> bool:
        worker = (self._workers.get(container_id) or {}).get(STARTUP)
        return worker is None or worker.tracker.result == Result.SUCCESS

    def others(self, worker: _Worker) -> list[_Worker]:
        return [w for w in (self._workers.get(worker.cid) or {}).values() if w is not worker]

    async def forget(self, uid: str) -> None:
        """The pod is going (or gone): stop its workers, drop its results."""
        tasks = [w.task for cid in self._containers.pop(uid, set()) for w in self._workers.pop(cid, {}).values()]
        self._pods.pop(uid, None)
        self._ips.pop(uid, None)
        self._specs.pop(uid, None)
        await cancel_and_wait(tasks)

    async def stop(self) -> None:
        tasks = [w.task for workers in self._workers.values() for w in workers.values()]
        self._workers.clear()
        self._containers.clear()
        await cancel_and_wait(tasks)

    # --- called by the workers --------------------------------------------------------------------
    def changed(self, worker: _Worker) -> None:
        if worker.spec.kind == STARTUP and worker.tracker.result == Result.SUCCESS:
            for other in self.others(worker):  # started: let the others probe now, not a period later
                other.poke.set()
        if self.on_change is not None:
            self.on_change(worker.uid)

    async def event(self, worker: _Worker, type_: str, reason: str, message: str) -> None:
        """Record an event about the worker's container; a probe failing every second is not an Event write every
        second (the token bucket of client-go's spam filter, per container and probe)."""
        now = time.monotonic()
        worker.event_tokens = min(EVENT_BURST, worker.event_tokens + (now - worker.event_clock) / EVENT_REFILL)
        worker.event_clock = now
        if worker.event_tokens < 1:
            return
        worker.event_tokens -= 1
        pod = self._pods.get(worker.uid)
        if pod is not None:
            path = f"spec.containers{{{worker.container.get('name', '')}}}"
            await self.recorder.record(pod, type=type_, reason=reason, message=message, field_path=path)

    async def run(self, worker: _Worker) -> actions.Outcome:
        """One try of the worker's probe action, bounded by timeoutSeconds."""
        spec, container = worker.spec, worker.container
        ip = self._ips.get(worker.uid, "")
        try:
            if "exec" in spec.action:
                command = (spec.action["exec"] or {}).get("command") or []
                return await actions.run_exec(self.runtime, worker.cid, command, spec.timeout)
            if "httpGet" in spec.action:
                return await actions.http_get(http_target(spec.action["httpGet"], container, ip), spec.timeout)
            if "tcpSocket" in spec.action:
                host, port = tcp_target(spec.action["tcpSocket"], container, ip)
                return await actions.tcp_connect(host, port, spec.timeout)
            if "grpc" in spec.action:
                grpc = spec.action["grpc"] or {}
                port = resolve_port(grpc.get("port"), container)
                return await actions.grpc_health(ip, port, str(grpc.get("service") or ""), spec.timeout)
        except ActionError as exc:
            return actions.Outcome(Result.UNKNOWN, error=str(exc))
        return actions.Outcome(Result.UNKNOWN, error=f"missing probe handler for {container.get('name', '')}")


def _initial(pod: Obj, attempt: Attempt, kind: str) -> Result | None:
    """After an agent restart, a container the pod's status already shows started (ready) stays so."""
    if kind == LIVENESS:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == attempt.name and status.get("containerID") == f"runc://{attempt.id}":
            flag = status.get("started") if kind == STARTUP else status.get("ready")
            return Result.SUCCESS if flag else None
    return None

"""Syncing one pod: the spec it should run against the containers the runtime has (kubelet's SyncPod).

Level-triggered: each call re-reads the runtime's containers of the pod and does the next step —
sandbox, volumes, then the first unfinished init container (one at a time, each to completion),
then every container that should run and does not (restartPolicy and the crash back-off decide),
then the status. A running container whose liveness or startup probe failed is killed and, per
restartPolicy, started again; the probers (`prober.py`) say which containers are started and
ready. A pod with a deletionTimestamp is stopped with its grace period (preStop hooks, SIGTERM,
then SIGKILL), its last status reported (how each container exited; phase Succeeded when all
exited 0, else Failed), its sandbox and volumes removed, and the object deleted with grace 0, as the
kubelet does. A pod that is gone from the API is torn down the same way with a 2 s grace. A pod in a
terminal phase keeps its status and gives its sandbox (and IP) back.
What the pod references in the API (ConfigMaps, Secrets, claims, tokens) is read by `podinputs.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff.api import errors
from skiff.client import Client, EventRecorder, ServerUnreachable, resources
from skiff.node.agent.backoff import Backoff, crash_loop_message
from skiff.node.agent.dnsconfig import PodDNS
from skiff.node.agent.hooks import container_spec, stop_container
from skiff.node.agent.observing import Observer
from skiff.node.agent.podinputs import PodInputs
from skiff.node.agent.podspec import sandbox_config
from skiff.node.agent.podstatus import (
    EXITED,
    KUBELET_CONDITIONS,
    RUNNING,
    Attempt,
    Observation,
    compute_status,
    latest,
)
from skiff.node.agent.podworkers import DONE
from skiff.node.agent.prober import ProbeManager
from skiff.node.agent.starting import PodEnv, Starter, backoff_event
from skiff.node.agent.volumes import VolumeError, pod_dir, setup_volumes, teardown
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.sandbox import SandboxNotFound
from skiff.node.runtime.types import ContainerState, Sandbox

log = logging.getLogger(__name__)
Obj = dict[str, Any]

RELIST = 1.0  # how soon a pod with a container in between states (created, its shim starting) is looked at again
RESYNC = 10.0  # a pod whose containers run is synced on PLEG events (pleg.py), probe changes, or after this
RETRY = 3.0  # after a failure that is not backed off (a missing ConfigMap, a sandbox error)
MIN_GRACE = 2  # the kubelet's minimum grace period for pods that are gone from the API


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeFacts:
    name: str
    host_ip: str
    allocatable: Mapping[str, str]
    state_dir: Path
    tmpfs: bool = True
    dns: PodDNS = field(default_factory=PodDNS)


class PodSyncer:
    """Syncs pods of one node; `sync(uid, pod)` is the pod workers' callback."""

    def __init__(self, client: Client, runtime: Runtime, starter: Starter, node: NodeFacts) -> None:
        self.client = client
        self.runtime = runtime
        self.starter = starter
        self.node = node
        self.recorder: EventRecorder = starter.recorder
        self.backoff = Backoff()
        self.observer = Observer(runtime, node.state_dir)
        self.prober = ProbeManager(runtime, self.recorder)
        self._last_status: dict[str, Obj] = {}
        self._terminal: dict[str, str] = {}
        self.inputs = PodInputs(client, node)

    # --- the sync -----------------------------------------------------------------------------
    async def sync(self, uid: str, pod: Obj | None) -> float | None:
        if pod is None:
            await self.teardown(uid, MIN_GRACE)
            return DONE
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            await self.teardown(uid, max(int(grace), 0), pod)
            try:
                await self.client.delete(resources.PODS, meta["name"], namespace=meta["namespace"],
                                         grace_period_seconds=0, preconditions={"uid": uid})  # fmt: skip
            except (errors.NotFound, errors.Conflict):
                pass
            return DONE
        phase = self._terminal.get(uid) or (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            await self._release(uid)
            return None
        return await self._run(uid, pod)

    async def _run(self, uid: str, pod: Obj) -> float | None:
        spec = pod.get("spec") or {}
        waiting: dict[str, tuple[str, str]] = {}
        left = self._deadline_left(pod)
        if left is not None and left <= 0:
            return await self._deadline_exceeded(pod)
        sandbox = await self._sandbox(pod)
        if isinstance(sandbox, str):
            for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                waiting[c["name"]] = ("ContainerCreating", "")
            await self._report(pod, Observation(waiting=waiting, host_ip=self.node.host_ip))
            return RETRY
        root = pod_dir(self.node.state_dir, uid)
        try:
            ctx = await self.inputs.context(pod, sandbox.ip)
            paths = await setup_volumes(pod, root, ctx, tmpfs=self.node.tmpfs)
        except VolumeError as e:
            await self.recorder.record(pod, type="Warning", reason="FailedMount", message=e.event_message())
            obs = Observation(sandbox_ready=True, pod_ip=sandbox.ip, host_ip=self.node.host_ip)
            await self._report(pod, obs)
            return RETRY
        env = PodEnv(pod=pod, sandbox=sandbox, ctx=ctx, volume_paths=paths, pod_dir=root,
                     credentials=await self.inputs.credentials(pod))  # fmt: skip
        attempts = await self.observer.attempts(uid, _fallback(spec))
        early: asyncio.Task[Obj] | None = None
        if uid not in self._last_status:  # say ContainerCreating (and the IP) before a long image pull, while
            # the containers are made (the round trip is not spent before them); awaited before the final report
            early = asyncio.create_task(self._report(pod, Observation(
                attempts=attempts, sandbox_ready=True, pod_ip=sandbox.ip, host_ip=self.node.host_ip)))  # fmt: skip
        try:
            return await self._containers(env, attempts, left, early)
        finally:
            if early is not None and not early.done():
                await asyncio.gather(early, return_exceptions=True)  # a step failed: do not leave it running

    async def _containers(self, env: PodEnv, attempts: list[Attempt], left: float | None,
                          early: asyncio.Task[Obj] | None) -> float | None:  # fmt: skip
        """The init containers, then the containers, one step each; then the status."""
        pod, uid, spec, sandbox = env.pod, env.pod["metadata"]["uid"], env.pod.get("spec") or {}, env.sandbox
        waiting: dict[str, tuple[str, str]] = {}
        wake: list[float] = []
        restart = spec.get("restartPolicy", "Always")
        terminal = ""
        initialized = True
        for c in spec.get("initContainers") or []:
            mine = latest(attempts, c["name"])
            last = mine[0] if mine else None
            if last is not None and last.state == EXITED and last.exit_code == 0:
                continue
            initialized = False
            if last is not None and last.state == EXITED and restart == "Never":
                terminal = "Failed"
            else:
                await self._step(env, c, last, waiting, wake)
            break
        if initialized:
            for c in spec.get("containers") or []:
                mine = latest(attempts, c["name"])
                last = mine[0] if mine else None
                if last is not None and last.state == EXITED:
                    if restart == "Never" or (restart == "OnFailure" and last.exit_code == 0):
                        continue
                await self._step(env, c, last, waiting, wake)
        attempts = await self.observer.attempts(uid, _fallback(spec))
        await self._gc_attempts(attempts)
        if any(a.state == "created" for a in attempts):
            wake.append(RELIST)
        elif any(a.state == RUNNING for a in attempts):
            wake.append(RESYNC)
        self.prober.sync(pod, sandbox.ip, attempts)
        if early is not None:
            await early
        await self.starter.flush(uid)  # the Created/Started events are in the API before the status
        obs = Observation(attempts=attempts, waiting=waiting, sandbox_ready=True, pod_ip=sandbox.ip,
                          host_ip=self.node.host_ip, terminal=terminal,
                          probes=self.prober.states(attempts))  # fmt: skip
        status = await self._report(pod, obs)
        if status.get("phase") in ("Succeeded", "Failed"):
            self._terminal[uid] = status["phase"]
            await self._release(uid)
            return None
        if left is not None:
            wake.append(left)
        return min(wake) if wake else None

    def _deadline_left(self, pod: Obj) -> float | None:
        """Seconds left of the pod's activeDeadlineSeconds, counted from its startTime (None: no deadline)."""
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        started = (self._last_status.get(pod["metadata"]["uid"]) or pod.get("status") or {}).get("startTime")
        if deadline is None or not started:
            return None
        since = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return float(deadline) - (datetime.now(UTC) - since).total_seconds()

    async def _deadline_exceeded(self, pod: Obj) -> float | None:
        """As the kubelet: the pod fails with DeadlineExceeded and its containers are stopped."""
        uid = pod["metadata"]["uid"]
        message = "Pod was active on the node longer than the specified deadline"
        await self.recorder.record(pod, type="Normal", reason="DeadlineExceeded", message=message)
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        running = [a for a in await self.observer.attempts(uid) if a.state == RUNNING]
        await self.prober.forget(uid)
        await asyncio.gather(*(self._stop(pod, a.name, a.id, grace) for a in running), return_exceptions=True)
        self.observer.invalidate()
        attempts = await self.observer.attempts(uid, _fallback(pod.get("spec") or {}))
        sandbox_ip = (self._last_status.get(uid) or pod.get("status") or {}).get("podIP", "")
        obs = Observation(attempts=attempts, pod_ip=sandbox_ip, host_ip=self.node.host_ip, terminal="Failed",
                          reason="DeadlineExceeded", message=message)  # fmt: skip
        await self._report(pod, obs)
        self._terminal[uid] = "Failed"
        await self._release(uid)
        return None

    async def _step(self, env: PodEnv, c: Obj, last: Attempt | None, waiting: dict[str, tuple[str, str]],
                    wake: list[float]) -> None:  # fmt: skip
        """Bring one container closer to running: start it, or restart it once its back-off allows."""
        name = c["name"]
        meta = env.pod["metadata"]
        key = f"{meta['uid']}/{name}"
        if last is not None and last.state == RUNNING:
            grace = (env.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            message = ""
            if last.image and last.image != c.get("image"):  # the image was changed: restart with the new one
                message = f"Container {name} definition changed, will be restarted"
            elif (probe := self.prober.failed(last.id)) is not None:  # liveness or startup failure: kill it
                restart = (env.pod.get("spec") or {}).get("restartPolicy", "Always") != "Never"
                message = f"Container {name} failed {probe.kind} probe" + (", will be restarted" if restart else "")
                grace = probe.termination_grace if probe.termination_grace is not None else grace
            if message:
                await self.recorder.record(env.pod, type="Normal", reason="Killing", message=message,
                                           field_path=f"spec.containers{{{name}}}")  # fmt: skip
                await stop_container(self.runtime, self.recorder, env.pod, c, last.id, grace)
                self.observer.invalidate()
                wake.append(0.0)
            return
        if last is not None and last.state == "unknown":  # its shim is still starting: look again soon
            wake.append(RELIST)
            return
        if last is not None and last.state == "created":
            try:
                await self.runtime.start(last.id)
            except Exception as e:
                waiting[name] = ("RunContainerError", str(e))
                await self.runtime.remove(last.id)
                self.observer.invalidate()
                self.observer.start_failed(meta["uid"], name, last.attempt, str(e))
            return
        attempt = 0
        if last is not None:  # it exited (or is unknown): restart, after its back-off
            finished = last.finished_at or time.time()
            if self.backoff.in_backoff_since(key, finished):
                delay = self.backoff.get(key)
                msg = crash_loop_message(delay, name, meta["name"], meta["namespace"], meta["uid"])
                waiting[name] = ("CrashLoopBackOff", msg)
                event = backoff_event(delay, name)
                await self.recorder.record(env.pod, type="Warning", reason="BackOff", message=event)
                wake.append(max(self.backoff.remaining(key, finished), 0.1))
                return
            self.backoff.next(key, finished)
            attempt = last.attempt + 1
        failure = await self.starter.start(env, c, attempt, key)
        self.observer.invalidate()
        if failure is None:
            self.observer.started(meta["uid"], name)
        elif failure[0] == "RunContainerError":
            self.observer.start_failed(meta["uid"], name, attempt, failure[1])
        if failure is not None:
            waiting[name] = failure
            remaining = self.starter.pull_backoff.remaining(key, time.time())
            wake.append(remaining if remaining > 0 else RETRY)

    async def _gc_attempts(self, attempts: list[Attempt]) -> None:
        """Keep the newest two attempts of each container (the current one and the one lastState shows)."""
        for name in {a.name for a in attempts}:
            for old in latest(attempts, name)[2:]:
                if old.id:
                    await self.runtime.remove(old.id)
                    self.observer.invalidate()
                attempts.remove(old)

    # --- pieces -------------------------------------------------------------------------------
    async def _sandbox(self, pod: Obj) -> Sandbox | str:
        meta = pod["metadata"]
        uid = meta["uid"]
        try:
            return self.runtime.sandbox(uid)
        except SandboxNotFound:
            pass
        resolver, warnings = self.node.dns.for_pod(pod)
        for reason, message in warnings:
            await self.recorder.record(pod, type="Warning", reason=reason, message=message)
        domain = self.node.dns.cluster_domain
        config = replace(sandbox_config(pod), resolv_conf=resolver.render(), cluster_domain=domain)
        try:
            return await self.runtime.create_sandbox(config)
        except Exception as e:
            log.warning("pod %s/%s: creating its sandbox failed: %s", meta["namespace"], meta["name"], e)
            await self.runtime.remove_sandbox(uid)
            msg = f"Failed to create pod sandbox: {e}"
            await self.recorder.record(pod, type="Warning", reason="FailedCreatePodSandBox", message=msg)
            return msg

    async def _report(self, pod: Obj, obs: Observation) -> Obj:
        """Compute the status and patch it when it changed. The patch is a strategic merge one carrying only
        the conditions the agent owns, so conditions others write (readiness gates) are left alone."""
        uid = pod["metadata"]["uid"]
        current = pod.get("status") or {}
        previous = self._last_status.get(uid)
        base = dict(pod)
        if previous is not None:  # the informer may lag behind what was last written
            mine = {c["type"]: c for c in previous.get("conditions") or [] if c["type"] in KUBELET_CONDITIONS}
            api = current.get("conditions") or []
            merged = [mine.pop(c.get("type"), c) for c in api] + list(mine.values())
            base["status"] = {**current, "conditions": merged, "startTime": previous.get("startTime")}
        status = compute_status(base, obs, now=now_rfc3339())
        if status != previous or _differs(status, current):
            # a condition without a reason or message clears the ones it had (null deletes in a merge patch), as
            # the kubelet's two-way patch does: else a Ready condition keeps its old ContainersNotReady reason
            owned = {**status, "conditions": [{"reason": None, "message": None, **c} for c in status["conditions"]
                                              if c["type"] in KUBELET_CONDITIONS]}  # fmt: skip
            try:
                await self.client.patch(resources.PODS, pod["metadata"]["name"], {"status": owned},
                                        namespace=pod["metadata"]["namespace"], subresource="status",
                                        patch_type="strategic")  # fmt: skip
                self._last_status[uid] = status
            except errors.NotFound:
                pass
        return status

    async def _stop(self, pod: Obj | None, name: str, container_id: str, grace: float) -> None:
        """Stop one container: its preStop hook, then SIGTERM, then SIGKILL after the grace period."""
        spec = container_spec(pod, name) if pod is not None else None
        await stop_container(self.runtime, self.recorder, pod, spec, container_id, grace)

    async def _release(self, uid: str) -> None:
        """A finished pod: its containers are stopped and its sandbox (and IP) returned; the status stays."""
        await self.prober.forget(uid)
        if uid in self.runtime.list_sandboxes():
            for info in await self.runtime.list():
                if info.pod_uid == uid and info.state == ContainerState.RUNNING:
                    await self.runtime.stop(info.id, MIN_GRACE)
            await self.runtime.remove_sandbox(uid)
            self.observer.invalidate()

    async def _report_stopped(self, pod: Obj) -> None:
        """A deleted pod's last status once its containers stopped: how each exited, and a terminal phase
        (Succeeded when all exited 0, else Failed), as the kubelet reports before the pod goes."""
        uid = pod["metadata"]["uid"]
        self.observer.invalidate()
        attempts = await self.observer.attempts(uid, _fallback(pod.get("spec") or {}))
        names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        last = [mine[0] for n in names if (mine := latest(attempts, n))]
        if not last or any(a.state != EXITED for a in last):
            return
        terminal = "Succeeded" if all(a.exit_code == 0 for a in last) else "Failed"
        obs = Observation(attempts=attempts, pod_ip=(pod.get("status") or {}).get("podIP", ""),
                          host_ip=self.node.host_ip, terminal=terminal)  # fmt: skip
        try:
            await self._report(pod, obs)
        except (errors.StatusError, ServerUnreachable) as e:
            log.debug("pod %s: the last status was not reported: %s", uid, e)

    async def teardown(self, uid: str, grace: float, pod: Obj | None = None) -> None:
        """Stop every container of the pod (SIGTERM, SIGKILL after `grace`), remove sandbox and volumes."""
        await self.prober.forget(uid)
        running = [i for i in await self.runtime.list() if i.pod_uid == uid and i.state == ContainerState.RUNNING]
        if pod is not None:
            for info in running:
                message = f"Stopping container {info.name}"
                await self.recorder.record(pod, type="Normal", reason="Killing", message=message)
        await asyncio.gather(*(self._stop(pod, i.name, i.id, grace) for i in running), return_exceptions=True)
        if pod is not None and running:
            await self._report_stopped(pod)
        await self.runtime.remove_sandbox(uid)
        self.observer.invalidate()
        self.observer.forget(uid)
        await teardown(pod_dir(self.node.state_dir, uid))
        self.backoff.forget_prefix(f"{uid}/")
        self.starter.forget(f"{uid}/")
        self._last_status.pop(uid, None)
        self._terminal.pop(uid, None)
        self.inputs.forget(uid)


def _fallback(spec: Obj) -> set[str]:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return {c["name"] for c in containers if c.get("terminationMessagePolicy") == "FallbackToLogsOnError"}


def _differs(status: Obj, current: Obj) -> bool:
    """Whether the API's status lacks what the agent computed; nulls and empty objects do not count (the API
    drops them, so `lastProbeTime: null` would otherwise send a no-op patch for every pod at every relist)."""
    return any(_without_nulls(current.get(k)) != _without_nulls(v) for k, v in status.items())


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {}}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value

"""Container lifecycle hooks (postStart, preStop) and stopping a container the way the kubelet does.

A hook's handler is exec (in the container), httpGet (from the node to the pod IP, as probes) or
sleep. postStart runs right after the container started; if it fails the container is killed,
with a `FailedPostStartHook` event, and it counts as a failed start (`PostStartHookError`), to be
restarted per restartPolicy. `stop_container` is how every stop of a container the pod spec
still describes goes: the preStop hook first, within the grace period (a failure is a
`FailedPreStopHook` event), then SIGTERM with what is left of the grace (at least 2 s, as the
kubelet), then SIGKILL. Failure messages are the kubelet's (`Exec lifecycle hook ([sh -c ...])
for Container "c" in Pod "web_default(uid)" failed - error: ..., message: "..."`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from skiff.client import EventRecorder
from skiff.client.tasks import cancel_and_wait
from skiff.node.agent import actions
from skiff.node.agent.probes import LIFECYCLE_AGENT, ActionError, Result, http_target, pod_ref
from skiff.node.runtime.runtime import Runtime
from skiff.node.runtime.sandbox import SandboxNotFound

log = logging.getLogger(__name__)
Obj = dict[str, Any]

MIN_GRACE = 2.0  # the kubelet's minimumGracePeriodInSeconds after a preStop hook
POST_START_LIMIT = 120.0  # a postStart that hangs holds its pod's worker no longer than this


def container_spec(pod: Obj, name: str) -> Obj | None:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if c.get("name") == name:
            return dict(c)
    return None


def _hook(container: Obj | None, which: str) -> Obj | None:
    handler = ((container or {}).get("lifecycle") or {}).get(which)
    return handler if isinstance(handler, dict) and handler else None


async def run_handler(runtime: Runtime, pod: Obj, container: Obj, container_id: str, handler: Obj,
                      pod_ip: str) -> str | None:  # fmt: skip
    """Run one lifecycle handler to its end; None when it succeeded, else the kubelet's message."""
    name, where = container.get("name", ""), pod_ref(pod)
    if handler.get("exec") is not None:
        command = [str(a) for a in (handler["exec"] or {}).get("command") or []]
        out = await actions.run_exec(runtime, container_id, command, None)
        if out.result == Result.SUCCESS:
            return None
        error = out.error or out.output
        return (
            f"Exec lifecycle hook ([{' '.join(command)}]) for Container {actions.go_quote(name)} in Pod "
            f"{actions.go_quote(where)} failed - error: {error}, message: {actions.go_quote(out.output)}"
        )
    if handler.get("httpGet") is not None:
        action = handler["httpGet"] or {}
        try:
            out = await actions.http_get(http_target(action, container, pod_ip, LIFECYCLE_AGENT), None)
            error = out.output if out.result == Result.FAILURE and out.output.startswith("Get ") else ""
        except ActionError as exc:
            error = str(exc)
        if not error:  # as the kubelet: any HTTP response will do
            return None
        return (
            f"HTTP lifecycle hook ({action.get('path', '')}) for Container {actions.go_quote(name)} in Pod "
            f"{actions.go_quote(where)} failed - error: {error}"
        )
    if handler.get("sleep") is not None:
        await asyncio.sleep(max(float((handler["sleep"] or {}).get("seconds") or 0), 0.0))
        return None
    return f"Cannot run handler: Invalid handler: {handler}"


def _pod_ip(runtime: Runtime, pod: Obj) -> str:
    try:
        return runtime.sandbox(pod["metadata"]["uid"]).ip
    except SandboxNotFound:
        return ""


async def post_start(runtime: Runtime, recorder: EventRecorder, pod: Obj, container: Obj, container_id: str,
                     pod_ip: str, interrupted: asyncio.Event | None = None) -> str | None:  # fmt: skip
    """Run the container's postStart hook; on failure kill the container and return the message. Once
    `interrupted` is set (the pod is being deleted) the hook is abandoned: the pod's teardown stops it all."""
    handler = _hook(container, "postStart")
    if handler is None:
        return None
    call = asyncio.ensure_future(run_handler(runtime, pod, container, container_id, handler, pod_ip))
    stop = asyncio.ensure_future((interrupted or asyncio.Event()).wait())
    try:
        await asyncio.wait([call, stop], timeout=POST_START_LIMIT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([t for t in (call, stop) if not t.done()])
    if call.done() and not call.cancelled():
        failure = call.result()
    elif stop.done() and not stop.cancelled():
        return "the pod is being deleted"
    else:
        failure = (
            f"PostStart lifecycle hook for Container {actions.go_quote(container.get('name', ''))} in Pod "
            f"{actions.go_quote(pod_ref(pod))} did not complete in {POST_START_LIMIT:.0f}s"
        )
    if failure is None:
        return None
    path = f"spec.containers{{{container.get('name', '')}}}"
    await recorder.record(pod, type="Warning", reason="FailedPostStartHook", message=failure, field_path=path)
    await recorder.record(pod, type="Normal", reason="Killing", message="FailedPostStartHook", field_path=path)
    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    await stop_container(runtime, recorder, pod, container, container_id, float(grace))
    return failure


async def stop_container(runtime: Runtime, recorder: EventRecorder, pod: Obj | None, container: Obj | None,
                         container_id: str, grace: float) -> None:  # fmt: skip
    """preStop (if any, within `grace`), then SIGTERM, then SIGKILL once the grace is over."""
    handler = _hook(container, "preStop")
    if handler is not None and pod is not None and container is not None and grace > 0:
        started = time.monotonic()
        try:
            failure = await asyncio.wait_for(
                run_handler(runtime, pod, container, container_id, handler, _pod_ip(runtime, pod)), grace
            )
        except TimeoutError:
            failure = None
            log.info("preStop hook of %s did not complete in %.0fs", container.get("name"), grace)
        if failure is not None:
            path = f"spec.containers{{{container.get('name', '')}}}"
            await recorder.record(pod, type="Warning", reason="FailedPreStopHook", message=failure, field_path=path)
        grace = max(grace - int(time.monotonic() - started), MIN_GRACE)
    await runtime.stop(container_id, grace)

"""What the Job, CronJob, DaemonSet and StatefulSet controllers share: pods from templates, expectations.

Kubernetes keeps these in `pkg/controller/controller_utils.go`: building a
pod from a template with a controller ownerReference, telling whether a pod
is active / ready / available, and *expectations* — a controller that has
just asked for three pods must not, on its next reconcile, see a cache that
does not show them yet and ask for three more. `Expectations` records what
a reconcile asked for; the pod informer's handlers tick it off; `satisfied`
says when the cache can be trusted again (or when the wait timed out).

Plus the small things every status writer needs: meta/v1 times, conditions.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skiff.api import errors
from skiff.api.selectors import LabelSelector, label_selector_from_dict
from skiff.client import Client, Informer, Resource
from skiff.client.cache import index_by_controller_uid

Obj = dict[str, Any]
BY_CONTROLLER = "by-controller-uid"
EXPECTATIONS_TIMEOUT = 300.0  # as Kubernetes' ExpectationsTimeout: a lost watch event does not wedge a controller


# --- time ----------------------------------------------------------------------------------------
def now() -> datetime:
    return datetime.now(UTC)


def format_time(when: datetime) -> str:
    """A meta/v1 Time (seconds, UTC, `Z`)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """A meta/v1 Time or MicroTime as an aware datetime, or None for empty/invalid text."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


# --- objects -------------------------------------------------------------------------------------
def meta(obj: Obj) -> Obj:
    m: Obj = obj.get("metadata") or {}
    return m


def uid_of(obj: Obj) -> str:
    return str(meta(obj).get("uid") or "")


def owner_reference(owner: Obj, resource: Resource) -> Obj:
    """The controller ownerReference to `owner` (blockOwnerDeletion, as Kubernetes' controllers set it)."""
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": meta(owner)["name"],
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: Obj, uid: str) -> bool:
    return any(r.get("controller") and r.get("uid") == uid for r in meta(obj).get("ownerReferences") or [])


def selector_of(obj: Obj) -> LabelSelector:
    """The object's `spec.selector` (a LabelSelector); an empty or missing one selects nothing here."""
    raw = (obj.get("spec") or {}).get("selector")
    if not raw:
        return LabelSelector.match_nothing()
    return label_selector_from_dict(raw)


def pod_from_template(
    template: Obj,
    owner: Obj,
    resource: Resource,
    *,
    name: str | None = None,
    generate_name: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    finalizers: Iterable[str] = (),
) -> Obj:
    """A new Pod from a pod template, controlled by `owner` (Kubernetes' GetPodFromTemplate)."""
    tmeta = template.get("metadata") or {}
    pod_meta: Obj = {
        "namespace": meta(owner)["namespace"],
        "labels": {**(tmeta.get("labels") or {}), **(labels or {})},
        "annotations": {**(tmeta.get("annotations") or {}), **(annotations or {})},
        "ownerReferences": [owner_reference(owner, resource)],
    }
    if name:
        pod_meta["name"] = name
    else:
        pod_meta["generateName"] = generate_name or f"{meta(owner)['name']}-"
    fins = [*(tmeta.get("finalizers") or []), *finalizers]
    if fins:
        pod_meta["finalizers"] = fins
    if not pod_meta["annotations"]:
        del pod_meta["annotations"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(template.get("spec") or {})}


def namespace_terminating(exc: BaseException) -> bool:
    """A create refused because the namespace is being deleted: nothing to retry, nothing to report."""
    return isinstance(exc, errors.Forbidden) and "being terminated" in str(exc)


# --- pods ----------------------------------------------------------------------------------------
def phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_terminal(pod: Obj) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def is_deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """Kubernetes' FilterActivePods: not finished and not being deleted."""
    return not is_terminal(pod) and not is_deleting(pod)


def condition(obj: Obj, type_: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def is_ready(pod: Obj) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def is_running_and_ready(pod: Obj) -> bool:
    return phase(pod) == "Running" and is_ready(pod)


def is_available(pod: Obj, min_ready_seconds: int, at: datetime) -> bool:
    """Ready for at least `min_ready_seconds` (Kubernetes' IsPodAvailable)."""
    c = condition(pod, "Ready")
    if c is None or c.get("status") != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and (at - since).total_seconds() >= min_ready_seconds


def next_available(pods: Iterable[Obj], min_ready_seconds: int, at: datetime | None = None) -> float | None:
    """Seconds until the first Ready-but-not-yet-available pod becomes available (None: no such pod).

    A controller requeues itself then: nothing else happens to a pod at that moment to wake it.
    """
    if min_ready_seconds <= 0:
        return None
    moment = at or now()
    waits = []
    for pod in pods:
        c = condition(pod, "Ready")
        since = parse_time(c.get("lastTransitionTime")) if c is not None and c.get("status") == "True" else None
        if since is not None:
            left = since.timestamp() + min_ready_seconds - moment.timestamp()
            if left > 0:
                waits.append(left)
    return min(waits) + 0.1 if waits else None


def ensure_controller_index(informer: Informer) -> None:
    """Index `informer` by controller uid (shared informers may have the index already)."""
    try:
        informer.add_index(BY_CONTROLLER, index_by_controller_uid)
    except ValueError:
        pass


def owned_pods(pods: Informer, owner: Obj) -> list[Obj]:
    """The pods whose controller is `owner` (by uid), from the cache (read-only)."""
    return pods.by_index(BY_CONTROLLER, uid_of(owner))


# --- conditions ----------------------------------------------------------------------------------
def set_condition(status: Obj, type_: str, cond_status: str, reason: str, message: str, at: datetime) -> bool:
    """Set a condition in `status["conditions"]`; lastTransitionTime moves only when the status does. Changed?"""
    conditions: list[Obj] = status.setdefault("conditions", [])
    stamp = format_time(at)
    for c in conditions:
        if c.get("type") == type_:
            if c.get("status") == cond_status and c.get("reason") == reason and c.get("message") == message:
                return False
            if c.get("status") != cond_status:
                c["lastTransitionTime"] = stamp
            c.update(status=cond_status, reason=reason, message=message, lastProbeTime=stamp)
            return True
    conditions.append(
        {
            "type": type_,
            "status": cond_status,
            "reason": reason,
            "message": message,
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
        }
    )
    return True


def has_condition(status: Obj, type_: str, cond_status: str = "True") -> bool:
    """Whether `status` (an object's status) has condition `type_` with `cond_status`."""
    return any(c.get("type") == type_ and c.get("status") == cond_status for c in status.get("conditions") or [])


# --- expectations --------------------------------------------------------------------------------
@dataclass
class _Expectation:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)  # pod keys (namespace/name) we asked to delete
    since: float = field(default_factory=time.monotonic)


class Expectations:
    """What a controller is waiting to see in its cache after its last writes (Kubernetes' ControllerExpectations)."""

    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._by_key: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._by_key.get(key)
        if exp is None:
            return True
        if (exp.adds <= 0 and not exp.deletes) or self.clock() - exp.since > self.timeout:
            del self._by_key[key]
            return True
        return False

    def expect(self, key: str, *, adds: int = 0, deletes: Iterable[str] = ()) -> None:
        exp = self._by_key.setdefault(key, _Expectation(since=self.clock()))
        exp.adds += adds
        exp.deletes.update(deletes)
        exp.since = self.clock()

    def created(self, key: str, n: int = 1) -> None:
        """Observed (or gave up on) `n` of the expected adds."""
        exp = self._by_key.get(key)
        if exp is not None:
            exp.adds = max(0, exp.adds - n)

    def deleted(self, key: str, pod_key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


# --- own writes ----------------------------------------------------------------------------------
class OwnWrites:
    """Which objects this controller wrote and its cache does not show yet.

    A controller that wrote a status (`succeeded: 2`) and reconciles again before the informer
    delivered that write would act on the old status and do the work twice. After a write,
    `wrote(obj)` remembers the new resourceVersion; the informer's handler calls `seen(obj)` for
    every version it delivers; `pending(key)` is true until the write came back through the watch
    (or `timeout` passed, so a lost event cannot wedge the controller). The watch may deliver the
    write before the write's own response arrives: the versions seen lately are kept for that.
    """

    RECENT = 16  # versions remembered per key

    def __init__(self, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._versions: dict[str, tuple[str, float]] = {}
        self._recent: dict[str, deque[str]] = {}

    def wrote(self, key: str, obj: Obj) -> None:
        rv = str(meta(obj).get("resourceVersion") or "")
        if rv and rv not in self._recent.get(key, ()):
            self._versions[key] = (rv, self.clock())

    def seen(self, key: str, obj: Obj) -> None:
        rv = str(meta(obj).get("resourceVersion") or "")
        self._recent.setdefault(key, deque(maxlen=self.RECENT)).append(rv)
        entry = self._versions.get(key)
        if entry is not None and entry[0] == rv:
            del self._versions[key]

    def pending(self, key: str) -> bool:
        entry = self._versions.get(key)
        if entry is None:
            return False
        if self.clock() - entry[1] > self.timeout:
            del self._versions[key]
            return False
        return True

    def forget(self, key: str) -> None:
        self._versions.pop(key, None)
        self._recent.pop(key, None)


async def write_status(client: Client, resource: Resource, obj: Obj, status: Obj, *, attempts: int = 3) -> Obj:
    """Replace `obj`'s status with `status`; on a Conflict, re-read the object and write it there.

    For statuses computed from other objects (pods, nodes) rather than from the old status, so a
    newer copy of the object is as good a base as the cached one (Kubernetes' DaemonSet and
    StatefulSet controllers retry the same way). Raises the last Conflict; NotFound if it went away.
    """
    current = obj
    for attempt in range(attempts):
        updated = copy.deepcopy(current)
        updated["status"] = status
        try:
            written: Obj = await client.update_status(resource, updated)
            return written
        except errors.Conflict:
            if attempt == attempts - 1:
                raise
            current = await client.get(resource, meta(obj)["name"], namespace=meta(obj).get("namespace"))
            if uid_of(current) != uid_of(obj):
                raise errors.NotFound(f"{resource.plural} {meta(obj)['name']!r} was replaced") from None
    raise AssertionError("unreachable")

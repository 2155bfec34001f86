"""Recording core/v1 Events, the way `kubectl describe` shows what happened to an object.

Like client-go's event recorder: an Event names the involved object, a
reason, a message, a type (Normal or Warning) and the reporting component.
The same event repeated (same object, type, reason, message, source) is not
written again: the existing Event's `count` is raised and `lastTimestamp`
moved, so a crash-looping reconcile leaves one Event with count 57, not 57
Events. Recording never raises: a failure is logged and the caller goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from skiff.api import errors
from skiff.client import resources
from skiff.client.errors import ServerUnreachable

if TYPE_CHECKING:
    from skiff.client.rest import Client

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_CacheKey = tuple[str, str, str, str, str, str, str, str]


def now_rfc3339() -> str:
    """A meta/v1 Time: seconds precision, UTC, `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """A meta/v1 MicroTime: microseconds precision, UTC, `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def object_reference(obj: Obj) -> Obj:
    """An ObjectReference to `obj` (kind, apiVersion, namespace, name, uid, resourceVersion)."""
    meta = obj.get("metadata") or {}
    ref: Obj = {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", "")}
    for field in ("namespace", "name", "uid", "resourceVersion"):
        if meta.get(field):
            ref[field] = meta[field]
    return ref


class EventRecorder:
    """Writes Events for one reporting component; aggregates repeats into `count`."""

    def __init__(self, client: Client, *, component: str, host: str | None = None, cache_size: int = 4096) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.cache_size = cache_size
        self._seen: OrderedDict[_CacheKey, tuple[str, str, int]] = OrderedDict()  # -> (namespace, name, count)

    async def record(self, involved: Obj, *, type: str, reason: str, message: str, field_path: str = "") -> Obj | None:
        """Record one occurrence; the Event as stored, or None if it could not be written. `field_path` names
        a part of the object (the kubelet's `spec.containers{name}`)."""
        ref = object_reference(involved)
        if field_path:
            ref["fieldPath"] = field_path
        namespace = ref.get("namespace") or "default"
        key: _CacheKey = (
            self.component, self.host or "", ref.get("kind", ""), namespace, ref.get("name", ""),
            ref.get("uid", ""), type, reason + "\0" + message + "\0" + field_path,
        )  # fmt: skip
        try:
            seen = self._seen.get(key)
            if seen is not None:
                self._seen.move_to_end(key)
                updated = await self._bump(key, seen)
                if updated is not None:
                    return updated
            return await self._create(key, ref, namespace, type=type, reason=reason, message=message)
        except (errors.StatusError, ServerUnreachable) as exc:
            log.warning("could not record event %s %s on %s/%s: %s", type, reason, namespace, ref.get("name"), exc)
            return None

    async def _bump(self, key: _CacheKey, seen: tuple[str, str, int]) -> Obj | None:
        namespace, name, count = seen
        patch = {"count": count + 1, "lastTimestamp": now_rfc3339()}
        try:
            event = await self.client.patch(resources.EVENTS, name, patch, namespace=namespace)
        except errors.NotFound:
            return None  # expired or deleted: write a fresh Event
        self._seen[key] = (namespace, name, int(event.get("count") or count + 1))
        return event

    async def _create(self, key: _CacheKey, ref: Obj, namespace: str, *, type: str, reason: str, message: str) -> Obj:
        stamp = now_rfc3339()
        name = f"{ref.get('name') or 'event'}.{time.time_ns():x}{uuid.uuid4().hex[:4]}"
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "eventTime": None,
            "reportingComponent": self.component,
            "reportingInstance": self.host or "",
        }
        created = await self.client.create(resources.EVENTS, event, namespace=namespace)
        self._seen[key] = (namespace, name, 1)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)
        return created

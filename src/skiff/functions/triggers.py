"""Triggers other than HTTP: a schedule, and cluster events.

- `{"type": "cron", "schedule": "*/5 * * * *"}` (five fields, UTC, parsed by `skiff.api.cron`; also
  `@every 30s` for intervals under a minute) calls the function with
  `{"type": "cron", "schedule": ..., "time": <RFC 3339>}`.
- `{"type": "event", "kind": "ConfigMap", "labelSelector": "app=x"}` watches objects of that built-in
  kind in the function's namespace and calls the function for every change after the first list,
  with the watch event `{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}`.

- `{"type": "topic", "topic": "orders"}`: each message published to the topic in the function's
  namespace (see `skiff.functions.topics`), its body as the event; retried until accepted.

Each call goes through the gateway (queued, scaled, metered like any other) and is retried with
backoff while it fails (5xx, 429): at-least-once delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from skiff.api import cron
from skiff.api.durations import parse_duration
from skiff.client.informer import Informer
from skiff.client.resources import BUILTINS, Resource
from skiff.functions.topics import Delivery

if TYPE_CHECKING:
    from skiff.functions.fleet import FunctionState
    from skiff.functions.gateway import Gateway

log = logging.getLogger(__name__)
ATTEMPTS = 5
_EVERY = re.compile(r"^@every\s+(\S+)$")


def next_fire(schedule: str, after: float) -> float:
    """Unix time of the schedule's first run after `after` (raises ValueError for a bad schedule)."""
    m = _EVERY.match(schedule.strip())
    if m:
        interval = parse_duration(m.group(1))
        if interval <= 0:
            raise ValueError(f"@every needs a positive duration: {schedule!r}")
        return after + interval
    nxt = cron.parse(schedule).next(datetime.fromtimestamp(after, UTC))
    if nxt is None:
        raise ValueError(f"schedule {schedule!r} never runs")
    return nxt.timestamp()


def resource_of_kind(kind: str) -> Resource | None:
    return next((r for r in BUILTINS if r.kind == kind), None)


@dataclass
class _Cron:
    schedule: str
    next_at: float


class Triggers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.crons: dict[tuple[str, str], _Cron] = {}  # (function key, schedule)
        self.watches: dict[tuple[str, str, str], Informer | None] = {}  # (function, kind, selector); None: no kind

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._sync()
                now = time.time()
                for (key, schedule), entry in self.crons.items():
                    if now >= entry.next_at:
                        entry.next_at = next_fire(schedule, now)
                        event = {"type": "cron", "schedule": schedule, "time": _rfc3339(now)}
                        self._fire(key, event, "cron")
                for delivery in await self.gateway.topics.due():
                    self.gateway.topics.in_flight.add(delivery.id)
                    self.gateway.spawn(self._deliver_message(delivery), f"topic {delivery.topic} #{delivery.id}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        finally:
            for informer in self.watches.values():
                if informer is not None:
                    await informer.stop()

    def _sync(self) -> None:
        crons: set[tuple[str, str]] = set()
        watches: set[tuple[str, str, str]] = set()
        for key, state in self.gateway.functions.items():
            for t in state.spec.triggers:
                if t.get("type") == "cron" and t.get("schedule"):
                    crons.add((key, str(t["schedule"])))
                elif t.get("type") == "event" and t.get("kind"):
                    watches.add((key, str(t["kind"]), str(t.get("labelSelector") or "")))
        for ck in crons - set(self.crons):
            try:
                self.crons[ck] = _Cron(ck[1], next_fire(ck[1], time.time()))
            except (ValueError, cron.CronError) as e:
                log.warning("function %s: cron trigger %r: %s", ck[0], ck[1], e)
        for ck in set(self.crons) - crons:
            del self.crons[ck]
        for wk in watches - set(self.watches):
            self._watch(wk)
        for wk in set(self.watches) - watches:
            informer = self.watches.pop(wk)
            if informer is not None:
                self.gateway.spawn(informer.stop(), f"stop watch {wk}")

    def _watch(self, wk: tuple[str, str, str]) -> None:
        key, kind, selector = wk
        resource = resource_of_kind(kind)
        if resource is None:
            log.warning("function %s: event trigger: no built-in kind %r", key, kind)
            self.watches[wk] = None
            return
        namespace = key.split("/", 1)[0] if resource.namespaced else None
        informer = Informer(self.gateway.client, resource, namespace=namespace, label_selector=selector or None)

        def handler(kind_: str) -> Callable[..., None]:
            def on(*objs: Any) -> None:
                if not informer.has_synced:  # the first list: the state before the trigger existed
                    return
                if kind_ == "MODIFIED" and objs[0] is objs[-1]:
                    return  # a resync, not a change
                self._fire(key, {"type": kind_, "object": objs[-1]}, "event")

            return on

        informer.add_handlers(on_add=handler("ADDED"), on_update=handler("MODIFIED"), on_delete=handler("DELETED"))
        informer.start()
        self.watches[wk] = informer

    def _fire(self, key: str, event: dict[str, Any], kind: str) -> None:
        self.gateway.spawn(self._deliver(key, event, kind), f"{kind} trigger {key}")

    async def _deliver(self, key: str, event: dict[str, Any], kind: str) -> None:
        body = json.dumps(event).encode()
        delay = 0.5
        for attempt in range(1, ATTEMPTS + 1):
            state: FunctionState | None = self.gateway.functions.get(key)
            if state is None:
                return
            headers = {"Content-Type": "application/json", "X-Skiff-Trigger": kind}
            try:
                resp = await self.gateway.invoke(state, "POST", "/", headers, body)
                status = resp.status
            except web.HTTPException as e:
                status = e.status
            if status < 500 and status != 429:
                return
            log.warning("function %s: %s trigger call %d/%d answered %d", key, kind, attempt, ATTEMPTS, status)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _deliver_message(self, delivery: Delivery) -> None:
        topics = self.gateway.topics
        try:
            state = self.gateway.functions.get(f"{delivery.namespace}/{delivery.function}")
            status = 404
            if state is not None:
                headers = {"Content-Type": "application/json", "X-Skiff-Trigger": "topic",
                           "X-Skiff-Topic": delivery.topic, "X-Skiff-Attempt": str(delivery.attempts + 1)}  # fmt: skip
                try:
                    status = (await self.gateway.invoke(state, "POST", "/", headers, delivery.body)).status
                except web.HTTPException as e:
                    status = e.status
            if status < 500 and status not in (404, 429):
                await topics.ack(delivery)
            else:
                log.warning("topic %s: delivery #%d to %s answered %d; retrying", delivery.topic, delivery.id,
                            delivery.function, status)  # fmt: skip
                await topics.retry(delivery)
        finally:
            topics.in_flight.discard(delivery.id)


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

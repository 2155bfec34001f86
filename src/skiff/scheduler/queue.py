"""The scheduling queue: which pending pod to try next, and when to try a failed one again.

Kubernetes' `PriorityQueue`, in three parts:

- **active**: pods ready to be tried, highest `spec.priority` first, then the
  longest waiting (the PrioritySort plugin's order);
- **backoff**: pods that failed and wait out a per-pod exponential backoff
  (1 s, 2 s, 4 s… capped at 10 s by default) before going back to active, so a
  pod that cannot fit does not spin;
- **unschedulable**: pods no node could take. Trying them again is pointless
  until the cluster changes, so they wait here until an event that could help
  them happens — a node added or changed, a pod deleted — as declared by the
  plugins that rejected them (`events_to_register`); then they move to backoff
  (if still backing off) or active. After five minutes they are retried anyway,
  in case an event was missed.

The queue never hands out a pod twice at once: a popped pod is "in flight"
until the scheduler calls `done`; updates that arrive meanwhile replace what
will be re-queued.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from skiff.client.ratelimit import Clock, loop_clock
from skiff.scheduler.framework import EVERYTHING, ClusterEvent
from skiff.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)

DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 10.0
DEFAULT_MAX_UNSCHEDULABLE = 300.0  # podMaxInUnschedulablePodsDuration


@dataclass(eq=False)
class QueuedPodInfo:
    """A pod in the queue, with its scheduling history."""

    pod: PodInfo
    timestamp: float  # when it (re-)entered the queue: the tie-breaker after priority
    attempts: int = 0
    initial_attempt: float | None = None  # when it was first popped
    unschedulable_plugins: set[str] = field(default_factory=set)  # who rejected it last time
    pending_update: bool = False  # changed while in flight: retry without waiting for an event
    _seq: int = 0

    @property
    def key(self) -> str:
        return self.pod.key


class SchedulingQueue:
    def __init__(
        self,
        *,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_unschedulable: float = DEFAULT_MAX_UNSCHEDULABLE,
        plugin_events: Mapping[str, tuple[ClusterEvent, ...]] | None = None,
        clock: Clock = loop_clock,
    ) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable = max_unschedulable
        self.plugin_events: dict[str, tuple[ClusterEvent, ...]] = dict(plugin_events or {})
        self.clock = clock
        self._seq = itertools.count()
        self._active: list[tuple[int, float, int, QueuedPodInfo]] = []
        self._active_items: dict[str, QueuedPodInfo] = {}
        self._backoff: list[tuple[float, int, QueuedPodInfo]] = []
        self._backoff_items: dict[str, QueuedPodInfo] = {}
        self._unschedulable: dict[str, tuple[QueuedPodInfo, float]] = {}  # -> (info, since)
        self._in_flight: dict[str, QueuedPodInfo] = {}
        self._deleted_in_flight: set[str] = set()
        self._nonempty = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._closed = False
        self.scheduling_cycle = 0

    # --- sizes (for tests, logs and metrics) ----------------------------------------------------
    def __len__(self) -> int:
        return len(self._active_items) + len(self._backoff_items) + len(self._unschedulable)

    @property
    def num_active(self) -> int:
        return len(self._active_items)

    @property
    def num_backoff(self) -> int:
        return len(self._backoff_items)

    @property
    def num_unschedulable(self) -> int:
        return len(self._unschedulable)

    def where(self, key: str) -> str | None:
        """ "active", "backoff", "unschedulable", "in-flight" or None (for tests and debugging)."""
        if key in self._active_items:
            return "active"
        if key in self._backoff_items:
            return "backoff"
        if key in self._unschedulable:
            return "unschedulable"
        if key in self._in_flight:
            return "in-flight"
        return None

    # --- backoff --------------------------------------------------------------------------------
    def backoff_duration(self, qpi: QueuedPodInfo) -> float:
        """initial x 2^(attempts-1), capped (Kubernetes `calculateBackoffDuration`)."""
        if qpi.attempts <= 1:
            return min(self.initial_backoff, self.max_backoff)
        return min(self.initial_backoff * float(2 ** min(qpi.attempts - 1, 30)), self.max_backoff)

    def backoff_expiry(self, qpi: QueuedPodInfo) -> float:
        return qpi.timestamp + self.backoff_duration(qpi)

    def is_backing_off(self, qpi: QueuedPodInfo) -> bool:
        return qpi.attempts > 0 and self.backoff_expiry(qpi) > self.clock()

    # --- adding -----------------------------------------------------------------------------------
    def add(self, pod: PodInfo) -> None:
        """A new pending pod (or one seen again): try it soon."""
        if self._closed:
            return
        if self._replace(pod):
            return
        self._push_active(QueuedPodInfo(pod, self.clock()))

    def update(self, pod: PodInfo) -> None:
        """A pending pod changed. If it was parked as unschedulable and its spec changed, retry it."""
        key = pod.key
        parked = self._unschedulable.get(key)
        if parked is not None:
            qpi, _since = parked
            changed = _pod_changed(qpi.pod, pod)
            qpi.pod = pod
            if changed:
                del self._unschedulable[key]
                self._requeue(qpi)
            return
        if not self._replace(pod):
            self.add(pod)

    def _replace(self, pod: PodInfo) -> bool:
        key = pod.key
        qpi = self._active_items.get(key)
        if qpi is not None:
            if qpi.pod.priority != pod.priority:
                qpi.pod = pod
                self._push_active(qpi)  # re-sort; the old heap entry goes stale
            else:
                qpi.pod = pod
            return True
        qpi = self._backoff_items.get(key)
        if qpi is not None:
            qpi.pod = pod
            return True
        parked = self._unschedulable.get(key)
        if parked is not None:
            parked[0].pod = pod
            return True
        qpi = self._in_flight.get(key)
        if qpi is not None:
            if _pod_changed(qpi.pod, pod):
                qpi.pending_update = True
            qpi.pod = pod
            return True
        return False

    def delete(self, key: str) -> None:
        """The pod is gone or no longer pending (deleted, bound, or handed to another scheduler)."""
        self._active_items.pop(key, None)  # heap entries go stale and are skipped
        self._backoff_items.pop(key, None)
        self._unschedulable.pop(key, None)
        if key in self._in_flight:
            self._deleted_in_flight.add(key)

    def _push_active(self, qpi: QueuedPodInfo) -> None:
        qpi._seq = next(self._seq)
        self._active_items[qpi.key] = qpi
        heapq.heappush(self._active, (-qpi.pod.priority, qpi.timestamp, qpi._seq, qpi))
        self._nonempty.set()

    def _push_backoff(self, qpi: QueuedPodInfo) -> None:
        qpi._seq = next(self._seq)
        self._backoff_items[qpi.key] = qpi
        heapq.heappush(self._backoff, (self.backoff_expiry(qpi), qpi._seq, qpi))
        self._timers_changed.set()

    def _requeue(self, qpi: QueuedPodInfo) -> None:
        if self.is_backing_off(qpi):
            self._push_backoff(qpi)
        else:
            self._push_active(qpi)

    # --- popping ----------------------------------------------------------------------------------
    async def pop(self) -> QueuedPodInfo | None:
        """The next pod to schedule (waits for one); None once the queue is closed."""
        while True:
            if self._closed:
                return None
            qpi = self.pop_nowait()
            if qpi is not None:
                return qpi
            self._nonempty.clear()
            await self._nonempty.wait()

    def pop_nowait(self) -> QueuedPodInfo | None:
        while self._active:
            _prio, _ts, seq, qpi = heapq.heappop(self._active)
            current = self._active_items.get(qpi.key)
            if current is not qpi or qpi._seq != seq:
                continue  # stale: deleted, re-sorted, or moved
            del self._active_items[qpi.key]
            self.scheduling_cycle += 1
            qpi.attempts += 1
            if qpi.initial_attempt is None:
                qpi.initial_attempt = self.clock()
            qpi.pending_update = False
            self._in_flight[qpi.key] = qpi
            return qpi
        return None

    def done(self, key: str) -> None:
        """The scheduler finished with a popped pod (bound, or re-queued by the calls below)."""
        self._in_flight.pop(key, None)
        self._deleted_in_flight.discard(key)

    def add_unschedulable(self, qpi: QueuedPodInfo, *, rejected_by: set[str]) -> None:
        """The pod fit nowhere: park it until an event may help (or back off if it changed meanwhile)."""
        if not self._take_back(qpi):
            return
        qpi.unschedulable_plugins = set(rejected_by)
        qpi.timestamp = self.clock()
        if qpi.pending_update or not rejected_by:
            # changed while being tried, or rejected by no plugin in particular (no nodes at all):
            # retry after the backoff rather than wait for an event
            self._push_backoff(qpi)
            return
        self._unschedulable[qpi.key] = (qpi, self.clock())
        self._timers_changed.set()

    def add_backoff(self, qpi: QueuedPodInfo) -> None:
        """Something failed that was not the pod's fault (an API error, a lost binding): retry after backoff."""
        if not self._take_back(qpi):
            return
        qpi.unschedulable_plugins = set()
        qpi.timestamp = self.clock()
        self._push_backoff(qpi)

    def _take_back(self, qpi: QueuedPodInfo) -> bool:
        key = qpi.key
        deleted = key in self._deleted_in_flight
        self.done(key)
        if deleted or self._closed:
            return False
        return key not in self._active_items and key not in self._backoff_items and key not in self._unschedulable

    # --- cluster events ---------------------------------------------------------------------------
    def move_all_to_active_or_backoff(
        self, event: ClusterEvent, pre_check: Callable[[PodInfo], bool] | None = None
    ) -> int:
        """Retry every parked pod that `event` may help; how many moved."""
        if not self._unschedulable:
            return 0
        moved = []
        for key, (qpi, _since) in self._unschedulable.items():
            if not self._event_may_help(qpi, event):
                continue
            if pre_check is not None and not pre_check(qpi.pod):
                continue
            moved.append(key)
        for key in moved:
            qpi, _since = self._unschedulable.pop(key)
            self._requeue(qpi)
        if moved:
            log.debug("%s: %d unschedulable pods moved", event.label or event.resource, len(moved))
        return len(moved)

    def _event_may_help(self, qpi: QueuedPodInfo, event: ClusterEvent) -> bool:
        if event is EVERYTHING or not qpi.unschedulable_plugins:
            return True
        for plugin in qpi.unschedulable_plugins:
            registered = self.plugin_events.get(plugin)
            if registered is None:
                return True  # unknown plugin: be safe
            if any(event.matches(r) for r in registered):
                return True
        return False

    def flush(self) -> float | None:
        """Move expired backoffs to active and long-parked pods back; seconds until the next timer."""
        now = self.clock()
        while self._backoff:
            expiry, seq, qpi = self._backoff[0]
            if self._backoff_items.get(qpi.key) is not qpi or qpi._seq != seq:
                heapq.heappop(self._backoff)
                continue
            if expiry > now:
                break
            heapq.heappop(self._backoff)
            del self._backoff_items[qpi.key]
            self._push_active(qpi)
        # parked pods are kept in the order they were parked (dict order), so the oldest come first
        while self._unschedulable:
            key, (qpi, since) = next(iter(self._unschedulable.items()))
            if now - since < self.max_unschedulable:
                break
            del self._unschedulable[key]
            self._requeue(qpi)
        deadlines = []
        if self._backoff:
            deadlines.append(self._backoff[0][0])
        if self._unschedulable:
            _qpi, oldest = next(iter(self._unschedulable.values()))
            deadlines.append(oldest + self.max_unschedulable)
        return max(0.0, min(deadlines) - now) if deadlines else None

    async def run(self) -> None:
        """Keep the timers going (backoff expiry, the unschedulable timeout) until cancelled or closed."""
        while not self._closed:
            delay = self.flush()
            self._timers_changed.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._timers_changed.wait()
            except TimeoutError:
                pass

    def close(self) -> None:
        self._closed = True
        self._nonempty.set()
        self._timers_changed.set()


def _pod_changed(old: PodInfo, new: PodInfo) -> bool:
    """A change that could make the pod fit now (Kubernetes `isPodUpdated`: not status, not resourceVersion)."""
    if old.pod is new.pod:
        return False
    a, b = old.pod.get("metadata") or {}, new.pod.get("metadata") or {}
    return old.spec != new.spec or a.get("labels") != b.get("labels") or a.get("annotations") != b.get("annotations")

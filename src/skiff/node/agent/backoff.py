"""Per-container restart back-off, as the kubelet's `flowcontrol.Backoff`: 10 s doubling to 5 min.

A container that exits is restarted at once the first time; after that the kubelet waits for its
back-off since the container finished (`CrashLoopBackOff`), doubling it at every restart up to
`maximum`. An entry not touched for twice the maximum starts over. The same mechanism spaces
image pulls that failed (`ImagePullBackOff`). Time comes from `clock` so tests can move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

INITIAL = 10.0
MAXIMUM = 300.0


@dataclass
class _Entry:
    backoff: float
    last_update: float


class Backoff:
    """Delays by key (`<pod uid>/<container>`); times are seconds on `clock`'s scale."""

    def __init__(
        self, initial: float = INITIAL, maximum: float = MAXIMUM, clock: Callable[[], float] = time.time
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def get(self, key: str) -> float:
        """The current delay of `key` (0 if it has none)."""
        entry = self._entries.get(key)
        return entry.backoff if entry else 0.0

    def _expired(self, entry: _Entry, at: float) -> bool:
        return at - entry.last_update > 2 * self.maximum

    def in_backoff_since(self, key: str, event_time: float) -> bool:
        """Whether `key` must still wait, its delay counted from `event_time` (when it finished)."""
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or self._expired(entry, now):
            return False
        return now - event_time < entry.backoff

    def remaining(self, key: str, event_time: float) -> float:
        """Seconds left before `key` may be retried (0 when it may now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, event_time + entry.backoff - self.clock())

    def next(self, key: str, event_time: float) -> None:
        """Record a retry at `event_time`: the first (or after a long quiet) sets `initial`, later ones double."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            self._entries[key] = _Entry(self.initial, event_time)
        else:
            entry.backoff = min(entry.backoff * 2, self.maximum)
            entry.last_update = event_time

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        """Drop every key of a pod (`<uid>/`), when the pod is gone."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


def go_duration(seconds: float) -> str:
    """A duration as Go's `time.Duration.String()` writes whole seconds: `10s`, `1m20s`, `5m0s`."""
    total = int(seconds)
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def crash_loop_message(delay: float, container: str, pod_name: str, namespace: str, uid: str) -> str:
    """Kubernetes' CrashLoopBackOff message (`format.Pod` is `name_namespace(uid)`)."""
    return f"back-off {go_duration(delay)} restarting failed container={container} pod={pod_name}_{namespace}({uid})"

"""What nodes last reported, kept in memory for the metrics API (see `skiff.apiserver.metrics`).

Metrics are ephemeral, as in metrics-server: the latest report of each node
and of the pods it runs, served until `EXPIRY_WINDOWS` windows after it
arrived, never written to storage. Reports are validated here, whole, before
anything changes: a bad quantity or timestamp is a 400 naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skiff.api import errors, quantity
from skiff.api.durations import parse_duration
from skiff.api.humanize import parse_time
from skiff.apiserver.objects import now_rfc3339

DEFAULT_WINDOW = 10.0
EXPIRY_WINDOWS = 3  # a report is served for this many windows after it arrived
MIN_WINDOW, MAX_WINDOW = 1.0, 3600.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class Sample:
    """One reported usage: when it was sampled, over which window, until when it is served."""

    timestamp: str
    window: float
    expires: float  # on the store's monotonic clock


@dataclass(frozen=True)
class NodeSample(Sample):
    usage: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodSample(Sample):
    node: str = ""
    uid: str = ""
    containers: tuple[tuple[str, dict[str, str]], ...] = ()


class MetricsStore:
    """The latest report of each node and of the pods it runs; expired entries are dropped on access."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._nodes: dict[str, NodeSample] = {}
        self._pods: dict[tuple[str, str], PodSample] = {}
        self._pods_of_node: dict[str, set[tuple[str, str]]] = {}

    def report(self, node: str, body: Any) -> None:
        """Replace `node`'s report with `body` (validated first: nothing changes on a bad report)."""
        node_sample, pods = parse_report(node, body, now=self.clock())
        self._drop_node(node)
        self._nodes[node] = node_sample
        keys = set()
        for key, sample in pods.items():
            previous = self._pods.get(key)
            if previous is not None and previous.node != node:
                self._pods_of_node.get(previous.node, set()).discard(key)
            self._pods[key] = sample
            keys.add(key)
        self._pods_of_node[node] = keys

    def node(self, name: str) -> NodeSample | None:
        sample = self._nodes.get(name)
        if sample is not None and sample.expires <= self.clock():
            self._drop_node(name)
            return None
        return sample

    def pod(self, namespace: str, name: str) -> PodSample | None:
        sample = self._pods.get((namespace, name))
        if sample is None:
            return None
        if sample.expires <= self.clock():
            self._pods.pop((namespace, name), None)
            self._pods_of_node.get(sample.node, set()).discard((namespace, name))
            return None
        return sample

    def expire(self) -> None:
        """Forget every node (and its pods) whose report is past its time."""
        now = self.clock()
        for name in [n for n, s in self._nodes.items() if s.expires <= now]:
            self._drop_node(name)

    def _drop_node(self, node: str) -> None:
        self._nodes.pop(node, None)
        for key in self._pods_of_node.pop(node, set()):
            sample = self._pods.get(key)
            if sample is not None and sample.node == node:
                del self._pods[key]


def parse_report(node: str, body: Any, *, now: float) -> tuple[NodeSample, dict[tuple[str, str], PodSample]]:
    """Validate a node's report; its node sample and pod samples, or BadRequest naming the bad field."""
    if not isinstance(body, dict):
        raise errors.BadRequest("a metrics report must be a JSON object")
    window = _window(body.get("window"))
    stamp = body.get("timestamp")
    if stamp is None:
        stamp = now_rfc3339()
    elif not isinstance(stamp, str) or parse_time(stamp) is None:
        raise errors.BadRequest(f"timestamp: Invalid value: {stamp!r}: must be an RFC 3339 time")
    expires = now + EXPIRY_WINDOWS * window
    node_sample = NodeSample(stamp, window, expires, usage=_usage(body.get("usage"), "usage"))
    pods: dict[tuple[str, str], PodSample] = {}
    raw_pods = body.get("pods") or []
    if not isinstance(raw_pods, list):
        raise errors.BadRequest("pods: must be a list")
    for i, raw in enumerate(raw_pods):
        where = f"pods[{i}]"
        if not isinstance(raw, dict):
            raise errors.BadRequest(f"{where}: must be an object")
        namespace, name = raw.get("namespace"), raw.get("name")
        if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
            raise errors.BadRequest(f"{where}: namespace and name are required")
        containers = raw.get("containers") or []
        if not isinstance(containers, list):
            raise errors.BadRequest(f"{where}.containers: must be a list")
        parsed: list[tuple[str, dict[str, str]]] = []
        for j, c in enumerate(containers):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
                raise errors.BadRequest(f"{where}.containers[{j}]: an object with a name is required")
            parsed.append((c["name"], _usage(c.get("usage"), f"{where}.containers[{j}].usage")))
        pod_stamp = raw.get("timestamp", stamp)
        if not isinstance(pod_stamp, str) or parse_time(pod_stamp) is None:
            raise errors.BadRequest(f"{where}.timestamp: Invalid value: {pod_stamp!r}: must be an RFC 3339 time")
        uid = raw.get("uid") or ""
        pods[(namespace, name)] = PodSample(
            pod_stamp, window, expires, node=node, uid=str(uid), containers=tuple(parsed)
        )
    return node_sample, pods


def _window(value: Any) -> float:
    if value is None:
        return DEFAULT_WINDOW
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise errors.BadRequest(f'window: Invalid value: {value!r}: must be a duration such as "10s"') from None
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise errors.BadRequest(f"window: Invalid value: {value!r}: must be between 1s and 1h")
    return seconds


def _usage(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BadRequest(f"{where}: must be an object of resource name to quantity")
    usage: dict[str, str] = {}
    for resource, amount in value.items():
        try:
            parsed = quantity.parse(amount)
        except (quantity.QuantityError, TypeError) as exc:
            raise errors.BadRequest(f"{where}.{resource}: Invalid value: {amount!r}: {exc}") from None
        if parsed < 0:
            raise errors.BadRequest(f"{where}.{resource}: Invalid value: {amount!r}: must not be negative")
        usage[str(resource)] = str(amount)
    return usage

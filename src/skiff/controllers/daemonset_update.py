"""How a DaemonSet's pods move to a new template: the RollingUpdate decisions, node by node.

Each distinct template is a ControllerRevision (`skiff.controllers.history`)
and pods carry its hash in `controller-revision-hash`. RollingUpdate deletes
old pods while at most `maxUnavailable` nodes lack an available up-to-date
pod (the controller's manage step then creates the new one); OnDelete waits
for the user to delete them. With `maxSurge`, up to that many nodes run a
new pod beside the old one, which is deleted once the new one is available.

Pure: the functions here say which pods to delete and on which nodes to
create; the controller (`daemonset`) makes the calls.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from skiff.controllers.history import REVISION_HASH_LABEL
from skiff.controllers.workloads import is_available, is_deleting, meta

Obj = dict[str, Any]


def is_current(pod: Obj, hash_: str) -> bool:
    """Whether `pod` runs the revision whose hash is `hash_`."""
    return (meta(pod).get("labels") or {}).get(REVISION_HASH_LABEL) == hash_


def _scaled(raw: object, total: int) -> int:
    """An IntOrString: a count, or a percentage of `total` rounded up (GetScaledValueFromIntOrPercent)."""
    if isinstance(raw, str) and raw.endswith("%"):
        return math.ceil(int(raw[:-1]) * total / 100)
    return int(str(raw))


def rolling_limits(ds: Obj, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers of nodes; both 0 would stall a rollout, so that reads as (0, 1)."""
    rolling = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge", 0), desired)
    unavailable = _scaled(rolling.get("maxUnavailable", 1), desired)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(ds: Obj, desired: int) -> int:
    return rolling_limits(ds, desired)[1]


def excess(running: list[Obj], hash_: str, *, surge: bool) -> list[Obj]:
    """Pods beyond one per node (oldest first kept); while surging, one old and one new may share a node."""
    if len(running) <= 1:
        return []
    if not surge:
        return running[1:]
    new_pods = [p for p in running if is_current(p, hash_)]
    old_pods = [p for p in running if p not in new_pods]
    return new_pods[1:] + old_pods[1:]


def rolling_deletions(
    eligible: list[str], by_node: dict[str, list[Obj]], hash_: str, limit: int, min_ready: int, at: datetime
) -> list[Obj]:
    """maxSurge 0: the old pods to delete now, keeping at most `limit` (maxUnavailable) nodes unavailable."""
    unavailable = 0
    replace_now: list[Obj] = []
    candidates: list[Obj] = []
    for name in eligible:
        pods = [p for p in by_node.get(name, []) if not is_deleting(p)]
        new_pods = [p for p in pods if is_current(p, hash_)]
        old_pods = [p for p in pods if p not in new_pods]
        if len(pods) != 1:
            unavailable += 1  # none yet, or several: the manage step sorts it out
        elif new_pods:
            if not is_available(new_pods[0], min_ready, at):
                unavailable += 1
        elif not is_available(old_pods[0], min_ready, at):
            replace_now.append(old_pods[0])  # unavailable anyway: replacing it costs nothing
        else:
            candidates.append(old_pods[0])
    room = max(limit - unavailable, 0)
    return replace_now + candidates[:room]


def surge_steps(
    eligible: list[str], by_node: dict[str, list[Obj]], hash_: str, surge: int, min_ready: int, at: datetime
) -> tuple[list[str], list[Obj]]:
    """maxSurge > 0: (nodes to start a new pod on beside the old one, old pods whose new one is available)."""
    surging = 0
    old_to_delete: list[Obj] = []
    replace_now: list[str] = []  # nodes whose old pod is unavailable anyway: a new one may start at once
    candidates: list[str] = []
    for name in eligible:
        pods = [p for p in by_node.get(name, []) if not is_deleting(p)]
        new_pods = [p for p in pods if is_current(p, hash_)]
        old_pods = [p for p in pods if p not in new_pods]
        if len(new_pods) > 1 or len(old_pods) > 1:
            surging += 1  # the manage step cleans this node up first
        elif not old_pods:
            continue  # up to date (or nothing yet: the manage step creates it)
        elif not new_pods:
            if not is_available(old_pods[0], min_ready, at):
                replace_now.append(name)
            elif surging < surge:
                candidates.append(name)
        elif not is_available(new_pods[0], min_ready, at):
            surging += 1  # the new pod is on its way
        else:
            old_to_delete.append(old_pods[0])  # the new pod is available: the old one can go
    room = max(surge - surging, 0)
    return replace_now + candidates[:room], old_to_delete

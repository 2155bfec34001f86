"""The arithmetic of Deployments, free of I/O: hashes, surge and unavailability, revisions, status.

Everything the Deployment controller decides is a function of the
Deployment and its ReplicaSets as plain dicts; this module holds those
functions (Kubernetes' pkg/controller/deployment/util), so they can be
unit-tested without a server and read next to their Go originals:

- `compute_hash`: the pod-template-hash, fnv32a over a canonical encoding of
  the pod template plus `status.collisionCount`, rendered with
  `SafeEncodeString` (the 27-character alphabet with no vowels);
- `resolve_fenceposts`: maxSurge rounds up, maxUnavailable rounds down, and
  both 0 means maxUnavailable 1;
- `new_rs_new_replicas`, `replica_set_fraction`, `proportion`: how far a
  rolling update may scale the new ReplicaSet, and how a change of
  `spec.replicas` mid-rollout is shared among the active ReplicaSets;
- revisions and the annotations a ReplicaSet carries (revision,
  revision-history, desired-replicas, max-replicas, copies of the
  Deployment's own annotations such as `kubernetes.io/change-cause`);
- proportional scaling when `spec.replicas` changes mid-rollout.

Status and conditions are in `deployment_status`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from skiff.api.humanize import parse_time

Obj = dict[str, Any]

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO_ANNOTATION = "deprecated.deployment.rollback.to"
ANNOTATIONS_TO_SKIP = frozenset(
    {
        LAST_APPLIED_ANNOTATION,
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        ROLLBACK_TO_ANNOTATION,
    }
)
MAX_REVISION_HISTORY_CHARS = 2000
MAX_INT32 = 2**31 - 1

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --- hashing ------------------------------------------------------------------------------------


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode_string(s: str) -> str:
    """Kubernetes' `rand.SafeEncodeString`: each byte mapped onto an alphabet with no vowels (no words)."""
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in s.encode())


def compute_hash(template: Obj, collision_count: int | None) -> str:
    """The pod-template-hash of a pod template (and the Deployment's collisionCount, when set)."""
    canonical = json.dumps(_prune(template), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data = canonical.encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    return safe_encode_string(str(fnv32a(data)))


def _prune(value: Any) -> Any:
    """`value` without null/empty members: Kubernetes compares nil and empty maps and lists as equal."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def template_without_hash(template: Obj | None) -> Obj:
    out = copy.deepcopy(template or {})
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return out


def equal_ignore_hash(t1: Obj | None, t2: Obj | None) -> bool:
    """Whether two pod templates are the same but for the pod-template-hash label."""
    a: object = _prune(template_without_hash(t1))
    b: object = _prune(template_without_hash(t2))
    return bool(a == b)


# --- int-or-percent and fenceposts ------------------------------------------------------------


def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """An IntOrString as a count: an int as is, `"25%"` of `total` rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        try:
            return int(text)
        except ValueError:
            raise ValueError(
                f"invalid value for IntOrString: invalid type: string is not a percentage: {text!r}"
            ) from None
    try:
        percent = int(text[:-1])
    except ValueError:
        raise ValueError(f"invalid value {text!r}: invalid percentage") from None
    scaled = percent * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None, desired: int) -> tuple[int, int]:
    """(surge, unavailable) for `desired` replicas; never both zero (then unavailable is 1)."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def spec_replicas(obj: Obj | None) -> int:
    if obj is None:
        return 0
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _strategy(d: Obj) -> Obj:
    strategy: Obj = (d.get("spec") or {}).get("strategy") or {}
    return strategy


def is_rolling_update(d: Obj) -> bool:
    return str(_strategy(d).get("type", "RollingUpdate")) == "RollingUpdate"


def _rolling(d: Obj) -> Obj:
    rolling: Obj = _strategy(d).get("rollingUpdate") or {"maxSurge": "25%", "maxUnavailable": "25%"}
    return rolling


def max_surge(d: Obj) -> int:
    if not is_rolling_update(d):
        return 0
    ru = _rolling(d)
    return resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), spec_replicas(d))[0]


def max_unavailable(d: Obj) -> int:
    replicas = spec_replicas(d)
    if not is_rolling_update(d) or replicas == 0:
        return 0
    ru = _rolling(d)
    unavailable = resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), replicas)[1]
    return min(unavailable, replicas)


# --- replica counts -----------------------------------------------------------------------------


def _status(rs: Obj | None, field: str) -> int:
    return int(((rs or {}).get("status") or {}).get(field) or 0)


def replica_count(rss: Iterable[Obj | None]) -> int:
    """Sum of spec.replicas."""
    return sum(spec_replicas(rs) for rs in rss if rs is not None)


def actual_replica_count(rss: Iterable[Obj | None]) -> int:
    """Sum of status.replicas."""
    return sum(_status(rs, "replicas") for rs in rss)


def ready_replica_count(rss: Iterable[Obj | None]) -> int:
    return sum(_status(rs, "readyReplicas") for rs in rss)


def available_replica_count(rss: Iterable[Obj | None]) -> int:
    return sum(_status(rs, "availableReplicas") for rs in rss)


def filter_active(rss: Iterable[Obj | None]) -> list[Obj]:
    """The ReplicaSets with spec.replicas > 0."""
    return [rs for rs in rss if rs is not None and spec_replicas(rs) > 0]


# --- ordering -----------------------------------------------------------------------------------


def _created(rs: Obj) -> float:
    t = parse_time((rs.get("metadata") or {}).get("creationTimestamp"))
    return t.timestamp() if t is not None else 0.0


def _name(rs: Obj) -> str:
    return str((rs.get("metadata") or {}).get("name") or "")


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    """Oldest first; ties by name (ReplicaSetsByCreationTimestamp)."""
    return sorted(rss, key=lambda rs: (_created(rs), _name(rs)))


def by_size_newer(rss: Iterable[Obj]) -> list[Obj]:
    """Largest first; among equals, newest first (ReplicaSetsBySizeNewer: where scale-ups go first)."""
    return sorted(rss, key=lambda rs: (-spec_replicas(rs), -_created(rs), _invert(_name(rs))))


def by_size_older(rss: Iterable[Obj]) -> list[Obj]:
    """Largest first; among equals, oldest first (ReplicaSetsBySizeOlder: where scale-downs go first)."""
    return sorted(rss, key=lambda rs: (-spec_replicas(rs), _created(rs), _name(rs)))


def _invert(name: str) -> tuple[int, ...]:
    return (*(-ord(c) for c in name), 1)


def revision(rs: Obj | None) -> int:
    """The `deployment.kubernetes.io/revision` annotation (0 when absent; -1 when not a number)."""
    value = (((rs or {}).get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return -1


def max_revision(rss: Iterable[Obj | None]) -> int:
    return max((revision(rs) for rs in rss if rs is not None), default=0)


def by_revision(rss: Iterable[Obj]) -> list[Obj]:
    """Lowest revision first; equal (or unparsable) revisions by creation (ReplicaSetsByRevision)."""

    def cmp(a: Obj, b: Obj) -> int:
        ra, rb = revision(a), revision(b)
        if ra < 0 or rb < 0 or ra == rb:
            ka, kb = (_created(a), _name(a)), (_created(b), _name(b))
            return -1 if ka < kb else (1 if ka > kb else 0)
        return -1 if ra < rb else 1

    return sorted(rss, key=functools.cmp_to_key(cmp))


# --- which ReplicaSet is new --------------------------------------------------------------------


def template(d: Obj) -> Obj:
    return (d.get("spec") or {}).get("template") or {}


def find_new_rs(d: Obj, rss: Sequence[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash label)."""
    for rs in by_creation(rss):
        if equal_ignore_hash(template(rs), template(d)):
            return rs
    return None


def find_old_rss(d: Obj, rss: Sequence[Obj]) -> tuple[list[Obj], list[Obj]]:
    """(old ReplicaSets with pods, all old ReplicaSets)."""
    new_rs = find_new_rs(d, rss)
    new_uid = (new_rs or {}).get("metadata", {}).get("uid")
    all_old = [rs for rs in rss if new_rs is None or rs["metadata"].get("uid") != new_uid]
    return [rs for rs in all_old if spec_replicas(rs) != 0], all_old


def find_active_or_latest(new_rs: Obj | None, old_rss: Sequence[Obj]) -> Obj | None:
    """The one active ReplicaSet (or the newest if none is active); None while several are active."""
    if new_rs is None and not old_rss:
        return None
    newest_first = list(reversed(by_creation(old_rss)))
    active = filter_active([*newest_first, new_rs])
    if not active:
        return new_rs if new_rs is not None else newest_first[0]
    if len(active) == 1:
        return active[0]
    return None


def new_rs_template(d: Obj, pod_template_hash: str) -> Obj:
    out = copy.deepcopy(template(d))
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), POD_TEMPLATE_HASH_LABEL: pod_template_hash}
    return out


def new_rs_selector(d: Obj, pod_template_hash: str) -> Obj:
    selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), POD_TEMPLATE_HASH_LABEL: pod_template_hash}
    return selector


def new_rs_new_replicas(d: Obj, all_rss: Sequence[Obj | None], new_rs: Obj) -> int:
    """How many replicas the new ReplicaSet may have now (NewRSNewReplicas)."""
    if not is_rolling_update(d):
        return spec_replicas(d)
    current = replica_count(all_rss)
    max_total = spec_replicas(d) + max_surge(d)
    if current >= max_total:
        return spec_replicas(new_rs)
    scale_up = min(max_total - current, spec_replicas(d) - spec_replicas(new_rs))
    return spec_replicas(new_rs) + scale_up


# --- annotations --------------------------------------------------------------------------------


def _annotations(obj: Obj) -> dict[str, str]:
    meta = obj.setdefault("metadata", {})
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    annotations: dict[str, str] = meta["annotations"]
    return annotations


def int_annotation(obj: Obj | None, key: str) -> int | None:
    value = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def desired_replicas_annotation(rs: Obj | None) -> int | None:
    return int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)


def max_replicas_annotation(rs: Obj | None) -> int | None:
    return int_annotation(rs, MAX_REPLICAS_ANNOTATION)


def replicas_annotations_need_update(rs: Obj, desired: int, max_replicas: int) -> bool:
    annotations = (rs.get("metadata") or {}).get("annotations") or {}
    return annotations.get(DESIRED_REPLICAS_ANNOTATION) != str(desired) or annotations.get(
        MAX_REPLICAS_ANNOTATION
    ) != str(max_replicas)


def set_replicas_annotations(rs: Obj, desired: int, max_replicas: int) -> bool:
    """Set desired-replicas and max-replicas on `rs`; True if either changed."""
    annotations = _annotations(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS_ANNOTATION, str(desired)), (MAX_REPLICAS_ANNOTATION, str(max_replicas))):
        if annotations.get(key) != value:
            annotations[key] = value
            changed = True
    return changed


def copy_deployment_annotations(d: Obj, rs: Obj) -> bool:
    """Copy the Deployment's annotations (change-cause…, not revision or last-applied) onto `rs`."""
    annotations = _annotations(rs)
    changed = False
    for key, value in ((d.get("metadata") or {}).get("annotations") or {}).items():
        if key in ANNOTATIONS_TO_SKIP or annotations.get(key) == value:
            continue
        annotations[key] = value
        changed = True
    return changed


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, *, exists: bool) -> bool:
    """Annotate the new ReplicaSet: Deployment annotations, revision (and its history), replica counts."""
    changed = copy_deployment_annotations(d, rs)
    annotations = _annotations(rs)
    old_value = annotations.get(REVISION_ANNOTATION)
    try:
        old_revision = int(old_value) if old_value else 0
    except ValueError:
        return changed
    if old_revision < new_revision:
        annotations[REVISION_ANNOTATION] = str(new_revision)
        changed = True
        if old_value:
            history = [h for h in (annotations.get(REVISION_HISTORY_ANNOTATION) or "").split(",") if h]
            history.append(old_value)
            while len(",".join(history)) > MAX_REVISION_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            annotations[REVISION_HISTORY_ANNOTATION] = ",".join(history)
    if not exists and set_replicas_annotations(rs, spec_replicas(d), spec_replicas(d) + max_surge(d)):
        changed = True
    return changed


# --- proportional scaling -----------------------------------------------------------------------


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    """The new ReplicaSet has all the Deployment's replicas, all of them available."""
    if rs is None:
        return False
    replicas = spec_replicas(d)
    return (
        spec_replicas(rs) == replicas
        and desired_replicas_annotation(rs) == replicas
        and _status(rs, "availableReplicas") == replicas
    )


def replica_set_fraction(rs: Obj, d: Obj) -> int:
    """How many replicas `rs` gains (or loses) when the Deployment is resized, in proportion to its size."""
    if spec_replicas(d) == 0:
        return -spec_replicas(rs)
    deployment_replicas = spec_replicas(d) + max_surge(d)
    annotated = max_replicas_annotation(rs)
    if annotated is None:
        annotated = _status(d, "replicas")
    if annotated == 0:
        return 0  # Kubernetes divides by zero here (NaN rounds to a huge value); nothing sensible to add
    new_size = spec_replicas(rs) * deployment_replicas / annotated
    return _round_half_away(new_size) - spec_replicas(rs)


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def proportion(rs: Obj | None, d: Obj, to_add: int, added: int) -> int:
    """The share of `to_add` replicas `rs` takes, given `added` taken already (GetProportion)."""
    if rs is None or spec_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_sizes(d: Obj, active_rss: Sequence[Obj]) -> tuple[dict[str, int], str]:
    """New sizes of the active ReplicaSets when the Deployment was resized mid-rollout, and "up"/"down"."""
    allowed = spec_replicas(d) + max_surge(d) if spec_replicas(d) > 0 else 0
    to_add = allowed - replica_count(active_rss)
    operation = ""
    ordered = list(active_rss)
    if to_add > 0:
        ordered, operation = by_size_newer(active_rss), "up"
    elif to_add < 0:
        ordered, operation = by_size_older(active_rss), "down"
    sizes: dict[str, int] = {}
    added = 0
    for rs in ordered:
        if to_add != 0:
            share = proportion(rs, d, to_add, added)
            sizes[_name(rs)] = spec_replicas(rs) + share
            added += share
        else:
            sizes[_name(rs)] = spec_replicas(rs)
    if to_add != 0 and added != to_add and ordered:
        first = _name(ordered[0])
        sizes[first] = max(sizes[first] + to_add - added, 0)
    return sizes, operation

"""Indexed Jobs: the index a pod is for, `status.completedIndexes`, and what a pod of an index carries.

With `completionMode: Indexed` a Job wants one success per index
0..completions-1. The index is in the `batch.kubernetes.io/job-completion-index`
annotation and label, the pod's hostname (`<job>-<index>`) and its
`JOB_COMPLETION_INDEX` variable; the completed ones are written as ranges
(`"0-2,5"`). Pure helpers, shared by the counting and the pod creation of
`job_sync` and by the success criteria of `job_conditions`.
"""

from __future__ import annotations

from typing import Any

from skiff.controllers.workloads import meta

Obj = dict[str, Any]
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def index_of(pod: Obj) -> int | None:
    raw = (meta(pod).get("annotations") or {}).get(INDEX_KEY) or (meta(pod).get("labels") or {}).get(INDEX_KEY)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def parse_indexes(text: str | None) -> set[int]:
    """`"0-2,5"` → {0, 1, 2, 5} (status.completedIndexes)."""
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part.strip():
            continue
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def format_indexes(indexes: set[int]) -> str:
    """{0, 1, 2, 5} → `"0-2,5"`."""
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def add_index(pod_spec: Obj, job_name: str, index: int) -> None:
    """Give a pod spec of `index` its hostname and, in every container, `JOB_COMPLETION_INDEX`."""
    pod_spec.setdefault("hostname", f"{job_name}-{index}")
    env_var = {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}},
    }
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        env = container.setdefault("env", [])
        if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
            env.append(env_var)

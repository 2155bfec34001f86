"""What every Table printer shares: column definitions, `Printer`, and JSON-reading helpers.

kubectl has no client-side printers: `kubectl get pods` shows READY, STATUS
and RESTARTS only because the API server answers a `meta.k8s.io/v1 Table`
whose columns and cells it computed itself. skiff ports the column
definitions and cell logic of Kubernetes' pkg/printers/internalversion to
plain JSON objects (`printers_core`, `printers_config`, `printers_apps`,
`printers_misc`); this module holds their common vocabulary, including ports
of apimachinery's label and selector formatting. Every printer yields all
cells, wide ones included: kubectl hides priority-1 columns unless `-o wide`,
exactly as it does against kube-apiserver (which always prints wide).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from skiff.api.humanize import since

Obj = dict[str, Any]
Cell = Any
Column = dict[str, Any]
RowFn = Callable[[Obj, datetime], list[Cell]]
ConditionsFn = Callable[[Obj], list[dict[str, str]]]

NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATED_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is "
    "not guaranteed to be set in happens-before order across separate operations. Clients may not set this "
    "value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null "
    "for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
CONTAINERS_DESC = "Names of each container in the template."
IMAGES_DESC = "Images referenced by each container in the template."


def column(name: str, type_: str = "string", desc: str = "", *, fmt: str = "", priority: int = 0) -> Column:
    """A `TableColumnDefinition`; every key is always present, as Go serializes them."""
    return {"name": name, "type": type_, "format": fmt, "description": desc, "priority": priority}


def wide(name: str, desc: str = "") -> Column:
    return column(name, desc=desc, priority=1)


NAME = column("Name", desc=NAME_DESC, fmt="name")
AGE = column("Age", desc=CREATED_DESC)


@dataclass(frozen=True)
class Printer:
    """Column definitions plus the function computing one object's cells."""

    columns: tuple[Column, ...]
    row: RowFn
    conditions: ConditionsFn | None = field(default=None)


# --- reading plain JSON objects -------------------------------------------------------------------------


def dig(obj: Any, *path: str | int) -> Any:
    """obj[path[0]][path[1]]…, or None as soon as a step is missing or of the wrong shape."""
    cur = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                return None
            cur = cur[step]
        elif isinstance(cur, dict):
            cur = cur.get(step)
        else:
            return None
    return cur


def as_dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int:
    """An int32/int64 field: Go's zero value when unset."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def meta(obj: Obj) -> Obj:
    return as_dict(obj.get("metadata"))


def name_of(obj: Obj) -> str:
    return as_str(meta(obj).get("name"))


def age(obj: Obj, now: datetime) -> str:
    return since(meta(obj).get("creationTimestamp"), now)


def deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def quantity(value: Any) -> str:
    """A resource.Quantity as printed; a missing quantity is Go's zero Quantity, "0"."""
    if value is None:
        return "0"
    return str(value)


def container_cells(pod_spec: Any) -> tuple[str, str]:
    """`layoutContainerCells`: container names and images, comma-joined."""
    containers = [as_dict(c) for c in as_list(dig(pod_spec, "containers"))]
    return ",".join(as_str(c.get("name")) for c in containers), ",".join(
        as_str(c.get("image")) for c in containers
    )


def format_labels(labels: Any) -> str:
    """`labels.FormatLabels`: sorted k=v pairs, or "<none>"."""
    pairs = ",".join(f"{k}={v}" for k, v in sorted(as_dict(labels).items()))
    return pairs or "<none>"


def selector_string(selector: Any) -> str | None:
    """`LabelSelectorAsSelector(s).String()`; None when the selector is invalid."""
    if not isinstance(selector, dict):
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in as_dict(selector.get("matchLabels")).items():
        reqs.append((k, f"{k}={v}"))
    for expr in as_list(selector.get("matchExpressions")):
        e = as_dict(expr)
        key, op = as_str(e.get("key")), e.get("operator")
        values = sorted(as_str(v) for v in as_list(e.get("values")))
        if op == "In" and values:
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn" and values:
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, "!" + key))
        else:
            return None
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def format_label_selector(selector: Any) -> str:
    """`metav1.FormatLabelSelector`: the selector string, "<none>" when empty."""
    s = selector_string(selector)
    if s is None:
        return "<error>"
    return s or "<none>"


def list_with_more(items: list[str], total: int, limit: int = 3, empty: str = "<unset>") -> str:
    """The first `limit` entries, then " + N more..." (`listWithMoreString`)."""
    text = ",".join(items[:limit])
    if total > limit:
        return f"{text} + {total - limit} more..."
    return text or empty

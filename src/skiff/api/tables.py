"""Server-side `meta.k8s.io/v1 Table` output, which is all `kubectl get` prints.

kubectl has no client-side printers: for `get` (and each event of `get -w`)
it asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints
the columns and cells the server computed. Without a Table it can only show
NAME and AGE. `to_table` builds that Table for any kind:

* built-in kinds use the per-kind printers ported from Kubernetes
  (`skiff.api.printers`, `skiff.api.printers_groups`);
* custom resources use their CRD's `additionalPrinterColumns`, evaluated with
  `skiff.api.jsonpath` exactly as apiextensions-apiserver does;
* anything else gets the generic NAME / CREATED AT table.

Like kube-apiserver, every row carries all cells including the priority-1
("wide") ones; kubectl hides those unless `-o wide`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from skiff.api.errors import BadRequest
from skiff.api.humanize import parse_time, since, utc_now
from skiff.api.jsonpath import JSONPath, JSONPathError, to_text
from skiff.api.printers import CREATED_DESC, NAME, Cell, Column, Obj, Printer, column, meta, name_of
from skiff.api.printers_apps import APPS
from skiff.api.printers_config import CONFIG
from skiff.api.printers_core import CORE, EVENT_COLUMNS, event_row
from skiff.api.printers_misc import MISC

__all__ = ["INCLUDE_OBJECT_VALUES", "TABLE_CONTENT_TYPE", "include_object_param", "to_table"]

TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
INCLUDE_OBJECT_VALUES = ("Metadata", "Object", "None")

_EVENTS_V1 = Printer(EVENT_COLUMNS, lambda o, now: event_row(o, now, v1=True))
_PRINTERS: dict[tuple[str, str], Printer] = {
    **CORE,
    **CONFIG,
    **APPS,
    **MISC,
    ("events.k8s.io", "Event"): _EVENTS_V1,
}
_DEFAULT_COLUMNS: tuple[Column, ...] = (NAME, column("Created At", "date", CREATED_DESC))
_CRD_DEFAULT_COLUMNS = [
    {"name": "Age", "type": "date", "description": CREATED_DESC, "jsonPath": ".metadata.creationTimestamp"},
]


def include_object_param(value: str | None) -> str:
    """Validate the `includeObject` query parameter; absent or empty means "Metadata"."""
    if not value:
        return "Metadata"
    if value not in INCLUDE_OBJECT_VALUES:
        raise BadRequest(
            f"includeObject: Invalid value: {value!r}: must be 'Metadata', 'Object', 'None', or empty"
        )
    return value


def to_table(
    group: str,
    kind: str,
    objects: list[dict[str, Any]],
    *,
    include_object: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    printer_columns: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
    no_headers: bool = False,
) -> dict[str, Any]:
    """Render `objects` (all of one kind) as a `meta.k8s.io/v1 Table`.

    `group`/`kind` pick the printer ("" is the core group). `printer_columns`
    is a custom resource's `additionalPrinterColumns` for the served version;
    pass it (even as `[]`) for every custom resource, None for built-in kinds.
    `include_object` is the `includeObject` query parameter: "Metadata" (the
    default) embeds a PartialObjectMetadata per row, "Object" the object itself,
    "None" nothing. `list_meta` becomes the Table's `metadata` (resourceVersion,
    continue, remainingItemCount of the list, or the object's resourceVersion
    for a single GET). `no_headers` omits the column definitions, as the real
    server does after the first event of a watch.
    """
    include = include_object_param(include_object)
    when = now or utc_now()
    columns, rows = _render(group, kind, objects, printer_columns, when)
    table_rows: list[dict[str, Any]] = []
    for obj, (cells, conditions) in zip(objects, rows, strict=True):
        row: dict[str, Any] = {"cells": cells}
        if conditions:
            row["conditions"] = conditions
        if include == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": dict(meta(obj)),
            }
        elif include == "Object":
            row["object"] = obj
        table_rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta) if list_meta else {},
        "columnDefinitions": None if no_headers else [dict(c) for c in columns],
        "rows": table_rows,
    }


_Rendered = tuple[list[Cell], list[dict[str, str]]]


def _render(
    group: str,
    kind: str,
    objects: list[Obj],
    printer_columns: list[dict[str, Any]] | None,
    now: datetime,
) -> tuple[tuple[Column, ...], list[_Rendered]]:
    if printer_columns is not None:
        return _custom_resource(printer_columns or _CRD_DEFAULT_COLUMNS, objects, now)
    printer = _PRINTERS.get((group, kind))
    if printer is None:
        return _DEFAULT_COLUMNS, [([name_of(o), _created_at(o)], []) for o in objects]
    conditions = printer.conditions
    return printer.columns, [(printer.row(o, now), conditions(o) if conditions else []) for o in objects]


def _created_at(obj: Obj) -> str:
    """The default convertor's CREATED AT cell: RFC 3339, Go's zero time when unset."""
    t = parse_time(meta(obj).get("creationTimestamp"))
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "0001-01-01T00:00:00Z"


def _custom_resource(
    printer_columns: list[dict[str, Any]], objects: list[Obj], now: datetime
) -> tuple[tuple[Column, ...], list[_Rendered]]:
    """apiextensions-apiserver's table convertor: NAME, then the CRD's printer columns."""
    columns: list[Column] = [NAME]
    paths: list[JSONPath] = []
    for spec in printer_columns:
        json_path = str(spec.get("jsonPath", ""))
        try:
            paths.append(JSONPath(json_path))
        except JSONPathError:
            break  # Kubernetes keeps the columns before an unparsable one and drops the rest
        desc = (
            spec.get("description") or f"Custom resource definition column (in JSONPath format): {json_path}"
        )
        columns.append(
            column(
                str(spec.get("name", "")),
                str(spec.get("type", "string")),
                str(desc),
                fmt=str(spec.get("format", "")),
                priority=int(spec.get("priority", 0) or 0),
            )
        )
    rows: list[_Rendered] = []
    for obj in objects:
        cells: list[Cell] = [name_of(obj)]
        for col, path in zip(columns[1:], paths, strict=False):
            found, value = path.first(obj)
            cells.append(_crd_cell(col["type"], value, now) if found else None)
        rows.append((cells, []))
    return tuple(columns), rows


def _crd_cell(type_: str, value: Any, now: datetime) -> Cell:
    """`cellForJSONValue`: a cell of the column's type, or None (kubectl prints "<none>")."""
    if value is None:
        return None
    if type_ == "string":
        return to_text(value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "integer":
        return int(value) if numeric else None
    if type_ == "number":
        return float(value) if numeric else None
    if type_ == "boolean":
        return value if isinstance(value, bool) else None
    if type_ == "date" and isinstance(value, str):
        if not value:
            return "<unknown>"
        return since(value, now) if parse_time(value) else "<invalid>"
    return None

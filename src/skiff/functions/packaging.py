"""From a handler file to API objects: check the code, then package it as a ConfigMap and a Function.

The check runs before anything is created, so bad code never leaves a half-deployed function: the
file must compile (a SyntaxError is reported as Python reports it) and define the handler as a
top-level function. The code travels in a ConfigMap (`<name>-code`, the file under its own name)
that the Function points at and that the Function owns once it exists.
"""

from __future__ import annotations

import ast
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skiff.functions.crd import FUNCTIONS, LABEL


class CodeError(Exception):
    """The handler code cannot be deployed; the message is Python's own error."""


def check_code(source: str, filename: str, func: str) -> None:
    try:
        tree = ast.parse(source, filename)
        compile(tree, filename, "exec", dont_inherit=True)  # errors only the compiler finds (return outside def)
    except SyntaxError as e:
        raise CodeError("".join(traceback.format_exception_only(e)).rstrip()) from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    imported = {(a.asname or a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    if func not in defined | assigned | imported:
        where = f"; it defines {', '.join(sorted(defined))}" if defined else ""
        raise CodeError(f"{filename}: no handler function {func!r} at the top level{where}")


@dataclass(frozen=True)
class Deployment:
    """What `skiff fn deploy` applies: the code's ConfigMap and the Function."""

    name: str
    namespace: str
    source: str
    filename: str  # e.g. handler.py: the module is its stem
    func: str = "handle"
    triggers: tuple[dict[str, Any], ...] = ({"type": "http"},)
    settings: dict[str, Any] = field(default_factory=dict)  # more spec fields (concurrency, idleTimeout, ...)

    @property
    def handler(self) -> str:
        return f"{Path(self.filename).stem}.{self.func}"

    @property
    def config_map_name(self) -> str:
        return f"{self.name}-code"

    def check(self) -> None:
        if not Path(self.filename).stem.isidentifier():
            raise CodeError(f"{self.filename}: the file name must be a Python module name")
        check_code(self.source, self.filename, self.func)

    def config_map(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.config_map_name, "namespace": self.namespace, "labels": {LABEL: self.name}},
            "data": {self.filename: self.source},
        }

    def function(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "runtime": "python3.11",
            "handler": self.handler,
            "code": {"configMap": {"name": self.config_map_name}},
            "triggers": list(self.triggers),
            **self.settings,
        }
        return {
            "apiVersion": FUNCTIONS.api_version,
            "kind": FUNCTIONS.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }


def parse_trigger(text: str) -> dict[str, Any]:
    """`http`, `cron=*/5 * * * *`, `event=ConfigMap[,selector]` as a trigger object."""
    kind, _, arg = text.partition("=")
    if kind == "http" and not arg:
        return {"type": "http"}
    if kind == "cron" and arg:
        return {"type": "cron", "schedule": arg}
    if kind == "topic" and arg:
        return {"type": "topic", "topic": arg}
    if kind == "event" and arg:
        what, _, selector = arg.partition(",")
        return {"type": "event", "kind": what, **({"labelSelector": selector} if selector else {})}
    raise ValueError(
        f"a trigger is http, cron=<schedule>, event=<Kind>[,<label selector>] or topic=<name>, not {text!r}"
    )

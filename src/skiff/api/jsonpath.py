"""A small JSONPath evaluator for CRD `additionalPrinterColumns`.

Custom resources get their `kubectl get` columns from the CRD: each column
names a JSONPath (`.spec.replicas`, `.status.conditions[?(@.type=="Ready")].status`)
that the API server evaluates against every object when it builds a Table.
This module covers the subset of client-go's `util/jsonpath` those paths use:

* fields: `.a.b`, `['a.b']`, `["a"]`, escaped dots (`.labels.app\\.kubernetes\\.io/name`)
* wildcards: `.*`, `[*]`; recursive descent: `..name`
* indexes and slices: `[0]`, `[-1]`, `[1:3]`, `[::2]`
* filters: `[?(@.type=="Ready")]`, `[?(@.port > 80)]`, `[?(@.name)]` (exists)
* an optional `{...}` wrapper and leading `$`.

Missing keys yield no result rather than an error (the server calls
`AllowMissingKeys(true)`); out-of-range indexes likewise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union


class JSONPathError(ValueError):
    """The expression is not a JSONPath this evaluator understands."""


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Wildcard:
    pass


@dataclass(frozen=True)
class _Recursive:
    pass


@dataclass(frozen=True)
class _Slice:
    start: int | None
    end: int | None
    step: int | None
    single: bool  # `[n]` rather than `[a:b]`


@dataclass(frozen=True)
class _Filter:
    path: tuple[_Step, ...]
    op: str | None  # None: the path merely has to exist
    literal: Any


_Step = Union[_Field, _Wildcard, _Recursive, _Slice, _Filter]  # noqa: UP007 (recursive alias)
_OPS = ("==", "!=", "<=", ">=", "<", ">")


class JSONPath:
    """A parsed JSONPath expression; `find` evaluates it against decoded JSON."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        text = expr.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1].strip()
        if text.startswith("$"):
            text = text[1:]
        if not text:
            raise JSONPathError(f"empty JSONPath {expr!r}")
        self.steps: tuple[_Step, ...] = tuple(_Parser(text, expr).steps())

    def find(self, data: Any) -> list[Any]:
        """Every value the path selects, in document order; [] when nothing matches."""
        return _evaluate(self.steps, [data])

    def first(self, data: Any) -> tuple[bool, Any]:
        """(found, value) of the first match, as the CRD table convertor uses it."""
        found = self.find(data)
        return (True, found[0]) if found else (False, None)


def find(expr: str, data: Any) -> list[Any]:
    """Parse `expr` and evaluate it against `data`."""
    return JSONPath(expr).find(data)


def to_text(value: Any) -> str:
    """Print one result the way `kubectl get -o jsonpath` does."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def format_float(value: float) -> str:
    """Go's `%v` for a float64: no trailing ".0", exponent only from 1e21."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


class _Parser:
    def __init__(self, text: str, expr: str) -> None:
        self.text = text
        self.expr = expr
        self.pos = 0

    def error(self, msg: str) -> JSONPathError:
        return JSONPathError(f"{msg} at position {self.pos} of JSONPath {self.expr!r}")

    def steps(self) -> Iterator[_Step]:
        t = self.text
        while self.pos < len(t):
            c = t[self.pos]
            if t.startswith("..", self.pos):
                self.pos += 2
                yield _Recursive()
                if self.pos < len(t) and t[self.pos] not in ".[":
                    yield self.name_step()
            elif c == ".":
                self.pos += 1
                if self.pos < len(t) and t[self.pos] not in ".[":
                    yield self.name_step()
                elif self.pos >= len(t) and self.pos == 1:
                    return  # a bare "." is the whole object
            elif c == "[":
                yield self.bracket()
            elif self.pos == 0:
                yield self.name_step()  # "metadata.name" without the leading dot
            else:
                raise self.error(f"unexpected {c!r}")

    def name_step(self) -> _Step:
        t = self.text
        if t[self.pos] == "*":
            self.pos += 1
            return _Wildcard()
        out: list[str] = []
        while self.pos < len(t) and t[self.pos] not in ".[":
            if t[self.pos] == "\\" and self.pos + 1 < len(t):
                self.pos += 1
            elif t[self.pos] in " \t()=!<>,'\"":
                raise self.error(f"unexpected {t[self.pos]!r} in a field name")
            out.append(t[self.pos])
            self.pos += 1
        if not out:
            raise self.error("empty field name")
        return _Field("".join(out))

    def bracket(self) -> _Step:
        t = self.text
        end = self._matching_bracket()
        inner = t[self.pos + 1 : end].strip()
        self.pos = end + 1
        if inner == "*":
            return _Wildcard()
        if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
            return _Field(inner[1:-1])
        if inner.startswith("?"):
            return self.filter(inner[1:].strip())
        return self.slice(inner)

    def _matching_bracket(self) -> int:
        t = self.text
        depth = 0
        quote: str | None = None
        for i in range(self.pos, len(t)):
            c = t[i]
            if quote:
                if c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
            elif c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
                if depth == 0:
                    return i
        raise self.error("unterminated '['")

    def slice(self, inner: str) -> _Slice:
        parts = [p.strip() for p in inner.split(":")]
        if len(parts) > 3 or not inner:
            raise self.error(f"bad array index [{inner}]")
        try:
            nums = [int(p) if p else None for p in parts]
        except ValueError:
            raise self.error(f"bad array index [{inner}]") from None
        if len(nums) == 1:
            if nums[0] is None:
                raise self.error("empty array index")
            return _Slice(nums[0], None, None, single=True)
        return _Slice(nums[0], nums[1], nums[2] if len(nums) == 3 else None, single=False)

    def filter(self, body: str) -> _Filter:
        if not (body.startswith("(") and body.endswith(")")):
            raise self.error(f"bad filter {body!r}")
        body = body[1:-1].strip()
        if not body.startswith("@"):
            raise self.error("a filter must start with '@'")
        left, op, right = body[1:], None, ""
        quote: str | None = None
        for i, c in enumerate(left):
            if quote:
                quote = None if c == quote else quote
            elif c in "'\"":
                quote = c
            else:
                op = next((o for o in _OPS if left.startswith(o, i)), None)
                if op:
                    left, right = left[:i], left[i + len(op) :]
                    break
        left = left.strip()
        path = tuple(_Parser(left, self.expr).steps()) if left else ()
        if op is None:
            return _Filter(path, None, None)
        return _Filter(path, op, self.literal(right.strip()))

    def literal(self, text: str) -> Any:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise self.error(f"bad filter literal {text!r}") from None


def _evaluate(steps: tuple[_Step, ...], values: list[Any]) -> list[Any]:
    for step in steps:
        out: list[Any] = []
        for v in values:
            out.extend(_apply(step, v))
        values = out
    return values


def _apply(step: _Step, v: Any) -> list[Any]:
    if isinstance(step, _Field):
        return [v[step.name]] if isinstance(v, dict) and step.name in v else []
    if isinstance(step, _Wildcard):
        if isinstance(v, dict):
            return list(v.values())
        return list(v) if isinstance(v, list) else []
    if isinstance(step, _Recursive):
        return list(_descend(v))
    if not isinstance(v, list):
        return []
    if isinstance(step, _Slice):
        return _slice(step, v)
    return [item for item in v if _matches(step, item)]


def _descend(v: Any) -> Iterator[Any]:
    if isinstance(v, dict):
        yield v
        for child in v.values():
            yield from _descend(child)
    elif isinstance(v, list):
        yield v
        for child in v:
            yield from _descend(child)


def _slice(step: _Slice, v: list[Any]) -> list[Any]:
    n = len(v)
    if step.single:
        i = step.start if step.start is not None else 0
        i = i + n if i < 0 else i
        return [v[i]] if 0 <= i < n else []
    if step.step == 0:
        return []
    return v[step.start : step.end : step.step]


def _matches(f: _Filter, item: Any) -> bool:
    found = _evaluate(f.path, [item])
    if f.op is None:
        return bool(found)
    if len(found) != 1:
        return False
    left, right = found[0], f.literal
    if f.op == "==":
        return _same_type(left, right) and bool(left == right)
    if f.op == "!=":
        return not (_same_type(left, right) and left == right)
    if not _same_type(left, right) or isinstance(left, bool | dict | list) or left is None:
        return False
    try:
        if f.op == "<":
            return bool(left < right)
        if f.op == ">":
            return bool(left > right)
        if f.op == "<=":
            return bool(left <= right)
        return bool(left >= right)
    except TypeError:
        return False


def _same_type(a: Any, b: Any) -> bool:
    def kind(x: Any) -> str:
        if isinstance(x, bool):
            return "bool"
        if isinstance(x, int | float):
            return "number"
        return type(x).__name__

    return kind(a) == kind(b)

"""Label and field selectors, parsed and matched as Kubernetes does.

Every list and watch takes `labelSelector` and `fieldSelector` query parameters,
and controllers match `LabelSelector` objects (Deployment `spec.selector`) against
labels. The grammar, the error messages and the matching rules follow
k8s.io/apimachinery `labels.Parse` and `metav1.LabelSelectorAsSelector`, so that
kubectl users see the errors they know. Syntax errors raise `BadRequest`, which is
what the API server answers. Field selectors live in `fieldselectors` and are
re-exported here, so callers need only this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.api.errors import BadRequest
from skiff.api.fieldselectors import (
    FieldRequirement,
    FieldSelector,
    exact_name,
    object_fields,
    parse_field_selector,
)
from skiff.api.validation import is_qualified_name, is_valid_label_value

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "exact_name",
    "label_selector_from_dict",
    "new_requirement",
    "object_fields",
    "parse_field_selector",
    "parse_label_selector",
]

# Operators, spelled as Kubernetes' selection.Operator values.
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_ALL_OPERATORS = (
    IN,
    NOT_IN,
    EQUALS,
    DOUBLE_EQUALS,
    NOT_EQUALS,
    EXISTS,
    DOES_NOT_EXIST,
    GREATER_THAN,
    LESS_THAN,
)
_SPECIAL = "=!(),><"
_WHITESPACE = " \t\r\n"
_SYMBOLS = {")", ",", "!", "==", "=", ">", "<", "!=", "("}
_KEYWORDS = {"in", "notin"}
_BINARY = {
    "in": IN,
    "notin": NOT_IN,
    "=": EQUALS,
    "==": DOUBLE_EQUALS,
    "!=": NOT_EQUALS,
    ">": GREATER_THAN,
    "<": LESS_THAN,
}
_END, _IDENT, _ERROR = "end", "ident", "error"


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _invalid(path: str, value: str, detail: str) -> str:
    return f"{path}: Invalid value: {_quote(value)}: {detail}"


def _aggregate(errors: list[str]) -> str:
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def _is_int(value: str) -> bool:
    try:
        int(value, 10)
    except ValueError:
        return False
    return value.strip() == value and "_" not in value


@dataclass(frozen=True)
class Requirement:
    """One `key <op> values` term of a label selector."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (EQUALS, DOUBLE_EQUALS, IN):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_EQUALS, NOT_IN):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if op in (GREATER_THAN, LESS_THAN):
            value = labels.get(self.key)
            if value is None or not _is_int(value) or len(self.values) != 1:
                return False
            have, want = int(value), int(self.values[0])
            return have > want if op == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        values = ",".join(sorted(self.values)) if len(self.values) > 1 else "".join(self.values)
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({values})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{values}"


def new_requirement(key: str, operator: str, values: Iterable[str] = ()) -> Requirement:
    """A validated requirement (Kubernetes `labels.NewRequirement`); BadRequest if invalid."""
    vals = list(values)
    errors = [_invalid("key", key, "; ".join(msgs)) for msgs in [is_qualified_name(key)] if msgs]
    shown = "[]string{" + ", ".join(_quote(v) for v in vals) + "}"
    if operator in (IN, NOT_IN):
        if not vals:
            errors.append(
                f"values: Invalid value: {shown}: for 'in', 'notin' operators, values set can't be empty"
            )
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(vals) != 1:
            errors.append(
                f"values: Invalid value: {shown}: exact-match compatibility requires one single value"
            )
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if vals:
            errors.append(
                f"values: Invalid value: {shown}: values set must be empty for exists and does not exist"
            )
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(vals) != 1:
            errors.append(
                f"values: Invalid value: {shown}: for 'Gt', 'Lt' operators, exactly one value is required"
            )
        errors.extend(
            _invalid(f"values[{i}]", v, "for 'Gt', 'Lt' operators, the value must be an integer")
            for i, v in enumerate(vals)
            if not _is_int(v)
        )
    else:
        supported = ", ".join(_quote(o) for o in _ALL_OPERATORS)
        errors.append(f"operator: Unsupported value: {_quote(operator)}: supported values: {supported}")
    for i, v in enumerate(vals):
        msgs = is_valid_label_value(v)
        if msgs:
            errors.append(_invalid(f"values[{i}][{key}]", v, "; ".join(msgs)))
    if errors:
        raise BadRequest(_aggregate(errors))
    return Requirement(key, operator, tuple(vals))


class LabelSelector:
    """A conjunction of requirements; `nothing()` matches no object at all."""

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False) -> None:
        self.requirements: tuple[Requirement, ...] = tuple(sorted(requirements, key=lambda r: r.key))
        self.nothing = nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def match_nothing(cls) -> LabelSelector:
        return cls(nothing=True)

    def empty(self) -> bool:
        """True if the selector restricts nothing (and is not `nothing`)."""
        return not self.nothing and not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must have, if the selector pins it (`=`, `==`, or `in` one value)."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self.nothing else f"LabelSelector({str(self)!r})"


def _lex(selector: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal): kind is a symbol/keyword itself, `ident`, `error` or `end`."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(selector)
    while True:
        while i < n and selector[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append((_END, ""))
            return tokens
        if selector[i] in _SPECIAL:
            buf, last, j = "", "", i
            while j < n and selector[j] in _SPECIAL:
                buf += selector[j]
                if buf in _SYMBOLS:
                    last = buf
                elif last:
                    break
                j += 1
            if not last:
                tokens.append((_ERROR, f"error expected: keyword found '{buf}'"))
                i = j
            else:
                tokens.append((last, last))
                i += len(last)
            continue
        j = i
        while j < n and selector[j] not in _SPECIAL and selector[j] not in _WHITESPACE:
            j += 1
        word = selector[i:j]
        tokens.append((word if word in _KEYWORDS else _IDENT, word))
        i = j


class _Parser:
    def __init__(self, selector: str) -> None:
        self.tokens = _lex(selector)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        kind, lit = self.tokens[self.pos]
        return (_IDENT if kind in _KEYWORDS else kind), lit  # in/notin are plain words as values

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, lit = self.peek()
            if kind in (_IDENT, "!"):
                try:
                    requirements.append(self.requirement())
                except BadRequest as e:
                    raise BadRequest(f"unable to parse requirement: {e.message}") from None
                kind, lit = self.take()
                if kind == _END:
                    return requirements
                if kind != ",":
                    raise BadRequest(f"found '{lit}', expected: ',' or 'end of string'")
                kind2, lit2 = self.peek()
                if kind2 not in (_IDENT, "!"):
                    raise BadRequest(f"found '{lit2}', expected: identifier after ','")
            elif kind == _END:
                return requirements
            else:
                raise BadRequest(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        kind, key = self.take()
        negated = kind == "!"
        if negated:
            kind, key = self.take()
        if kind != _IDENT:
            raise BadRequest(f"found '{key}', expected: identifier")
        msgs = is_qualified_name(key)
        if msgs:
            raise BadRequest(_invalid("<nil>", key, "; ".join(msgs)))
        if self.peek()[0] in (_END, ","):
            return new_requirement(key, DOES_NOT_EXIST if negated else EXISTS)
        if negated:
            return new_requirement(key, DOES_NOT_EXIST)  # Kubernetes then fails on the next token
        kind, lit = self.tokens[self.pos]
        self.pos += 1
        if kind not in _BINARY:
            raise BadRequest(f"found '{lit}', expected: in, notin, =, ==, !=, gt, lt")
        op = _BINARY[kind]
        values = self.value_set() if op in (IN, NOT_IN) else self.exact_value()
        return new_requirement(key, op, sorted(values))

    def value_set(self) -> set[str]:
        kind, lit = self.take()
        if kind != "(":
            raise BadRequest(f"found '{lit}' expected: '('")
        kind, lit = self.peek()
        if kind == ")":
            self.take()
            return {""}
        if kind not in (_IDENT, ","):
            raise BadRequest(f"found '{lit}', expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:
            kind, lit = self.take()
            if kind == _IDENT:
                values.add(lit)
                kind2, lit2 = self.peek()
                if kind2 == ")":
                    self.take()
                    return values
                if kind2 != ",":
                    raise BadRequest(f"found '{lit2}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.add("")
                kind2, _ = self.peek()
                if kind2 == ")":
                    self.take()
                    values.add("")
                    return values
                if kind2 == ",":
                    values.add("")
            else:
                raise BadRequest(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        if self.peek()[0] in (_END, ","):
            return {""}
        kind, lit = self.take()
        if kind == _IDENT:
            return {lit}
        raise BadRequest(f"found '{lit}', expected: identifier")


def parse_label_selector(selector: str | None) -> LabelSelector:
    """Parse the string form (`app=web,tier in (a,b),!legacy`); empty means everything."""
    if not selector:
        return LabelSelector.everything()
    return LabelSelector(_Parser(selector).parse())


_DICT_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def label_selector_from_dict(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A matcher for a `metav1.LabelSelector` (`matchLabels` + `matchExpressions`).

    As in Kubernetes, None selects nothing and `{}` selects everything.
    """
    if selector is None:
        return LabelSelector.match_nothing()
    if not isinstance(selector, Mapping):
        raise BadRequest("label selector must be an object")
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    requirements = [new_requirement(str(k), EQUALS, [str(v)]) for k, v in match_labels.items()]
    for expr in expressions:
        operator = expr.get("operator", "") if isinstance(expr, Mapping) else ""
        if operator not in _DICT_OPERATORS:
            raise BadRequest(f"{_quote(str(operator))} is not a valid label selector operator")
        requirements.append(
            new_requirement(str(expr.get("key", "")), _DICT_OPERATORS[operator], expr.get("values") or [])
        )
    return LabelSelector(requirements)

"""Field selectors (`?fieldSelector=metadata.name=x,status.phase!=Running`), as Kubernetes parses them.

Unlike label selectors, field selectors only know `=`, `==` and `!=`, and values may
escape `\\`, `,` and `=` with a backslash (k8s.io/apimachinery `fields.ParseSelector`,
whose error messages are kept). Which fields a kind can be selected on is the
caller's business: it matches a selector against a flat dict of field -> string and
can check the fields used against its supported set (`field label not supported`).
A selector that pins `metadata.name` lets a list or watch read one key only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from skiff.api.errors import BadRequest

EQUALS = "="
NOT_EQUALS = "!="


@dataclass(frozen=True)
class FieldRequirement:
    """One `field=value` or `field!=value` term of a field selector."""

    field: str
    operator: str
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A field the object does not have reads as "" (Kubernetes fields.Set.Get).
        equal = fields.get(self.field, "") == self.value
        return not equal if self.operator == NOT_EQUALS else equal

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'!=' if self.operator == NOT_EQUALS else '='}{escaped}"


class FieldSelector:
    """A conjunction of field terms, matched against a flat dict of field -> string."""

    def __init__(self, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.requirements: tuple[FieldRequirement, ...] = tuple(requirements)

    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def fields(self) -> list[str]:
        """The field names the selector uses, in order, without repeats."""
        return list(dict.fromkeys(r.field for r in self.requirements))

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal for any object to match, if the selector pins it."""
        for r in self.requirements:
            if r.field == field and r.operator != NOT_EQUALS:
                return r.value
        return None

    def check_supported(self, supported: Collection[str]) -> None:
        """BadRequest `field label not supported: <f>` for a field outside `supported`."""
        for name in self.fields():
            if name not in supported:
                raise BadRequest(f"field label not supported: {name}")

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"


def _split_terms(selector: str) -> list[str]:
    terms, start, escaped = [], 0, False
    for i, c in enumerate(selector):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _unescape(value: str) -> str:
    out, escaped = [], False
    for c in value:
        if escaped:
            if c not in "\\,=":
                raise BadRequest(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            raise BadRequest(f"invalid field selector: unescaped character in value: {ord(c)}")
        else:
            out.append(c)
    if escaped:
        raise BadRequest("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(selector: str | None, supported: Collection[str] | None = None) -> FieldSelector:
    """Parse `metadata.name=x,status.phase!=Running` (`=`, `==`, `!=`; `\\`-escapes in values).

    With `supported`, a field outside it raises BadRequest `field label not supported: <f>`.
    """
    if not selector:
        return FieldSelector()
    requirements = []
    for term in sorted(_split_terms(selector)):
        if not term:
            continue
        for i in range(len(term)):
            op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
            if op is not None:
                field, raw = term[:i], term[i + len(op) :]
                break
        else:
            raise BadRequest(f"invalid selector: '{selector}'; can't understand '{term}'")
        requirements.append(FieldRequirement(field, NOT_EQUALS if op == "!=" else EQUALS, _unescape(raw)))
    result = FieldSelector(requirements)
    if supported is not None:
        result.check_supported(supported)
    return result


def exact_name(selector: FieldSelector) -> str | None:
    """The `metadata.name` a field selector requires, so a list or watch can read just that key."""
    return selector.requires_exact_match("metadata.name")


def object_fields(obj: Mapping[str, Any], *, namespaced: bool = True) -> dict[str, str]:
    """The fields every kind supports: `metadata.name` (+ `metadata.namespace` if namespaced)."""
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": str(meta.get("name") or "")}
    if namespaced:
        fields["metadata.namespace"] = str(meta.get("namespace") or "")
    return fields

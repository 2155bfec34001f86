"""Checking request bodies against a kind's schema, the way the API server decodes them.

The real API server decodes JSON into typed Go structs: a wrong type is a 400
("cannot be handled as a Deployment: json: cannot unmarshal string into Go
struct field DeploymentSpec.spec.replicas of type int32"), an unknown field is
dropped (and reported, per `fieldValidation`), and validation afterwards
rejects missing required fields with 422. skiff keeps objects as plain dicts,
so this module does that decoding step by walking the dict against the
schema, compiled once per schema into a tree of `_Node`s.

Built-in kinds are checked against the Kubernetes definitions
(`validate(obj, "io.k8s.api.apps.v1.Deployment")`); a custom resource's
OpenAPI v3 schema can be compiled with `compile_schema` and passed instead.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from skiff.api.definitions import load_definitions

Triple = tuple[str, str, str]

# node kinds
ANY, OBJECT, MAP, ARRAY, STRING, INT, NUMBER, BOOL, INT_OR_STRING, QUANTITY, BYTES, TIME = range(12)

_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_INDEX_RE = re.compile(r"\[[^\]]*\]")
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class _Node:
    """One compiled schema position: what JSON is allowed there and what lies below."""

    __slots__ = ("bits", "go", "items", "kind", "preserve", "props", "required", "struct")

    def __init__(self, kind: int, go: str = "") -> None:
        self.kind = kind
        self.go = go  # Go type named in decode messages: "int32", "[]v1.Container", ...
        self.struct = ""  # Go struct name for OBJECT: "DeploymentSpec"
        self.props: dict[str, _Node] = {}
        self.required: tuple[str, ...] = ()
        self.items: _Node | None = None  # ARRAY element / MAP value
        self.bits = ""  # "int32" / "int64" for INT
        self.preserve = False  # x-kubernetes-preserve-unknown-fields


@dataclass(frozen=True)
class CompiledSchema:
    """A schema ready for `validate`. `typed` is False for custom resources, whose
    type mismatches are 422 validation errors rather than 400 decode errors."""

    root: _Node
    typed: bool = True


@dataclass
class SchemaResult:
    """What decoding an object against its schema found.

    `decode_errors`: wrong JSON types (400 BadRequest for built-in kinds);
    `invalid`: missing required fields, and type errors of custom resources (422);
    `unknown`: paths of fields the schema does not have, e.g. `spec.containers[0].imagePullPolcy`.
    Each error is a (cause type, field path, message) triple as `errors.field_error` takes.
    """

    decode_errors: list[Triple] = field(default_factory=list)
    invalid: list[Triple] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Triple]:
        return self.decode_errors + self.invalid

    @property
    def ok(self) -> bool:
        return not (self.decode_errors or self.invalid or self.unknown)

    def decode_message(self, kind: str, version: str) -> str:
        """The 400 message: `Deployment in version "v1" cannot be handled as a Deployment: json: ...`."""
        detail = self.decode_errors[0][2] if self.decode_errors else "invalid object"
        return f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}'

    def strict_message(self) -> str:
        """The 400 message for fieldValidation=Strict."""
        return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in self.unknown)

    def warnings(self) -> list[str]:
        """`Warning` header values for fieldValidation=Warn: `299 - "unknown field \\"spec.foo\\""`."""
        return ['299 - "unknown field \\"' + p + '\\""' for p in self.unknown]


# ---------------------------------------------------------------- compiling


def _single_type(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return rest[0] if rest else None
    return t if isinstance(t, str) else None


class _Compiler:
    """Compiles JSON-schema / OpenAPI v3 fragments; named definitions are compiled once (recursion-safe)."""

    def __init__(self, defs: dict[str, dict[str, Any]]) -> None:
        self.defs = defs
        self.named: dict[str, _Node] = {}

    def ref(self, ref: str) -> _Node:
        name = ref.rsplit("/", 1)[-1]
        node = self.named.get(name)
        if node is not None:
            return node
        if name == _INT_OR_STRING:
            node = _Node(INT_OR_STRING, "intstr.IntOrString")
        elif name == _QUANTITY:
            node = _Node(QUANTITY, "resource.Quantity")
        else:
            schema = self.defs[name]
            parts = name.rsplit(".", 2)
            go = f"{parts[-2]}.{parts[-1]}" if len(parts) == 3 else parts[-1]
            node = _Node(ANY, go)
            self.named[name] = node  # before descending: definitions may be recursive
            self.fill(node, schema, parts[-1])
        self.named[name] = node
        return node

    def node(self, schema: dict[str, Any]) -> _Node:
        if "$ref" in schema:
            return self.ref(schema["$ref"])
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
            return self.ref(all_of[0]["$ref"])
        node = _Node(ANY)
        self.fill(node, schema, "")
        return node

    def fill(self, node: _Node, schema: dict[str, Any], struct: str) -> None:
        t = _single_type(schema)
        fmt = schema.get("format")
        node.preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        if schema.get("x-kubernetes-int-or-string") or fmt == "int-or-string":
            node.kind, node.go = INT_OR_STRING, "intstr.IntOrString"
        elif t == "object" and "properties" in schema:
            node.kind, node.struct = OBJECT, struct
            node.go = node.go or "struct"
            node.props = {k: self.node(v) for k, v in schema["properties"].items()}
            node.required = tuple(schema.get("required", ()))
        elif t == "object" and isinstance(schema.get("additionalProperties"), dict):
            node.kind = MAP
            node.items = self.node(schema["additionalProperties"])
            node.go = node.go or f"map[string]{node.items.go}"
        elif t == "object":
            node.kind, node.preserve = OBJECT, True
            node.go = node.go or "map[string]interface {}"
        elif t == "array":
            node.kind = ARRAY
            node.items = self.node(schema.get("items") or {})
            node.go = node.go or f"[]{node.items.go}"
        elif t == "string":
            node.kind = {"byte": BYTES, "date-time": TIME}.get(fmt or "", STRING)
            node.go = node.go if node.kind == TIME else "string" if node.kind == STRING else "[]uint8"
        elif t == "integer":
            node.kind, node.bits = INT, fmt if fmt in _INT_RANGE else "int64"
            node.go = node.bits
        elif t == "number":
            node.kind, node.go = NUMBER, "float64"
        elif t == "boolean":
            node.kind, node.go = BOOL, "bool"
        else:
            node.kind, node.go = ANY, node.go or "interface {}"


@cache
def _builtin_compiler() -> _Compiler:
    return _Compiler(load_definitions())


@cache
def compiled(schema_name: str) -> CompiledSchema:
    """The compiled schema of a built-in definition such as `io.k8s.api.apps.v1.Deployment` (cached)."""
    return CompiledSchema(_builtin_compiler().ref(schema_name), typed=True)


def compile_schema(schema: dict[str, Any]) -> CompiledSchema:
    """Compile a custom resource's OpenAPI v3 schema (`openAPIV3Schema`).

    As for real custom resources, `apiVersion`/`kind` are strings and
    `metadata` is checked as ObjectMeta whatever the schema says of them.
    """
    comp = _builtin_compiler()
    root = comp.node(schema)
    if root.kind != OBJECT:
        root = _Node(OBJECT, "map[string]interface {}")
        root.preserve = True
    root.props.setdefault("apiVersion", _Node(STRING, "string"))
    root.props.setdefault("kind", _Node(STRING, "string"))
    root.props["metadata"] = comp.ref(_OBJECT_META)
    return CompiledSchema(root, typed=False)


# ---------------------------------------------------------------- validating


def validate(
    obj: dict[str, Any],
    schema: str | CompiledSchema,
    *,
    prune: bool = False,
    check_required: bool = True,
) -> SchemaResult:
    """Check `obj` against a definition name or a compiled schema.

    With `prune`, unknown fields are also removed from `obj` in place.
    Required fields are not checked under the top-level `status` (servers
    reset status on create/update; controllers write it whole).
    """
    compiled_schema = compiled(schema) if isinstance(schema, str) else schema
    if _clean(obj, compiled_schema.root, check_required, root=True):
        return SchemaResult()  # nothing to report or prune: the common case, without building a path per field
    walker = _Walker(compiled_schema.typed, prune, check_required)
    walker.value(obj, compiled_schema.root, "", "")
    return walker.result


def _clean(val: Any, node: _Node, check_required: bool, *, root: bool = False) -> bool:
    """Whether `_Walker.value` would find nothing at all in `val`: no wrong type, bad format, unknown field or
    missing required field. It may answer False where the walker finds nothing (the walker then decides), never
    True where it would find something. Strings, the commonest leaves, are checked in their parent's loop."""
    if val is None or node.kind == ANY:
        return True
    if node.kind == OBJECT:
        return isinstance(val, dict) and _clean_object(val, node, check_required, root, False)
    return _clean_value(val, node, check_required)


def _clean_object(val: dict[str, Any], node: _Node, check_required: bool, root: bool, status: bool) -> bool:
    """`_clean` of an object; `status`: the top-level status, whose own required fields are not checked."""
    props = node.props
    for key, item in val.items():
        child = props.get(key)
        if child is None:
            if not node.preserve:
                return False
            continue
        if item is None:
            continue
        kind = child.kind
        if kind == STRING:
            if type(item) is not str:
                return False
        elif kind == OBJECT:
            if type(item) is not dict:
                return False
            if not _clean_object(item, child, check_required, False, root and key == "status"):
                return False
        elif kind != ANY and not _clean_value(item, child, check_required):
            return False
    if node.required and check_required and not status:
        for key in node.required:
            if val.get(key) is None:
                return False
    return True


def _clean_value(val: Any, node: _Node, check_required: bool) -> bool:
    """`_clean` of a non-null value that is not an OBJECT."""
    kind = node.kind
    if kind == STRING:
        return isinstance(val, str)
    if kind == ARRAY or kind == MAP:
        items = node.items
        if kind == ARRAY:
            if not isinstance(val, list):
                return False
            values: Any = val
        else:
            if not isinstance(val, dict):
                return False
            values = val.values()
        if items is None or items.kind == ANY:
            return True
        for item in values:
            if item is not None and not _clean(item, items, check_required):
                return False
        return True
    if kind == INT:
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            return False
        lo, hi = _INT_RANGE[node.bits]
        return not (isinstance(val, float) and not val.is_integer()) and lo <= val <= hi
    if kind == BOOL:
        return isinstance(val, bool)
    if kind == NUMBER:
        return not isinstance(val, bool) and isinstance(val, (int, float))
    if kind == INT_OR_STRING:
        return not isinstance(val, bool) and isinstance(val, (int, str))
    if kind == QUANTITY:
        if isinstance(val, str):
            return _QUANTITY_RE.match(val) is not None
        return not isinstance(val, bool) and isinstance(val, (int, float))
    if kind == TIME:
        return isinstance(val, str) and _TIME_RE.match(val) is not None
    return kind == ANY  # BYTES, and OBJECT in a list or map: the walker checks them


def prune_unknown(obj: dict[str, Any], schema: str | CompiledSchema) -> dict[str, Any]:
    """Drop the fields `schema` does not know, in place (as decoding into typed structs does); returns obj."""
    validate(obj, schema, prune=True, check_required=False)
    return obj


_JSON_KIND = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}
_OPENAPI_TYPE = {
    STRING: "string",
    INT: "integer",
    NUMBER: "number",
    BOOL: "boolean",
    ARRAY: "array",
    OBJECT: "object",
    MAP: "object",
    BYTES: "string",
    TIME: "string",
}


class _Walker:
    __slots__ = ("check_required", "prune", "result", "typed")

    def __init__(self, typed: bool, prune: bool, check_required: bool) -> None:
        self.typed, self.prune, self.check_required = typed, prune, check_required
        self.result = SchemaResult()

    def value(self, val: Any, node: _Node, path: str, struct: str) -> None:
        """Check one non-null value at `path`; `struct` is the Go struct holding it."""
        kind = node.kind
        if val is None or kind == ANY:
            return
        if kind == OBJECT:
            if not isinstance(val, dict):
                return self.mismatch(val, node, path, struct)
            self.object(val, node, path)
        elif kind == STRING:
            if not isinstance(val, str):
                self.mismatch(val, node, path, struct)
        elif kind == INT:
            if isinstance(val, bool) or not isinstance(val, int | float):
                return self.mismatch(val, node, path, struct)
            lo, hi = _INT_RANGE[node.bits]
            if (isinstance(val, float) and not val.is_integer()) or not lo <= val <= hi:
                self.mismatch(val, node, path, struct, number=True)
        elif kind == ARRAY:
            if not isinstance(val, list):
                return self.mismatch(val, node, path, struct)
            items = node.items
            assert items is not None
            if items.kind != ANY:
                for i, item in enumerate(val):
                    if item is not None:
                        self.value(item, items, f"{path}[{i}]", struct)
        elif kind == MAP:
            if not isinstance(val, dict):
                return self.mismatch(val, node, path, struct)
            items = node.items
            assert items is not None
            if items.kind != ANY:
                for key, item in val.items():
                    if item is not None:
                        self.value(item, items, f"{path}[{key}]", struct)
        elif kind == BOOL:
            if not isinstance(val, bool):
                self.mismatch(val, node, path, struct)
        elif kind == NUMBER:
            if isinstance(val, bool) or not isinstance(val, int | float):
                self.mismatch(val, node, path, struct)
        elif kind == INT_OR_STRING:
            if isinstance(val, bool) or not isinstance(val, int | str):
                self.mismatch(val, node, path, struct, expected="integer or string")
        elif kind == QUANTITY:
            self.quantity(val, node, path, struct)
        elif kind == BYTES:
            if not isinstance(val, str):
                self.mismatch(val, node, path, struct)
            elif self.typed:
                try:
                    binascii.a2b_base64(val.replace("\n", "").replace("\r", ""), strict_mode=True)
                except binascii.Error:
                    self.decode(path, f"illegal base64 data at input byte {_bad_base64_at(val)}")
        elif kind == TIME:
            if not isinstance(val, str):
                self.mismatch(val, node, path, struct)
            elif not _TIME_RE.match(val):
                self.decode(
                    path, f'parsing time "{val}" as "2006-01-02T15:04:05Z07:00": cannot parse "{val}"'
                )
        return None

    def object(self, val: dict[str, Any], node: _Node, path: str) -> None:
        props = node.props
        prefix = path + "." if path else ""
        drop: list[str] = []
        for key, item in val.items():
            child = props.get(key)
            if child is None:
                if not node.preserve:
                    self.result.unknown.append(prefix + key)
                    drop.append(key)
            elif item is not None and child.kind != ANY:
                self.value(item, child, prefix + key, node.struct)
        if self.prune:
            for key in drop:
                del val[key]
        if node.required and self.check_required and path != "status":
            for key in node.required:
                if val.get(key) is None:
                    self.result.invalid.append(("FieldValueRequired", prefix + key, "Required value"))

    def quantity(self, val: Any, node: _Node, path: str, struct: str) -> None:
        if isinstance(val, bool) or not isinstance(val, int | float | str):
            self.mismatch(val, node, path, struct, expected="integer or string")
        elif isinstance(val, str) and not _QUANTITY_RE.match(val):
            message = (
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            )
            if self.typed:
                self.decode(path, message)
            else:
                self.result.invalid.append(("FieldValueInvalid", path, f'Invalid value: "{val}": {message}'))

    def decode(self, path: str, message: str) -> None:
        self.result.decode_errors.append(("FieldValueTypeInvalid", path, message))

    def mismatch(
        self, val: Any, node: _Node, path: str, struct: str, *, number: bool = False, expected: str = ""
    ) -> None:
        got = _JSON_KIND.get(type(val), "value")
        if not self.typed:
            want = expected or _OPENAPI_TYPE.get(node.kind, "value")
            message = f'Invalid value: "{got}": {path} in body must be of type {want}: "{got}"'
            self.result.invalid.append(("FieldValueTypeInvalid", path, message))
            return
        if number:
            got = f"number {val!r}"
        go_path = _INDEX_RE.sub("", path)
        where = f"Go struct field {struct}.{go_path}" if struct else "Go value"
        self.decode(path, f"json: cannot unmarshal {got} into {where} of type {node.go}")


def _bad_base64_at(val: str) -> int:
    """The offset Go's base64 decoder reports (first non-alphabet byte, else the length)."""
    for i, ch in enumerate(val):
        if not (ch.isascii() and (ch.isalnum() or ch in "+/=")):
            return i
    return len(val)

"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) on plain JSON values.

`kubectl patch --type=json|merge`, `kubectl scale` and `kubectl rollout undo` send
these, and the errors follow what kube-apiserver answers (its patch handler wraps
evanphx/json-patch):

* a body that is not a JSON array of objects: 400 BadRequest
  (`json: cannot unmarshal ... into Go value of type jsonpatch.Patch`);
* more than 10000 operations: 413 `The allowed maximum operations in a JSON patch is 10000, got N`;
* any operation that cannot be applied (unknown `op`, missing `path`, a path that does
  not exist, a failed `test`, ...): 422 Invalid with Kubernetes' generic
  `the server rejected our request due to an error in our request`. Kubernetes puts
  nothing more in the Status; the precise reason is chained as the error's `__cause__`.
* a merge patch that is not a JSON object: 400 `Invalid JSON Patch`.

Inputs are never mutated; results share no structure with them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from skiff.api.errors import BadRequest, Invalid, RequestEntityTooLarge

MAX_OPERATIONS = 10000
REJECTED = "the server rejected our request due to an error in our request"

_INDEX = re.compile(r"0|[1-9][0-9]*")


class PatchError(ValueError):
    """Why an operation could not be applied (the `__cause__` of the 422)."""


def json_type(value: Any) -> str:
    """The JSON type name Go's decoder would report for a value."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null"


def json_equal(a: Any, b: Any) -> bool:
    """Deep JSON equality: `1 == 1.0`, but `true != 1` (unlike Python's ==)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def parse_pointer(pointer: Any) -> list[str]:
    """RFC 6901 reference tokens (`~1` is `/`, `~0` is `~`); `""` is the whole document."""
    if not isinstance(pointer, str):
        raise PatchError(f"path must be a string, got {json_type(pointer)}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(token: str, size: int, *, for_insert: bool) -> int:
    if for_insert and token == "-":
        return size
    if not _INDEX.fullmatch(token):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > size or (i == size and not for_insert):
        raise PatchError(f"array index {i} out of bounds (length {size})")
    return i


def _get(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"doc is missing path: {pointer!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), for_insert=False)]
        else:
            raise PatchError(f"doc is missing path: {pointer!r}")
    return node


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    parent = _get(doc, tokens[:-1], pointer)
    if not isinstance(parent, dict | list):
        raise PatchError(f"doc is missing path: {pointer!r}")
    return parent


class _Doc:
    """The document being patched; `root` may be replaced by an operation on `""`."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def add(self, pointer: str, value: Any) -> None:
        tokens = parse_pointer(pointer)
        if not tokens:
            self.root = value
            return
        parent = _parent(self.root, tokens, pointer)
        if isinstance(parent, dict):
            parent[tokens[-1]] = value
        else:
            parent.insert(_index(tokens[-1], len(parent), for_insert=True), value)

    def remove(self, pointer: str) -> Any:
        tokens = parse_pointer(pointer)
        if not tokens:
            raise PatchError("cannot remove the whole document")
        parent = _parent(self.root, tokens, pointer)
        if isinstance(parent, dict):
            if tokens[-1] not in parent:
                raise PatchError(f"unable to remove nonexistent key: {tokens[-1]}")
            return parent.pop(tokens[-1])
        return parent.pop(_index(tokens[-1], len(parent), for_insert=False))

    def replace(self, pointer: str, value: Any) -> None:
        tokens = parse_pointer(pointer)
        if not tokens:
            self.root = value
            return
        parent = _parent(self.root, tokens, pointer)
        if isinstance(parent, dict):
            if tokens[-1] not in parent:
                raise PatchError(f"replace operation does not apply: doc is missing key: {pointer!r}")
            parent[tokens[-1]] = value
        else:
            parent[_index(tokens[-1], len(parent), for_insert=False)] = value

    def get(self, pointer: str) -> Any:
        return _get(self.root, parse_pointer(pointer), pointer)


def _operand(op: dict[str, Any], name: str) -> Any:
    if name not in op:
        raise PatchError(f"operation {op.get('op')!r} is missing its {name!r} field")
    return op[name]


def _apply_one(doc: _Doc, op: dict[str, Any]) -> None:
    kind = op.get("op")
    path = _operand(op, "path")
    parse_pointer(path)
    if kind == "add":
        doc.add(path, copy.deepcopy(_operand(op, "value")))
    elif kind == "remove":
        doc.remove(path)
    elif kind == "replace":
        doc.replace(path, copy.deepcopy(_operand(op, "value")))
    elif kind == "move":
        source = _operand(op, "from")
        source_tokens = parse_pointer(source)
        if source == path:
            doc.get(source)  # must exist; moving onto itself changes nothing
        elif parse_pointer(path)[: len(source_tokens)] == source_tokens:
            raise PatchError(f"cannot move {source!r} into its own child {path!r}")
        else:
            doc.add(path, doc.remove(source))
    elif kind == "copy":
        doc.add(path, copy.deepcopy(doc.get(_operand(op, "from"))))
    elif kind == "test":
        if not json_equal(doc.get(path), _operand(op, "value")):
            raise PatchError(f"testing value {path} failed: test failed")
    else:
        raise PatchError(f"Unexpected kind: {kind}")


def json_patch(document: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operations) to `document`; returns a new value."""
    if not isinstance(operations, list):
        raise BadRequest(
            f"json: cannot unmarshal {json_type(operations)} into Go value of type jsonpatch.Patch"
        )
    for op in operations:
        if not isinstance(op, dict):
            raise BadRequest(
                f"json: cannot unmarshal {json_type(op)} into Go value of type jsonpatch.Operation"
            )
    if len(operations) > MAX_OPERATIONS:
        raise RequestEntityTooLarge(
            f"The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {len(operations)}"
        )
    doc = _Doc(copy.deepcopy(document))
    for op in operations:
        try:
            _apply_one(doc, op)
        except PatchError as e:
            raise Invalid(REJECTED) from e
    return doc.root


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 on any JSON values: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def merge_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """An `application/merge-patch+json` PATCH of an object: the patch must be a JSON object."""
    if not isinstance(patch, dict):
        raise BadRequest("Invalid JSON Patch")
    result: dict[str, Any] = json_merge_patch(obj, patch)
    return result

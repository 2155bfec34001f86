"""The Kubernetes OpenAPI definitions, loaded once from the kubernetes-validate package.

Strategic merge patch needs each field's patch strategy and merge key, server-side
apply needs list types and map keys, and schema validation needs the types
themselves. All of that lives in the JSON Schema shipped by the `kubernetes-validate`
PyPI package (a dependency of skiff): `kubernetes-json-schema/vX.Y.Z-local/_definitions.json`,
whose `$defs` are keyed like `io.k8s.api.apps.v1.Deployment` and refer to each other
with `$ref: "#/$defs/<name>"`.

This module only finds, parses and caches that file; it does not import the
package (which pulls in jsonschema), it only locates it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

_REF_PREFIX = "#/$defs/"
_VERSION_DIR = re.compile(r"^v(\d+)\.(\d+)\.(\d+)-local$")


def _schema_root() -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"


@functools.cache
def schema_directory() -> Path:
    """The newest `vX.Y.Z-local` folder of the installed kubernetes-validate package."""
    root = _schema_root()
    best: tuple[tuple[int, int, int], Path] | None = None
    for child in root.iterdir():
        m = _VERSION_DIR.match(child.name)
        if m and (child / "_definitions.json").is_file():
            version = (int(m[1]), int(m[2]), int(m[3]))
            if best is None or version > best[0]:
                best = (version, child)
    if best is None:
        raise RuntimeError(f"no vX.Y.Z-local schema folder under {root}")
    return best[1]


def kubernetes_version() -> str:
    """The Kubernetes version of the loaded definitions, e.g. `v1.37.0`."""
    return schema_directory().name.removesuffix("-local")


@functools.cache
def load_definitions() -> dict[str, dict[str, Any]]:
    """Every definition by name (`io.k8s.api.core.v1.Pod` ...). Parsed once; do not mutate."""
    with open(schema_directory() / "_definitions.json", encoding="utf-8") as f:
        document = json.load(f)
    defs: dict[str, dict[str, Any]] = document["$defs"]
    return defs


def definition(name: str) -> dict[str, Any]:
    """One definition by name; KeyError if there is none."""
    return load_definitions()[name]


def resolve_ref(ref: str) -> dict[str, Any]:
    """The definition a `$ref` string such as `#/$defs/io.k8s.api.core.v1.Pod` points to."""
    if not ref.startswith(_REF_PREFIX):
        raise KeyError(f"unsupported $ref {ref!r}")
    return definition(ref[len(_REF_PREFIX) :])


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s until a schema without one.

    A property can carry keys beside its `$ref` (description, or extensions such as
    `x-kubernetes-patch-strategy`); those are kept, layered over the target.
    """
    seen = 0
    while "$ref" in schema:
        target = resolve_ref(schema["$ref"])
        extra = {k: v for k, v in schema.items() if k not in ("$ref", "description")}
        schema = {**target, **extra} if extra else target
        seen += 1
        if seen > 64:
            raise RecursionError("$ref chain too long")
    return schema


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in load_definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk.get("group", ""), gvk["version"], gvk["kind"]), name)
    return index


def find_gvk(group: str, version: str, kind: str) -> str | None:
    """The definition name for a group/version/kind (`""` for the core group), or None."""
    return _gvk_index().get((group, version, kind))

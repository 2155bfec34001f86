"""The DefaultStorageClass admission plugin: a claim that names no class gets the default one.

As Kubernetes' `plugin/pkg/admission/storage/storageclass/setdefault`: on
PersistentVolumeClaim create, when `spec.storageClassName` is absent (an
empty string asks for no class and is left alone), the class annotated
`storageclass.kubernetes.io/is-default-class: "true"` (or the beta
annotation) is written in; of several defaults, the newest wins (then the
name). No default class leaves the claim as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from skiff.apiserver.admission_plugins.chain import Attributes, Plugin

Obj = dict[str, Any]

DEFAULT_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


class StorageClasses(Protocol):
    async def list(self) -> list[Obj]: ...


def is_default(sc: Obj) -> bool:
    annotations = (sc.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(a) == "true" for a in DEFAULT_ANNOTATIONS)


def default_class(classes: Iterable[Obj]) -> Obj | None:
    defaults = [sc for sc in classes if is_default(sc)]
    if not defaults:
        return None
    return max(defaults, key=lambda sc: (sc["metadata"].get("creationTimestamp") or "", sc["metadata"]["name"]))


class DefaultStorageClass(Plugin):
    name = "DefaultStorageClass"
    resources = frozenset({("", "persistentvolumeclaims")})

    def __init__(self, classes: StorageClasses) -> None:
        self.classes = classes

    async def admit(self, attrs: Attributes) -> None:
        if attrs.operation != "CREATE":
            return
        spec = attrs.obj.get("spec")
        if not isinstance(spec, dict) or spec.get("storageClassName") is not None:
            return
        sc = default_class(await self.classes.list())
        if sc is not None:
            spec["storageClassName"] = sc["metadata"]["name"]

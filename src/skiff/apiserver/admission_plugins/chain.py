"""The admission chain: plugins that change or refuse a write after decoding and before storage.

Kubernetes runs admission plugins (`k8s.io/apiserver/pkg/admission`) in two
phases on every create and update: mutating plugins first, before the kind's
own preparation and validation, then validating plugins, right before the
object is written. Subresource writes (status) and deletes reach only the
plugins that ask for them (`all_writes`, e.g. NodeRestriction); a delete is
validated with the object as stored. A plugin refuses with a Status error, most often
`forbidden` (as `admission.NewForbidden`), and then nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from skiff.api import errors
from skiff.apiserver.registry import ResourceType

Obj = dict[str, Any]
Operation = Literal["CREATE", "UPDATE", "DELETE"]


@dataclass(frozen=True)
class Attributes:
    """What is being written: the operation, the kind, the new object (changed in place) and the old one."""

    operation: Operation
    resource: ResourceType
    obj: Obj
    old: Obj | None = None
    dry_run: bool = False
    user: Any = None  # who asks (auth.UserInfo); None for the server's own writes
    subresource: str = ""

    @property
    def name(self) -> str:
        """The object's name as admission errors give it: its name, else its generateName, else "Unknown"."""
        meta = self.obj.get("metadata") or {}
        return str(meta.get("name") or meta.get("generateName") or "Unknown")


def forbidden(attrs: Attributes, message: str) -> errors.Forbidden:
    """Kubernetes' `admission.NewForbidden`: `pods "web" is forbidden: <message>`."""
    rt = attrs.resource
    return errors.Forbidden(
        f'{rt.group_resource} "{attrs.name}" is forbidden: {message}',
        name=attrs.name,
        group=rt.group or None,
        kind=rt.plural,
    )


class Plugin:
    """One admission plugin; it sees only the resources it names, as (group, plural) pairs."""

    name: ClassVar[str] = ""
    resources: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    all_writes: ClassVar[bool] = False  # also subresource writes and deletes

    async def admit(self, attrs: Attributes) -> None:
        """The mutating phase: change `attrs.obj` in place, or raise to refuse."""

    async def validate(self, attrs: Attributes) -> None:
        """The validating phase: raise to refuse; the object must not be changed here."""


class Chain:
    """Plugins in Kubernetes' order, looked up by resource so that other kinds pay nothing."""

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        self.plugins = list(plugins)
        self._by_resource: dict[tuple[str, str], list[Plugin]] = {}
        for plugin in self.plugins:
            for resource in plugin.resources:
                self._by_resource.setdefault(resource, []).append(plugin)

    def _for(self, attrs: Attributes) -> list[Plugin]:
        plugins = self._by_resource.get((attrs.resource.group, attrs.resource.plural), [])
        if plugins and (attrs.subresource or attrs.operation == "DELETE"):
            return [p for p in plugins if p.all_writes]
        return plugins

    async def admit(self, attrs: Attributes) -> None:
        for plugin in self._for(attrs):
            await plugin.admit(attrs)

    async def validate(self, attrs: Attributes) -> None:
        for plugin in self._for(attrs):
            await plugin.validate(attrs)

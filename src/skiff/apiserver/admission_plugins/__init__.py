"""Admission plugins: what Kubernetes' admission chain does to writes, for the kinds skiff serves.

`chain` holds the machinery (attributes, plugin base, the chain); one
module per plugin, named as Kubernetes names it. `AdmissionConfig` carries
the server flags plugins read, and `build_chain` assembles the plugins in
Kubernetes' order (Priority, then DefaultTolerationSeconds). The namespace
lifecycle check stays in the generic store, which needs it before anything
else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiff.apiserver import objects
from skiff.apiserver.admission_plugins.chain import Attributes, Chain, Plugin, forbidden
from skiff.apiserver.admission_plugins.default_toleration_seconds import DEFAULT_SECONDS, DefaultTolerationSeconds
from skiff.apiserver.admission_plugins.priority import Priority
from skiff.apiserver.options import ListOptions
from skiff.apiserver.priorityclass import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from skiff.apiserver.registry import Registry
    from skiff.apiserver.store import Store

__all__ = ["AdmissionConfig", "Attributes", "Chain", "Plugin", "build_chain", "forbidden"]

Obj = dict[str, Any]

# `skiff server` hands its admission flags to the API server through these (see AdmissionConfig.from_environment)
NOT_READY_ENV = "SKIFF_DEFAULT_NOT_READY_TOLERATION_SECONDS"
UNREACHABLE_ENV = "SKIFF_DEFAULT_UNREACHABLE_TOLERATION_SECONDS"


@dataclass(frozen=True)
class AdmissionConfig:
    """The kube-apiserver flags admission plugins read."""

    default_not_ready_toleration_seconds: int = DEFAULT_SECONDS
    default_unreachable_toleration_seconds: int = DEFAULT_SECONDS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> AdmissionConfig:
        """The flags `skiff server` parsed, as it left them in the environment (defaults where unset)."""
        return cls(
            default_not_ready_toleration_seconds=int(environ.get(NOT_READY_ENV) or DEFAULT_SECONDS),
            default_unreachable_toleration_seconds=int(environ.get(UNREACHABLE_ENV) or DEFAULT_SECONDS),
        )


class StoredPriorityClasses:
    """PriorityClasses read through the generic store (consistent reads from the watch cache)."""

    def __init__(self, store: Store, registry: Registry) -> None:
        rt = registry.get(GROUP, VERSION, PLURAL)
        assert rt is not None
        self.store, self.rt = store, rt

    async def get(self, name: str) -> Obj | None:
        kv = await self.store.read(self.rt.key(None, name))
        return objects.decode(self.rt, kv) if kv is not None else None

    async def list(self) -> list[Obj]:
        listed = await self.store.list(self.rt, None, ListOptions())
        items: list[Obj] = listed["items"]
        return items


def build_chain(config: AdmissionConfig, store: Store, registry: Registry) -> Chain:
    """The plugins skiff enables, in kube-apiserver's order."""
    return Chain(
        [
            Priority(StoredPriorityClasses(store, registry)),
            DefaultTolerationSeconds(
                not_ready_seconds=config.default_not_ready_toleration_seconds,
                unreachable_seconds=config.default_unreachable_toleration_seconds,
            ),
        ]
    )

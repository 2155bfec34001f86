"""Shared informers: one watch per resource for all the controllers of a process.

The ReplicaSet, Deployment, Endpoints and garbage-collector controllers all
need pods; with client-go's `SharedInformerFactory` they share one pod
informer (one list, one watch, one cache) and each adds its own handlers.
`InformerFactory.informer(...)` returns the same `Informer` for the same
resource, namespace and selectors; `start()` runs all of them.
"""

from __future__ import annotations

import asyncio

from skiff.client.informer import Informer
from skiff.client.resources import Resource
from skiff.client.rest import Client

_Key = tuple[Resource, str | None, str | None, str | None]


class InformerFactory:
    def __init__(self, client: Client, *, resync: float | None = None) -> None:
        self.client = client
        self.resync = resync
        self._informers: dict[_Key, Informer] = {}

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        """The shared informer for these arguments, created (not started) on first use."""
        key = (resource, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.client,
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                resync=self.resync,
            )
            self._informers[key] = informer
        return informer

    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        """Start every informer not running yet (call again after asking for more)."""
        for informer in self._informers.values():
            informer.start()

    async def wait_synced(self) -> None:
        """Wait until every informer has synced (bound it with `asyncio.timeout`)."""
        await asyncio.gather(*(i.wait_synced() for i in self._informers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self._informers.values()))

"""Which kinds the API server serves, asked at run time, and a client that reads only metadata.

The garbage collector must watch every kind that can carry ownerReferences,
and the namespace controller must empty a namespace of every namespaced
kind — including custom resources that appear after start-up. Neither can
use a fixed list: both ask the server's discovery documents (`/api/v1`,
`/apis`, then each group's preferred version), as client-go's
`ServerPreferredResources` does, and keep the verbs each resource supports.

Both only need metadata (uid, ownerReferences, finalizers, deletionTimestamp),
so `MetadataClient` asks for `PartialObjectMetadata`: lists, watches, gets and
patch answers carry `metadata` only, which keeps caches of ConfigMaps and
Secrets small (client-go's `metadata` client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from skiff.api import errors
from skiff.client import Client, Resource, ServerUnreachable

log = logging.getLogger(__name__)

# a list asks for the List form, a get/watch/patch for the single form; plain JSON if neither is served
PARTIAL_ACCEPT = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,"
    "application/json"
)


class MetadataClient(Client):
    """A view of `client` (same connection pool, same credentials) whose answers carry metadata only."""

    def __init__(self, client: Client) -> None:
        super().__init__(client.config, user_agent=client.user_agent, request_timeout=client.request_timeout)
        self.parent = client

    def session(self) -> aiohttp.ClientSession:
        return self.parent.session()

    async def close(self) -> None:
        """The connection pool is the parent client's: nothing to close here."""

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = super()._headers(content_type)
        headers["Accept"] = PARTIAL_ACCEPT
        return headers


@dataclass(frozen=True)
class APIResource:
    """A served resource (preferred version of its group) and the verbs it supports."""

    resource: Resource
    verbs: frozenset[str]

    def supports(self, *verbs: str) -> bool:
        return all(v in self.verbs for v in verbs)

    @property
    def group_resource(self) -> str:
        """`plural.group` (`configmaps.` for the core group), as namespace conditions print it."""
        return f"{self.resource.plural}.{self.resource.group}"


@dataclass
class Discovered:
    """One discovery pass: the resources found, and the group-versions that could not be read."""

    resources: list[APIResource] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # groupVersion -> error

    def kinds(self) -> dict[tuple[str, str], Resource]:
        """(group, kind) -> resource, to resolve an ownerReference's apiVersion and kind."""
        return {(r.resource.group, r.resource.kind): r.resource for r in self.resources}

    def error(self) -> str:
        listing = ", ".join(f"{gv}: {err}" for gv, err in sorted(self.failed.items()))
        return f"unable to retrieve the complete list of server APIs: {listing}"


def parse_resource_list(doc: dict[str, Any]) -> list[APIResource]:
    """The top-level resources (not subresources) of an APIResourceList."""
    gv = str(doc.get("groupVersion") or "")
    group, _, version = gv.rpartition("/")
    out = []
    for entry in doc.get("resources") or []:
        name = str(entry.get("name") or "")
        if not name or "/" in name:
            continue
        resource = Resource(group, version, name, str(entry.get("kind") or ""), bool(entry.get("namespaced")))
        out.append(APIResource(resource, frozenset(entry.get("verbs") or ())))
    return out


async def discover(client: Client) -> Discovered:
    """Every resource of the core group and of each group's preferred version.

    A group whose document cannot be read is reported in `failed` and left out (not fatal:
    callers work with what they have, as Kubernetes' controllers do); failing to read the
    group lists themselves raises.
    """
    core, groups = await asyncio.gather(client.request("GET", "/api/v1"), client.request("GET", "/apis"))
    versions = [str((g.get("preferredVersion") or {}).get("groupVersion") or "") for g in groups.get("groups") or []]
    versions = [gv for gv in versions if gv]
    docs = await asyncio.gather(*(client.request("GET", f"/apis/{gv}") for gv in versions), return_exceptions=True)
    found = Discovered(resources=parse_resource_list(core))
    for gv, doc in zip(versions, docs, strict=True):
        if isinstance(doc, errors.StatusError | ServerUnreachable):
            found.failed[gv] = str(doc)
        elif isinstance(doc, BaseException):
            raise doc
        else:
            found.resources.extend(parse_resource_list(doc))
    return found


class CachedDiscovery:
    """`discover` remembered for `ttl` seconds; concurrent callers share one pass."""

    def __init__(self, client: Client, *, ttl: float = 5.0) -> None:
        self.client = client
        self.ttl = ttl
        self._value: Discovered | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._value = None

    async def get(self) -> Discovered:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._value is None or now - self._at > self.ttl:
                self._value = await discover(self.client)
                self._at = now
            return self._value


def without(resources: Iterable[APIResource], ignored: Iterable[tuple[str, str]]) -> list[APIResource]:
    """`resources` minus those whose (group, plural) is in `ignored`."""
    skip = set(ignored)
    return [r for r in resources if (r.resource.group, r.resource.plural) not in skip]

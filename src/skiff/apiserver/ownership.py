"""Where the apiserver's write path records metadata.managedFields (see `skiff.api.managed_fields`).

Why this exists: create, update and patch (store.py) and server-side apply (patching.py) each
need the request's field manager, the kind's schema and whether status is a subresource of
its own; this module derives them once per request and calls the pure ownership logic.
"""

from __future__ import annotations

from functools import lru_cache

from skiff.api import managed_fields
from skiff.api.strategic import Schema, root_schema
from skiff.apiserver.admission import schema_name
from skiff.apiserver.objects import Obj, now_rfc3339
from skiff.apiserver.options import WriteOptions
from skiff.apiserver.registry import ResourceType


@lru_cache(maxsize=512)
def _schema(name: str | None) -> Schema:
    return root_schema(name)


def _request(rt: ResourceType, opts: WriteOptions, subresource: str) -> managed_fields.Request:
    return managed_fields.Request(
        manager=managed_fields.default_manager(opts.field_manager, opts.user_agent),
        api_version=rt.api_version,
        subresource=subresource if subresource == "status" else opts.via,
        status_separate="status" in rt.subresources,
        now=now_rfc3339(),
    )


def track(rt: ResourceType, old: Obj | None, new: Obj, opts: WriteOptions, subresource: str = "") -> None:
    """A create, update or patch other than apply: the request's manager owns what it changed."""
    if opts.apply is not None or subresource not in ("", "status"):
        return
    managed_fields.track_update(old, new, _request(rt, opts, subresource), _schema(schema_name(rt)))


def apply(rt: ResourceType, live: Obj | None, merged: Obj, opts: WriteOptions, subresource: str = "") -> Obj:
    """Server-side apply's ownership: conflicts (409), force, and removal of fields no longer applied."""
    return managed_fields.apply(live, merged, opts.apply, _request(rt, opts, subresource), _schema(schema_name(rt)),
                                force=opts.force)  # fmt: skip

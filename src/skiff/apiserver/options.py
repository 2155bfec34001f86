"""What a request asks of the generic store, and how the store says no.

Options parsed from query strings and DeleteOptions bodies, and the error
messages Kubernetes uses for missing objects and lost races, shared by the
store, deletion and subresource handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skiff.api import errors
from skiff.apiserver.registry import ResourceType
from skiff.apiserver.strategy import Strategy

NAMESPACES = ("", "v1", "namespaces")
PATCH_RETRIES = 8


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore (Kubernetes' default when unset is Warn)
    field_manager: str = ""
    user: Any = None
    user_agent: str = ""  # the default field manager (its product name) when fieldManager is not given
    apply: Any = None  # a server-side apply's configuration: its ownership is recorded by the apply itself
    force: bool = False  # force=true on an apply: take conflicting fields over
    via: str = ""  # the subresource a write of the parent came through (scale), for its managedFields entry
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListOptions:
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    preconditions: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    user: Any = None  # who asks (admission: NodeRestriction)


def strategy_of(rt: ResourceType) -> Strategy:
    return rt.strategy or Strategy()


def not_found(rt: ResourceType, name: str) -> errors.NotFound:
    return errors.NotFound(f'{rt.group_resource} "{name}" not found', name=name, group=rt.group or None, kind=rt.plural)


def conflict(rt: ResourceType, name: str, why: str) -> errors.Conflict:
    return errors.Conflict(
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
        name=name,
        group=rt.group,
        kind=rt.plural,
    )


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"

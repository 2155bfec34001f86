"""A selector watch tells ADDED / MODIFIED / DELETED from what it saw, decoding old versions only when it must."""

from __future__ import annotations

import types
from typing import Any

import orjson

from skiff.apiserver.builtin import builtin_types
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.watchstream import _Writer
from skiff.apiserver.watchwindow import CachedEvent

UNDECODABLE = b"\xff not json"  # a previous version the stream must not need


def _configmaps() -> ResourceType:
    registry = Registry()
    for rt in builtin_types():
        registry.add(rt)
    found = registry.get("", "v1", "configmaps")
    assert found is not None
    return found


def _writer(since: int) -> _Writer:
    rt = _configmaps()
    request: Any = types.SimpleNamespace(protocol=None, transport=None)

    def team_a(obj: dict[str, Any]) -> bool:
        return bool((obj["metadata"].get("labels") or {}).get("team") == "a")

    return _Writer(None, request, rt, "json", "Metadata", None, team_a, since)  # type: ignore[arg-type]


def _cm(name: str, team: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"team": team}}})


def _seen(writer: _Writer, ev: CachedEvent) -> str | None:
    line = writer.line(ev)
    return None if line is None else str(orjson.loads(line)["type"])


def test_objects_created_after_the_watch_began_need_no_old_version() -> None:
    writer = _writer(since=10)
    key = "/registry/core/configmaps/ns/x"
    assert _seen(writer, CachedEvent(11, "CREATE", key, _cm("x", "a"), None, 11)) == "ADDED"
    assert _seen(writer, CachedEvent(12, "UPDATE", key, _cm("x", "a"), UNDECODABLE, 11)) == "MODIFIED"
    assert _seen(writer, CachedEvent(13, "UPDATE", key, _cm("x", "b"), UNDECODABLE, 11)) == "DELETED"  # left
    assert _seen(writer, CachedEvent(14, "UPDATE", key, _cm("x", "b"), UNDECODABLE, 11)) is None
    assert _seen(writer, CachedEvent(15, "UPDATE", key, _cm("x", "a"), UNDECODABLE, 11)) == "ADDED"  # back
    assert _seen(writer, CachedEvent(16, "DELETE", key, _cm("x", "a"), None, 11)) == "DELETED"
    # created anew under the same name: nothing carried over from the deleted one
    assert _seen(writer, CachedEvent(17, "CREATE", key, _cm("x", "b"), None, 17)) is None
    assert _seen(writer, CachedEvent(18, "UPDATE", key, _cm("x", "a"), UNDECODABLE, 17)) == "ADDED"


def test_objects_from_before_the_watch_are_judged_by_their_old_version_until_met() -> None:
    writer = _writer(since=10)
    key = "/registry/core/configmaps/ns/old"
    # the stream never saw this object: its previous version says whether the client has it
    assert _seen(writer, CachedEvent(11, "UPDATE", key, _cm("old", "b"), _cm("old", "a"), 5)) == "DELETED"
    assert _seen(writer, CachedEvent(12, "UPDATE", key, _cm("old", "b"), _cm("old", "b"), 5)) is None
    assert _seen(writer, CachedEvent(13, "UPDATE", key, _cm("old", "a"), _cm("old", "b"), 5)) == "ADDED"
    # once it matched, the stream knows
    assert _seen(writer, CachedEvent(14, "UPDATE", key, _cm("old", "b"), UNDECODABLE, 5)) == "DELETED"
    # listed with the watch's own selectors (initial events): known to match
    listed = "/registry/core/configmaps/ns/listed"
    writer.matching.add(listed)
    assert _seen(writer, CachedEvent(15, "UPDATE", listed, _cm("listed", "a"), UNDECODABLE, 3)) == "MODIFIED"

"""Replaying what a collection went through, for tests that assert on states that may last only a moment.

Polling a list can miss a short-lived state (two pods running at once, a
moment with only the new ReplicaSet's pods) when the machine is loaded: the
poll runs too late. A watch from the resourceVersion of a list taken before
the action replays every change in the order the store made them, so the
test sees each state the collection went through, however briefly it lasted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.cluster import Server

Obj = dict[str, Any]


@dataclass
class Recording:
    """A collection listed at one resourceVersion; `states()` replays every change made to it since."""

    server: Server
    path: str  # a collection path, with or without a query (e.g. "...pods?labelSelector=app%3Dweb")
    resource_version: str = ""
    initial: dict[str, Obj] = field(default_factory=dict)

    def __post_init__(self) -> None:
        code, body, _ = self.server.raw("GET", self.path)
        assert code == 200, body
        self.resource_version = body["metadata"]["resourceVersion"]
        self.initial = {item["metadata"]["name"]: item for item in body["items"]}

    def events(self) -> list[Obj]:
        """Every watch event since the listing, in order (the replay is sent at once; the stream ends after 1 s)."""
        sep = "&" if "?" in self.path else "?"
        code, body, _ = self.server.raw(
            "GET", f"{self.path}{sep}watch=true&resourceVersion={self.resource_version}&timeoutSeconds=1"
        )
        assert code == 200, body
        if isinstance(body, dict):
            return [body]
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def states(self) -> Iterator[dict[str, Obj]]:
        """The collection as it was at the listing, then after each change (name -> object; do not keep it)."""
        state = dict(self.initial)
        yield state
        for event in self.events():
            assert event["type"] != "ERROR", event
            obj = event["object"]
            if event["type"] == "DELETED":
                state.pop(obj["metadata"]["name"], None)
            elif event["type"] in ("ADDED", "MODIFIED"):
                state[obj["metadata"]["name"]] = obj
            else:
                continue
            yield state

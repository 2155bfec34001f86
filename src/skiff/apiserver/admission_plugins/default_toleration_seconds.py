"""The DefaultTolerationSeconds admission plugin: every pod tolerates a troubled node for a while.

As Kubernetes' `plugin/pkg/admission/defaulttolerationseconds`: on pod
create and update, a pod with no toleration of the `not-ready` (or of the
`unreachable`) NoExecute taint gets one with `tolerationSeconds` (300 unless
the server's `--default-not-ready-toleration-seconds` /
`--default-unreachable-toleration-seconds` say otherwise), so that it is
evicted from a node that went silent only after that long. A toleration
with an empty key (any taint) or an empty effect (any effect) counts.
"""

from __future__ import annotations

from typing import Any

from skiff.apiserver.admission_plugins.chain import Attributes, Plugin

Obj = dict[str, Any]

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
DEFAULT_SECONDS = 300


def _tolerates(tolerations: list[Any], key: str) -> bool:
    return any(
        isinstance(t, dict) and (t.get("key") or "") in (key, "") and (t.get("effect") or "") in ("NoExecute", "")
        for t in tolerations
    )


def add_default_tolerations(spec: Obj, *, not_ready_seconds: int, unreachable_seconds: int) -> None:
    """Append the not-ready and unreachable NoExecute tolerations the pod lacks."""
    existing = spec.get("tolerations")
    tolerations: list[Any] = existing if isinstance(existing, list) else []
    missing = [
        (key, seconds)
        for key, seconds in ((NOT_READY, not_ready_seconds), (UNREACHABLE, unreachable_seconds))
        if not _tolerates(tolerations, key)
    ]
    if not missing:
        return
    for key, seconds in missing:
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds})
    spec["tolerations"] = tolerations


class DefaultTolerationSeconds(Plugin):
    name = "DefaultTolerationSeconds"
    resources = frozenset({("", "pods")})

    def __init__(self, *, not_ready_seconds: int = DEFAULT_SECONDS, unreachable_seconds: int = DEFAULT_SECONDS) -> None:
        self.not_ready_seconds = not_ready_seconds
        self.unreachable_seconds = unreachable_seconds

    async def admit(self, attrs: Attributes) -> None:
        spec = attrs.obj.get("spec")
        if isinstance(spec, dict):
            add_default_tolerations(
                spec, not_ready_seconds=self.not_ready_seconds, unreachable_seconds=self.unreachable_seconds
            )

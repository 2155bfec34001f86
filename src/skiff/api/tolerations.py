"""Kubernetes' toleration matching (Toleration.ToleratesTaint), for everyone who asks whether a pod tolerates a taint.

The DaemonSet controller (which nodes a daemon pod may run on), taint-based
eviction (which pods leave a tainted node) and admission (which default
tolerations a pod still lacks) answer the same question the same way.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Whether `toleration` tolerates `taint`: effect and key match when set; Exists, or Equal with the same value."""
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")

"""A Function object read into a typed value: the settings the gateway and the instances use.

Defaults are the CRD schema's (the API server applies them); they are repeated here so that an
object written before a default existed still reads sensibly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from skiff.api import quantity
from skiff.functions.autoscale import Policy

DEFAULT_MEMORY = "128Mi"


@dataclass(frozen=True)
class FunctionSpec:
    namespace: str
    name: str
    uid: str
    handler: str
    runtime: str = "python3.11"
    inline: str = ""
    config_map: str = ""
    image: str = ""
    env: tuple[dict[str, Any], ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 10
    min_scale: int = 0
    max_scale: int = 5
    idle_timeout: float = 30.0
    timeout_seconds: float = 30.0
    queue_depth: int = 100
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    triggers: tuple[dict[str, Any], ...] = ()
    public: bool = False  # called without a token even when the gateway checks them

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @cached_property
    def policy(self) -> Policy:
        return Policy(concurrency=self.concurrency, min_scale=self.min_scale, max_scale=self.max_scale,
                      idle_timeout=self.idle_timeout, stable_window=self.stable_window,
                      panic_window_percentage=self.panic_window_percentage,
                      panic_threshold_percentage=self.panic_threshold_percentage)  # fmt: skip

    @cached_property
    def code_digest(self) -> str:
        """What an instance runs (code, handler, env), digested: an instance with another digest is stale."""
        code = [self.inline, self.config_map, self.image, self.handler, list(self.env)]
        return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]

    @cached_property
    def memory_bytes(self) -> int:
        """The memory limit an instance runs under (what invocations are billed by)."""
        limits = self.resources.get("limits") or {}
        return int(quantity.parse(str(limits.get("memory", DEFAULT_MEMORY))))

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> FunctionSpec:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        code = spec.get("code") or {}
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            handler=str(spec.get("handler") or "handler.handle"),
            runtime=str(spec.get("runtime") or "python3.11"),
            inline=str(code.get("inline") or ""),
            config_map=str((code.get("configMap") or {}).get("name") or ""),
            image=str(code.get("image") or ""),
            env=tuple(spec.get("env") or ()),
            resources=dict(spec.get("resources") or {}),
            concurrency=int(spec.get("concurrency") or 10),
            min_scale=int(spec.get("minScale") or 0),
            max_scale=max(1, int(spec.get("maxScale") or 5)),
            idle_timeout=float(spec.get("idleTimeout") or 30),
            timeout_seconds=float(spec.get("timeoutSeconds") or 30),
            queue_depth=int(spec["queueDepth"]) if spec.get("queueDepth") is not None else 100,
            stable_window=float(spec.get("stableWindow") or 60),
            panic_window_percentage=float(spec.get("panicWindowPercentage") or 10),
            panic_threshold_percentage=float(spec.get("panicThresholdPercentage") or 200),
            triggers=tuple(spec.get("triggers") or ()),
            public=bool(spec.get("public")),
        )

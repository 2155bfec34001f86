"""The definition of the `Function` custom resource (functions.skiff.dev/v1), as data.

Serverless functions are built on the API as a user would build them: a CustomResourceDefinition
with a structural schema (bad specs are 422 Invalid from the API server), printer columns for
`kubectl get functions` and a status subresource the function gateway writes. It lives here, below
both the API server (which installs it at every start, as k3s applies its addons) and
`skiff.functions` (which uses it and brings it up to date).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GROUP = "functions.skiff.dev"
CRD_NAME = f"functions.{GROUP}"
DIGEST_ANNOTATION = f"{GROUP}/definition"  # which definition an installed CRD holds: update when it differs

_STR: dict[str, Any] = {"type": "string"}
_INT_OR_STR: dict[str, Any] = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
_QUANTITIES: dict[str, Any] = {"type": "object", "additionalProperties": _INT_OR_STR}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["handler"],
    "properties": {
        "runtime": {"type": "string", "enum": ["python3.11", "python3"], "default": "python3.11"},
        "handler": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*\.[A-Za-z_][A-Za-z0-9_]*$"},
        "code": {
            "type": "object",
            "properties": {
                "inline": _STR,
                "configMap": {"type": "object", "required": ["name"], "properties": {"name": _STR}},
                "image": _STR,
            },
        },
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _STR,
                    "value": _STR,
                    "valueFrom": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
        },
        "resources": {"type": "object", "properties": {"limits": _QUANTITIES, "requests": _QUANTITIES}},
        "concurrency": {"type": "integer", "minimum": 1, "default": 10},
        "minScale": {"type": "integer", "minimum": 0, "default": 0},
        "maxScale": {"type": "integer", "minimum": 1, "default": 5},
        "idleTimeout": {"type": "integer", "minimum": 1, "default": 30},
        "timeoutSeconds": {"type": "integer", "minimum": 1, "default": 30},
        "queueDepth": {"type": "integer", "minimum": 0, "default": 100},
        "public": {"type": "boolean", "default": False},  # no token asked even by a gateway run with --auth token
        # the autoscaler's windows (Knative's window, panic-window-percentage, panic-threshold-percentage)
        "stableWindow": {"type": "integer", "minimum": 2, "maximum": 3600, "default": 60},
        "panicWindowPercentage": {"type": "number", "minimum": 1, "maximum": 100, "default": 10},
        "panicThresholdPercentage": {"type": "number", "minimum": 110, "maximum": 1000, "default": 200},
        "triggers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["http", "cron", "event", "topic"]},
                    "schedule": _STR,
                    "kind": _STR,
                    "labelSelector": _STR,
                    "topic": _STR,
                },
            },
        },
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "replicas": {"type": "integer"},
        "invocations": {"type": "integer"},
        "errors": {"type": "integer"},
        "observedGeneration": {"type": "integer"},
        "conditions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": _STR,
                    "status": _STR,
                    "reason": _STR,
                    "message": _STR,
                    "lastTransitionTime": _STR,
                },
            },
        },
    },
}


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition of the Function kind, its definition's digest in an annotation."""
    crd = _definition()
    digest = hashlib.sha256(json.dumps(crd["spec"], sort_keys=True).encode()).hexdigest()[:16]
    crd["metadata"]["annotations"] = {DIGEST_ANNOTATION: digest}
    return crd


def _definition() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/managed-by": "skiff"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "functions",
                "singular": "function",
                "kind": "Function",
                "shortNames": ["fn"],
                "listKind": "FunctionList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": SPEC_SCHEMA, "status": STATUS_SCHEMA},
                            "required": ["spec"],
                        }
                    },
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "Invocations", "type": "integer", "jsonPath": ".status.invocations"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }

"""The `Function` custom resource (functions.skiff.dev/v1): its definition and how it is installed.

Functions are built on the API as a user would build them: a CustomResourceDefinition with a
structural schema (so bad specs are rejected by the API server with 422 Invalid), printer columns
for `kubectl get functions` and a status subresource the gateway writes (replicas, invocations,
the Ready condition). `ensure_crd` creates it, or updates it when this skiff defines it differently.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from skiff.api import errors
from skiff.client.resources import CRDS, Resource
from skiff.client.rest import Client

log = logging.getLogger(__name__)

GROUP = "functions.skiff.dev"
FUNCTIONS = Resource(GROUP, "v1", "functions", "Function", True)
CRD_NAME = f"functions.{GROUP}"
LABEL = "functions.skiff.dev/function"  # on a function's pods and code ConfigMap: the function's name

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
        "triggers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["http", "cron", "event"]},
                    "schedule": _STR,
                    "kind": _STR,
                    "labelSelector": _STR,
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
    """The CustomResourceDefinition of the Function kind."""
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


async def ensure_crd(client: Client) -> None:
    """Create (or bring up to date) the Function CRD and wait (up to 30 s) until it is Established."""
    wanted = crd_manifest()
    try:
        current = await client.get(CRDS, CRD_NAME)
    except errors.NotFound:
        try:
            await client.create(CRDS, wanted)
            log.info("installed CustomResourceDefinition %s", CRD_NAME)
        except errors.AlreadyExists:
            pass
    else:
        if current.get("spec") != wanted["spec"]:
            current["spec"] = wanted["spec"]
            await client.update(CRDS, current)
            log.info("updated CustomResourceDefinition %s", CRD_NAME)
    async with asyncio.timeout(30.0):
        while True:
            crd = await client.get(CRDS, CRD_NAME)
            conds = crd.get("status", {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                return
            await asyncio.sleep(0.1)

"""The `Function` custom resource (functions.skiff.dev/v1): its definition and how it is installed.

Functions are built on the API as a user would build them: a CustomResourceDefinition with a
structural schema (so bad specs are rejected by the API server with 422 Invalid), printer columns
for `kubectl get functions` and a status subresource the gateway writes (replicas, invocations,
the Ready condition). `ensure_crd` creates it, or updates it when this skiff defines it differently.
"""

from __future__ import annotations

import asyncio
import logging

from skiff.api import errors
from skiff.api.function_crd import CRD_NAME, DIGEST_ANNOTATION, GROUP, crd_manifest
from skiff.client.resources import CRDS, Resource
from skiff.client.rest import Client

log = logging.getLogger(__name__)

FUNCTIONS = Resource(GROUP, "v1", "functions", "Function", True)
LABEL = "functions.skiff.dev/function"  # on a function's pods and code ConfigMap: the function's name
CODE_ANNOTATION = "functions.skiff.dev/code-digest"  # on an instance's pod: the FunctionSpec.code_digest it runs


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
        annotations = current["metadata"].get("annotations") or {}
        if annotations.get(DIGEST_ANNOTATION) != wanted["metadata"]["annotations"][DIGEST_ANNOTATION]:
            current["spec"] = wanted["spec"]
            current["metadata"]["annotations"] = {**annotations, **wanted["metadata"]["annotations"]}
            await client.update(CRDS, current)
            log.info("updated CustomResourceDefinition %s", CRD_NAME)
    async with asyncio.timeout(30.0):
        while True:
            crd = await client.get(CRDS, CRD_NAME)
            conds = crd.get("status", {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                return
            await asyncio.sleep(0.1)

"""Install the Function CustomResourceDefinition at every start, so `kubectl get functions` and the
function gateway find the kind on any skiff cluster (as k3s applies its bundled addons)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from skiff.api import errors
from skiff.api.function_crd import CRD_NAME, crd_manifest
from skiff.apiserver.options import WriteOptions

if TYPE_CHECKING:
    from skiff.apiserver.registry import Registry
    from skiff.apiserver.store import Store

log = logging.getLogger(__name__)


async def ensure_function_crd(store: Store, registry: Registry) -> None:
    """Create the Function CRD when it is missing (a changed definition is updated by the gateway)."""
    rt = registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert rt is not None
    try:
        await store.create(rt, None, crd_manifest(), WriteOptions())
    except errors.AlreadyExists:
        return
    log.info("created CustomResourceDefinition %s", CRD_NAME)

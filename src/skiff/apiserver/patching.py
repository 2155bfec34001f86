"""Which patch algorithm a PATCH request's Content-Type selects, applied to one object.

The algorithms themselves are pure functions in `skiff.api.patch`; this
module maps media types to them, refuses strategic merge on kinds without a
built-in schema (as Kubernetes does for custom resources) and keeps
identity fields out of a patch's reach.
"""

from __future__ import annotations

from typing import Any

from skiff.api import errors, patch
from skiff.apiserver.admission import schema_name
from skiff.apiserver.registry import ResourceType

JSON_PATCH = "application/json-patch+json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
TYPES = (JSON_PATCH, MERGE, STRATEGIC, APPLY)

Obj = dict[str, Any]


def apply(rt: ResourceType, current: Obj, patch_type: str, body: Any) -> Any:
    if patch_type == JSON_PATCH:
        if not isinstance(body, list):
            raise errors.BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        return patch.json_patch(current, body)
    if not isinstance(body, dict):
        raise errors.BadRequest("the patch must be a JSON object")
    if patch_type == MERGE:
        return patch.merge_patch(current, body)
    if patch_type == STRATEGIC:
        if rt.extra.get("custom"):
            raise errors.UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{JSON_PATCH}, {MERGE}, {APPLY}"
            )
        return patch.strategic_merge_patch(current, body, schema_name(rt) or "")
    if patch_type == APPLY:
        return apply_to(rt, current, body)
    raise errors.UnsupportedMediaType(
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(TYPES)}"
    )


def apply_to(rt: ResourceType, current: Obj | None, body: Any) -> Obj:
    """Server-side apply: merge the applied configuration into the live object."""
    if not isinstance(body, dict):
        raise errors.BadRequest("the apply configuration must be a YAML or JSON object")
    for key in ("apiVersion", "kind"):
        if not body.get(key):
            raise errors.BadRequest(f"{key} must be set in an apply configuration")
    result: Obj = patch.apply_patch(current, body, schema_name(rt))
    return result


def sets_resource_version(patch_type: str, body: Any) -> bool:
    """Whether a patch names metadata.resourceVersion: then it is a precondition, else a retry is safe.

    The patched object always has a resourceVersion (the stored one); only a patch that sets it asks
    for the write to fail with 409 Conflict when the object moved meanwhile.
    """
    if patch_type == JSON_PATCH:
        return isinstance(body, list) and any(
            isinstance(op, dict)
            and op.get("path") == "/metadata/resourceVersion"
            and op.get("op") in ("add", "replace")
            for op in body
        )
    meta = body.get("metadata") if isinstance(body, dict) else None
    return isinstance(meta, dict) and meta.get("resourceVersion") is not None

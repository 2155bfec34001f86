"""Every patch algorithm a PATCH request can ask for, behind one import.

The API server picks one by Content-Type: `application/json-patch+json` (RFC 6902,
`json_patch`), `application/merge-patch+json` (RFC 7386, `merge_patch`),
`application/strategic-merge-patch+json` (`strategic_merge_patch`, schema driven) and
`application/apply-patch+yaml` (`apply_patch`, a simplified server-side apply). The
implementations live in `json_patch`, `strategic` and `server_side_apply`; all are
pure functions over JSON values that never mutate their inputs.
"""

from __future__ import annotations

from skiff.api.json_patch import MAX_OPERATIONS, REJECTED, json_merge_patch, json_patch, merge_patch
from skiff.api.server_side_apply import apply_patch
from skiff.api.strategic import strategic_merge_patch

__all__ = [
    "MAX_OPERATIONS",
    "REJECTED",
    "apply_patch",
    "json_merge_patch",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]

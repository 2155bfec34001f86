"""Validation of a pod's `seccompProfile` fields (pod and container securityContext), worded as Kubernetes'
`validateSeccompProfileField`: a type is required, one of three; `localhostProfile` is required with
Localhost and forbidden otherwise, and must be a relative path that does not climb out with `..`.
"""

from __future__ import annotations

from typing import Any

from skiff.api.validation import FieldErrors, invalid, not_supported, required

TYPES = ["Localhost", "RuntimeDefault", "Unconfined"]


def validate_profile(profile: Any, path: str) -> FieldErrors:
    if profile is None:
        return []
    if not isinstance(profile, dict):
        return [invalid(path, profile, "must be an object")]
    errs: FieldErrors = []
    kind = profile.get("type")
    if not kind:
        errs.append(required(f"{path}.type", "type is required when seccompProfile is set"))
    elif kind not in TYPES:
        errs.append(not_supported(f"{path}.type", kind, TYPES))
    local = profile.get("localhostProfile")
    if kind == "Localhost":
        if local is None:
            errs.append(required(f"{path}.localhostProfile", "must be set when seccomp type is Localhost"))
        elif not isinstance(local, str):
            errs.append(invalid(f"{path}.localhostProfile", local, "must be a string"))
        else:
            if local.startswith("/"):
                errs.append(invalid(f"{path}.localhostProfile", local, "must be a relative path"))
            if ".." in local.split("/"):
                errs.append(invalid(f"{path}.localhostProfile", local, "must not contain '..'"))
    elif local is not None:
        errs.append(invalid(f"{path}.localhostProfile", local, "can only be set when seccomp type is Localhost"))
    return errs


def validate_pod_seccomp(spec: dict[str, Any]) -> FieldErrors:
    """Every seccompProfile of a pod spec: the pod's and each (init, ephemeral) container's."""
    errs = validate_profile((spec.get("securityContext") or {}).get("seccompProfile"),
                            "spec.securityContext.seccompProfile")  # fmt: skip
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(group) or []):
            profile = (c.get("securityContext") or {}).get("seccompProfile") if isinstance(c, dict) else None
            errs += validate_profile(profile, f"spec.{group}[{i}].securityContext.seccompProfile")
    return errs

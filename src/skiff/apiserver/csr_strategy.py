"""The strategy of certificates.k8s.io/v1 CertificateSigningRequests (`pkg/registry/certificates/certificates`).

On create the status is emptied and the requester recorded in spec.username/uid/groups/extra,
whatever the client sent. The spec never changes after that. Three writers share the status:
the main resource writes neither (metadata only), `/status` (the signer) writes the certificate
and non-approval conditions, `/approval` (an approver: `kubectl certificate approve`) writes
only the Approved and Denied conditions. Conditions get their timestamps when they are new.
"""

from __future__ import annotations

import copy
from typing import Any

from skiff.api import csr
from skiff.apiserver.objects import now_rfc3339
from skiff.apiserver.strategy import FieldErrors, Strategy

Obj = dict[str, Any]
APPROVAL_TYPES = (csr.APPROVED, csr.DENIED)


class CSRStrategy(Strategy):
    object_subresources = ("status", "approval")

    def __init__(self) -> None:
        super().__init__(has_status=True, tracks_generation=False, selectable_fields=("spec.signerName",))

    def record_requester(self, obj: Obj, user: Any) -> None:
        spec = obj.setdefault("spec", {})
        for key in ("username", "uid", "groups", "extra"):
            spec.pop(key, None)
        if user is None:
            return
        spec["username"] = user.name
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        new["spec"] = copy.deepcopy(old.get("spec") or {})

    def prepare_for_subresource_update(self, subresource: str, new: Obj, old: Obj) -> Obj:
        merged = super().prepare_for_subresource_update(subresource, new, old)
        status = merged.setdefault("status", {})
        wanted = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        kept = [c for c in (old.get("status") or {}).get("conditions") or []]
        if subresource == "approval":
            ours = [c for c in wanted if c.get("type") in APPROVAL_TYPES]
            theirs = [c for c in kept if c.get("type") not in APPROVAL_TYPES]
            certificate = (old.get("status") or {}).get("certificate")
            if certificate:
                status["certificate"] = certificate
            else:
                status.pop("certificate", None)
        else:
            ours = [c for c in wanted if c.get("type") not in APPROVAL_TYPES]
            theirs = [c for c in kept if c.get("type") in APPROVAL_TYPES]
        conditions = [*theirs, *(_stamped(c, kept) for c in ours)]
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        return merged

    def validate(self, obj: Obj) -> FieldErrors:
        return csr.validate_csr(obj)

    def validate_update(self, new: Obj, old: Obj) -> FieldErrors:
        return []  # only metadata changes through the main resource

    def validate_subresource_update(self, subresource: str, new: Obj, old: Obj) -> FieldErrors:
        if subresource == "approval":
            return csr.validate_approval_update(new, old)
        return csr.validate_status_update(new, old)


def _stamped(cond: Obj, old: list[Obj]) -> Obj:
    """A condition with lastUpdateTime and lastTransitionTime filled in as the registry does."""
    cond = dict(cond)
    now = now_rfc3339()
    previous = next((c for c in old if c.get("type") == cond.get("type")), None)
    if not cond.get("lastUpdateTime"):
        cond["lastUpdateTime"] = now
    if not cond.get("lastTransitionTime"):
        same = previous is not None and previous.get("status") == cond.get("status")
        cond["lastTransitionTime"] = previous.get("lastTransitionTime", now) if same and previous else now
    return cond

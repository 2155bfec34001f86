"""ControllerRevisions: the history of a DaemonSet's or StatefulSet's pod template.

Deployments keep history in their ReplicaSets; DaemonSets and StatefulSets
own their pods directly, so Kubernetes (`pkg/controller/history`) snapshots
each distinct pod template in an `apps/v1 ControllerRevision`. That is what
`kubectl rollout history ds/x` lists and what `kubectl rollout undo` patches
back: `data` is a strategic merge patch `{"spec": {"template": {...,
"$patch": "replace"}}}` and `revision` a number that only grows. A template
that comes back (an undo) reuses its old revision object, renumbered as the
newest. Pods carry the revision's hash in the `controller-revision-hash`
label, which is how a controller knows which pods are up to date.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from skiff.api import errors
from skiff.client import Client, Informer, resources
from skiff.client.resources import Resource
from skiff.controllers.workloads import controlled_by, meta, owner_reference

Obj = dict[str, Any]
REVISION_HASH_LABEL = "controller-revision-hash"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet: no vowels, no look-alikes


def template_patch(owner: Obj) -> Obj:
    """The revision data for `owner`: its pod template as a replacing strategic merge patch."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def revision_hash(data: Obj, collision_count: int = 0) -> str:
    """A short, stable, label-safe hash of revision data (a collision count makes a different one)."""
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode() + str(collision_count).encode()
    digest = hashlib.sha256(raw).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


def owned_revisions(revisions: Informer, owner: Obj) -> list[Obj]:
    """The owner's ControllerRevisions from the cache, oldest revision first."""
    ns, uid = meta(owner).get("namespace"), meta(owner).get("uid", "")
    found = [r for r in revisions.list() if meta(r).get("namespace") == ns and controlled_by(r, uid)]
    return sorted(found, key=lambda r: (int(r.get("revision") or 0), meta(r).get("name", "")))


def _same_data(revision: Obj, data: Obj) -> bool:
    return json.dumps(revision.get("data"), sort_keys=True) == json.dumps(data, sort_keys=True)


async def ensure_revision(
    client: Client, revisions: Informer, owner: Obj, resource: Resource
) -> tuple[Obj, list[Obj], int]:
    """The revision for `owner`'s current template (created or renumbered as needed).

    Returns (current revision, all revisions oldest first, collisionCount to store in the status).
    """
    history = owned_revisions(revisions, owner)
    data = template_patch(owner)
    status = owner.get("status") or {}
    collision_count = int(status.get("collisionCount") or 0)
    highest = max((int(r.get("revision") or 0) for r in history), default=0)
    for rev in reversed(history):
        if _same_data(rev, data):
            if int(rev.get("revision") or 0) < highest:  # a rollback: the old snapshot becomes the newest
                updated = copy.deepcopy(rev)
                updated["revision"] = highest + 1
                rev = await client.update(resources.CONTROLLERREVISIONS, updated)
                history = [r for r in history if meta(r).get("name") != meta(rev).get("name")] + [rev]
            return rev, history, collision_count
    name_prefix = meta(owner)["name"]
    template_labels = ((owner.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    while True:
        hash_ = revision_hash(data, collision_count)
        revision: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": f"{name_prefix}-{hash_}",
                "namespace": meta(owner)["namespace"],
                "labels": {**template_labels, REVISION_HASH_LABEL: hash_},
                "annotations": dict(meta(owner).get("annotations") or {}),
                "ownerReferences": [owner_reference(owner, resource)],
            },
            "data": data,
            "revision": highest + 1,
        }
        if not revision["metadata"]["annotations"]:
            del revision["metadata"]["annotations"]
        try:
            created = await client.create(resources.CONTROLLERREVISIONS, revision)
        except errors.AlreadyExists:
            existing = await client.get(
                resources.CONTROLLERREVISIONS, revision["metadata"]["name"], namespace=meta(owner)["namespace"]
            )
            if controlled_by(existing, meta(owner).get("uid", "")) and _same_data(existing, data):
                created = existing  # made by an earlier reconcile the cache has not shown yet
            else:
                collision_count += 1  # a hash collision (or someone else's object): try another name
                continue
        return created, [*history, created], collision_count


async def truncate_history(client: Client, history: list[Obj], *, keep: int, in_use: set[str], current: str) -> None:
    """Delete the oldest revisions beyond `keep`, sparing the current one and those live pods use (by name)."""
    candidates = [r for r in history if meta(r)["name"] != current and meta(r)["name"] not in in_use]
    excess = len(candidates) - max(keep, 0)
    for rev in candidates[: max(excess, 0)]:
        try:
            await client.delete(resources.CONTROLLERREVISIONS, meta(rev)["name"], namespace=meta(rev)["namespace"])
        except errors.NotFound:
            pass


def revision_hash_of(revision: Obj) -> str:
    """The hash label of a revision (the suffix of its name when the label is missing)."""
    labels = meta(revision).get("labels") or {}
    return str(labels.get(REVISION_HASH_LABEL) or meta(revision)["name"].rsplit("-", 1)[-1])

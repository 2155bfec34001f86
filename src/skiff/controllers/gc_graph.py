"""The garbage collector's dependency graph: who owns whom, as the informers last saw it.

Deciding what to collect needs the reverse of `metadata.ownerReferences`
(an owner's dependents), for every kind at once, kept current as objects
come and go. This module is that graph and nothing else: pure, synchronous
and free of I/O, so it is unit-tested without a server, and the async
collector (`skiff.controllers.garbagecollector`) stays about API calls.

It follows Kubernetes' GraphBuilder (pkg/controller/garbagecollector):

- every object seen by an informer is a node keyed by uid, with its owner
  references; an owner not seen yet gets a *virtual* node (coordinates taken
  from the reference) that a worker verifies with a live GET;
- each change answers with `Effects`: nodes to look at (attempt to delete:
  an owner is gone, a virtual node to verify, a foreground owner whose
  dependents must go), owners whose dependents must be orphaned, and
  dependents whose owner reference crosses namespaces (a Warning event,
  `OwnerRefInvalidNamespace`);
- a *virtual delete* (a worker found the object absent) removes the node
  like an observed deletion, unless dependents disagree on the owner's
  coordinates, in which case only the matching ones are re-examined.

Owners known to be absent are remembered (`AbsentOwners`, an LRU) so that
many dependents of one deleted owner cost one lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FOREGROUND = "foregroundDeletion"  # metav1.FinalizerDeleteDependents
ORPHAN = "orphan"  # metav1.FinalizerOrphanDependents

Meta = Mapping[str, Any]  # an object's metadata
Policy = Literal["Foreground", "Background", "Orphan"]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """An object's coordinates: what an ownerReference says, plus the namespace it is looked up in.

    Field order is the sort order Kubernetes uses to pick among alternate identities
    (kind, apiVersion, namespace, name, uid).
    """

    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"[{self.api_version}/{self.kind}, namespace: {self.namespace}, name: {self.name}, uid: {self.uid}]"

    def matches(self, ref: OwnerRef) -> bool:
        """Whether `ref` names this object (uid, name, kind and apiVersion all equal)."""
        return (ref.uid, ref.name, ref.kind, ref.api_version) == (self.uid, self.name, self.kind, self.api_version)

    def as_object(self) -> dict[str, Any]:
        """A minimal object for an Event's involvedObject."""
        meta = {"name": self.name, "uid": self.uid, **({"namespace": self.namespace} if self.namespace else {})}
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta}


@dataclass(frozen=True)
class OwnerRef:
    """One entry of `metadata.ownerReferences`."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = False
    block_owner_deletion: bool = False

    @classmethod
    def parse(cls, ref: Mapping[str, Any]) -> OwnerRef | None:
        uid = ref.get("uid")
        if not uid:
            return None
        return cls(
            api_version=str(ref.get("apiVersion") or ""),
            kind=str(ref.get("kind") or ""),
            name=str(ref.get("name") or ""),
            uid=str(uid),
            controller=bool(ref.get("controller")),
            block_owner_deletion=bool(ref.get("blockOwnerDeletion")),
        )

    def identity(self, namespace: str) -> ObjectRef:
        return ObjectRef(self.kind, self.api_version, namespace, self.name, self.uid)


def owner_refs(meta: Meta | None) -> tuple[OwnerRef, ...]:
    refs = (OwnerRef.parse(r) for r in (meta or {}).get("ownerReferences") or [] if isinstance(r, Mapping))
    return tuple(r for r in refs if r is not None)


def finalizers(meta: Meta | None) -> list[str]:
    return list((meta or {}).get("finalizers") or [])


def being_deleted(meta: Meta | None) -> bool:
    return bool((meta or {}).get("deletionTimestamp"))


def _starts_waiting(old: Meta | None, new: Meta, finalizer: str) -> bool:
    """`new` is being deleted with `finalizer`, and `old` (if any) was not."""
    if not being_deleted(new) or finalizer not in finalizers(new):
        return False
    return old is None or not being_deleted(old) or finalizer not in finalizers(old)


@dataclass
class Node:
    identity: ObjectRef
    owners: tuple[OwnerRef, ...] = ()
    dependents: set[str] = field(default_factory=set)  # uids
    observed: bool = False  # False: a virtual node, known only from dependents' references
    being_deleted: bool = False
    deleting_dependents: bool = False  # being deleted with the foregroundDeletion finalizer

    @property
    def uid(self) -> str:
        return self.identity.uid


@dataclass
class Effects:
    """What one graph change asks the collector to do."""

    attempt_to_delete: list[str] = field(default_factory=list)  # uids, look now
    attempt_to_delete_later: list[str] = field(default_factory=list)  # uids, look after a backoff
    attempt_to_orphan: list[str] = field(default_factory=list)  # owner uids
    invalid_namespace: list[tuple[ObjectRef, OwnerRef]] = field(default_factory=list)  # (dependent, its ref)

    def __bool__(self) -> bool:
        return bool(self.attempt_to_delete or self.attempt_to_delete_later or self.attempt_to_orphan
                    or self.invalid_namespace)  # fmt: skip


class AbsentOwners:
    """A bounded LRU set of owner coordinates verified not to exist."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self._refs: OrderedDict[ObjectRef, None] = OrderedDict()

    def add(self, ref: ObjectRef) -> None:
        self._refs[ref] = None
        self._refs.move_to_end(ref)
        while len(self._refs) > self.size:
            self._refs.popitem(last=False)

    def __contains__(self, ref: object) -> bool:
        if ref in self._refs:
            self._refs.move_to_end(ref)  # type: ignore[arg-type]
            return True
        return False

    def __len__(self) -> int:
        return len(self._refs)


class DependencyGraph:
    """Nodes by uid with owner → dependents edges, updated from informer events."""

    def __init__(self, *, absent_cache_size: int = 500) -> None:
        self.nodes: dict[str, Node] = {}
        self.absent = AbsentOwners(absent_cache_size)

    # --- reading ------------------------------------------------------------------------------
    def get(self, uid: str) -> Node | None:
        return self.nodes.get(uid)

    def __len__(self) -> int:
        return len(self.nodes)

    def dependents(self, node: Node) -> list[Node]:
        return [d for d in (self.nodes.get(uid) for uid in sorted(node.dependents)) if d is not None]

    def blocking_dependents(self, node: Node) -> list[Node]:
        """Dependents whose reference to `node` has blockOwnerDeletion: they hold a foreground deletion."""
        return [
            dep
            for dep in self.dependents(node)
            if any(ref.uid == node.uid and ref.block_owner_deletion for ref in dep.owners)
        ]

    # --- informer events ----------------------------------------------------------------------
    def observe(self, api_version: str, kind: str, meta: Meta, old: Meta | None = None) -> Effects:
        """An object was added or changed (`old`: its previous metadata, None when first seen)."""
        fx = Effects()
        uid = str(meta.get("uid") or "")
        if not uid:
            return fx
        identity = _identity(api_version, kind, meta)
        existing = self._mark_observed(identity, fx)
        refs = owner_refs(meta)
        if existing is None:
            node = Node(
                identity,
                owners=refs,
                observed=True,
                being_deleted=being_deleted(meta),
                deleting_dependents=being_deleted(meta) and FOREGROUND in finalizers(meta),
            )
            self.nodes[uid] = node
            self._add_dependent_to_owners(node, refs, fx)
            self._transitions(old, meta, node, fx)
            return fx
        added, removed, changed = _diff(existing.owners, refs)
        if added or removed or changed:
            self._unblocked_owners(removed, changed, fx)
            existing.owners = refs
            self._add_dependent_to_owners(existing, added, fx)
            self._remove_dependent_from_owners(existing, removed)
        if being_deleted(meta):
            existing.being_deleted = True
        self._transitions(old, meta, existing, fx)
        return fx

    def observe_deleted(self, api_version: str, kind: str, meta: Meta) -> Effects:
        """An informer saw the object deleted."""
        fx = Effects()
        uid = str(meta.get("uid") or "")
        if not uid:
            return fx
        identity = _identity(api_version, kind, meta)
        existing = self._mark_observed(identity, fx)
        if existing is not None:
            self._remove(existing, identity, fx)
        return fx

    def virtual_delete(self, identity: ObjectRef) -> Effects:
        """A worker verified that `identity` does not exist (404, or another uid under that name)."""
        fx = Effects()
        existing = self.nodes.get(identity.uid)
        if existing is None:
            return fx
        if not existing.observed:
            # a virtual node: dependents may disagree about its coordinates
            matching, nonmatching = self._partition(existing, identity)
            if nonmatching:
                if matching:
                    self.absent.add(identity)
                    fx.attempt_to_delete.extend(d.uid for d in matching)
                if existing.identity == identity:
                    replacement = _alternate_identity(nonmatching, identity)
                    if replacement is not None:
                        existing.identity = replacement  # verify the other coordinates next
                        fx.attempt_to_delete_later.append(existing.uid)
                return fx
        elif existing.identity != identity:
            # the real object exists under other coordinates: only dependents naming these are affected
            matching, _ = self._partition(existing, identity)
            if matching:
                self.absent.add(identity)
                fx.attempt_to_delete.extend(d.uid for d in matching)
            return fx
        self._remove(existing, identity, fx)
        return fx

    # --- internals ----------------------------------------------------------------------------
    def _mark_observed(self, identity: ObjectRef, fx: Effects) -> Node | None:
        """The node for `identity`, marked observed; a virtual node takes the observed coordinates."""
        existing = self.nodes.get(identity.uid)
        if existing is None or existing.observed:
            return existing
        if identity != existing.identity:
            _, invalid = self._partition(existing, identity)
            for dep in invalid:
                if identity.namespace and dep.identity.namespace != identity.namespace:
                    ref = next((r for r in dep.owners if r.uid == identity.uid), None)
                    if ref is not None:
                        fx.invalid_namespace.append((dep.identity, ref))
                fx.attempt_to_delete.append(dep.uid)
            existing.identity = identity
        existing.observed = True
        return existing

    def _remove(self, node: Node, identity: ObjectRef, fx: Effects) -> None:
        del self.nodes[node.uid]
        self._remove_dependent_from_owners(node, node.owners)
        if node.dependents:
            self.absent.add(identity)
        fx.attempt_to_delete.extend(sorted(node.dependents))
        for ref in node.owners:
            owner = self.nodes.get(ref.uid)
            if owner is not None and owner.deleting_dependents:
                fx.attempt_to_delete.append(owner.uid)  # maybe its last blocking dependent went

    def _add_dependent_to_owners(self, node: Node, refs: Iterable[OwnerRef], fx: Effects) -> None:
        potentially_invalid = False
        for ref in refs:
            owner = self.nodes.get(ref.uid)
            if owner is None:
                owner = Node(ref.identity(node.identity.namespace))
                self.nodes[ref.uid] = owner
                owner.dependents.add(node.uid)
                fx.attempt_to_delete.append(owner.uid)  # verify the virtual owner exists
                continue
            owner.dependents.add(node.uid)
            if potentially_invalid:
                continue
            owner_ns = owner.identity.namespace
            if owner_ns and owner_ns != node.identity.namespace:
                if owner.observed:  # definitely wrong: namespaced owners live in their dependents' namespace
                    fx.invalid_namespace.append((node.identity, ref))
                potentially_invalid = True
            elif not owner.identity.matches(ref):
                potentially_invalid = True
            elif not owner_ns and node.identity.namespace and not owner.observed:
                # a cluster-scoped-looking virtual owner from a namespaced dependent: may be a namespaced kind
                potentially_invalid = True
        if potentially_invalid:
            fx.attempt_to_delete.append(node.uid)

    def _remove_dependent_from_owners(self, node: Node, refs: Iterable[OwnerRef]) -> None:
        for ref in refs:
            owner = self.nodes.get(ref.uid)
            if owner is not None:
                owner.dependents.discard(node.uid)

    def _unblocked_owners(
        self, removed: Iterable[OwnerRef], changed: Iterable[tuple[OwnerRef, OwnerRef]], fx: Effects
    ) -> None:
        """Owners a dependent stopped blocking (reference removed or unblocked) may finish a foreground delete."""
        for ref in removed:
            if ref.block_owner_deletion and ref.uid in self.nodes:
                fx.attempt_to_delete.append(ref.uid)
        for old, new in changed:
            if old.block_owner_deletion and not new.block_owner_deletion and new.uid in self.nodes:
                fx.attempt_to_delete.append(new.uid)

    def _transitions(self, old: Meta | None, new: Meta, node: Node, fx: Effects) -> None:
        if _starts_waiting(old, new, ORPHAN):
            fx.attempt_to_orphan.append(node.uid)
            return
        if _starts_waiting(old, new, FOREGROUND):
            node.deleting_dependents = True
            fx.attempt_to_delete.extend(sorted(node.dependents))
            fx.attempt_to_delete.append(node.uid)

    def _partition(self, owner: Node, identity: ObjectRef) -> tuple[list[Node], list[Node]]:
        """Dependents of `owner` whose reference matches `identity`, and those whose reference does not.

        A dependent with several references to the uid can be in both lists.
        """
        matching: list[Node] = []
        nonmatching: list[Node] = []
        for dep in self.dependents(owner):
            found_match = found_mismatch = False
            if identity.namespace and identity.namespace != dep.identity.namespace:
                found_mismatch = True
            else:
                for ref in dep.owners:
                    if ref.uid == identity.uid:
                        if identity.matches(ref):
                            found_match = True
                        else:
                            found_mismatch = True
            if found_match:
                matching.append(dep)
            if found_mismatch:
                nonmatching.append(dep)
        return matching, nonmatching


def _identity(api_version: str, kind: str, meta: Meta) -> ObjectRef:
    return ObjectRef(kind, api_version, str(meta.get("namespace") or ""), str(meta.get("name") or ""),
                     str(meta.get("uid") or ""))  # fmt: skip


def _diff(
    old: tuple[OwnerRef, ...], new: tuple[OwnerRef, ...]
) -> tuple[list[OwnerRef], list[OwnerRef], list[tuple[OwnerRef, OwnerRef]]]:
    """(added, removed, changed) references between two ownerReference lists, matched by uid."""
    old_by_uid = {r.uid: r for r in old}
    added: list[OwnerRef] = []
    changed: list[tuple[OwnerRef, OwnerRef]] = []
    for ref in new:
        prev = old_by_uid.pop(ref.uid, None)
        if prev is None:
            added.append(ref)
        elif prev != ref:
            changed.append((prev, ref))
    return added, list(old_by_uid.values()), changed


def _alternate_identity(deps: Iterable[Node], absent: ObjectRef) -> ObjectRef | None:
    """Another identity dependents give the uid of `absent`: the first following it in sort order, else the first."""
    cluster_scoped = not absent.namespace
    seen = {absent}
    first: ObjectRef | None = None
    following: ObjectRef | None = None
    for dep in deps:
        for ref in dep.owners:
            if ref.uid != absent.uid:
                continue
            if absent.matches(ref) and (cluster_scoped or absent.namespace == dep.identity.namespace):
                continue
            alt = ref.identity(dep.identity.namespace)
            if cluster_scoped and (alt.api_version, alt.kind) == (absent.api_version, absent.kind):
                alt = ref.identity("")  # that kind is known to be cluster-scoped
            if alt in seen:
                continue
            seen.add(alt)
            if first is None or alt < first:
                first = alt
            if absent < alt and (following is None or alt < following):
                following = alt
    return following or first


# --- deciding about one object ------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What to do with an object whose owners were classified (see `plan`)."""

    action: Literal["keep", "remove_refs", "delete"]
    remove_uids: tuple[str, ...] = ()  # remove_refs: the references to drop
    policy: Policy | None = None  # delete: the propagation policy
    unblock_first: bool = False  # delete: make its own references non-blocking first (cycle guard)


def plan(
    item: Node,
    item_finalizers: Iterable[str],
    *,
    solid: Iterable[OwnerRef],
    dangling: Iterable[OwnerRef],
    waiting: Iterable[OwnerRef],
    dependents: Iterable[Node],
) -> Plan:
    """Kubernetes' attemptToDeleteItem decision, given the owners classified by live lookups.

    `solid`: owners that exist and are not deleting their dependents; `dangling`: owners that
    do not exist; `waiting`: owners being deleted in the foreground.
    """
    solid, dangling, waiting, deps = list(solid), list(dangling), list(waiting), list(dependents)
    if solid:
        if not dangling and not waiting:
            return Plan("keep")
        # references to foreground owners must go too, or those owners wait for this object forever
        return Plan("remove_refs", remove_uids=tuple(r.uid for r in dangling + waiting))
    if waiting and deps:
        # its owner waits for it, and it has dependents of its own: delete it in the foreground too
        return Plan("delete", policy="Foreground", unblock_first=any(d.deleting_dependents for d in deps))
    fins = set(item_finalizers)
    policy: Policy = "Orphan" if ORPHAN in fins else "Foreground" if FOREGROUND in fins else "Background"
    return Plan("delete", policy=policy)

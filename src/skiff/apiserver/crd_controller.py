"""The CRD controller inside the API server: a CRD's kind is served as soon as it is stored.

The API server owns the registry, so this controller follows CRDs through
the watch cache (not over HTTP) and, for each one, does what
apiextensions-apiserver's naming, establishing and finalizing controllers do:

- names: the CRD's plural, singular, short names, kind and list kind must not
  be taken by another CRD of the same group; `NamesAccepted` says so
  (`NoConflicts`, or `KindConflict`/`PluralConflict`/... with
  `"Widget" is already in use`), `status.acceptedNames` records them;
- serving: the served versions go into the registry (discovery, OpenAPI,
  REST all follow), then `Established` turns True (`InitialNamesAccepted`),
  so `kubectl wait --for=condition=Established` means "usable now";
- deleting: a CRD being deleted (cleanup finalizer, see `crd_strategy`)
  refuses new objects, has every object deleted, then loses its finalizer
  and is removed; its kind then leaves the registry.

One worker handles one CRD at a time (names are decided in order); a
failed reconcile is retried after a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

from skiff.api import crd_validation, errors
from skiff.apiserver import objects
from skiff.apiserver.crd_strategy import condition_true, set_condition
from skiff.apiserver.crd_types import resource_types
from skiff.apiserver.options import DeleteOptions, ListOptions, WriteOptions
from skiff.apiserver.registry import Registry, ResourceType
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.apiserver.watchfanout import Subscription

log = logging.getLogger(__name__)
Obj = dict[str, Any]
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAME_FIELDS = (("plural", "PluralConflict"), ("singular", "SingularConflict"), ("kind", "KindConflict"),
               ("listKind", "ListKindConflict"))  # fmt: skip
RETRY_SECONDS = 1.0


class CRDController:
    def __init__(self, store: Store, registry: Registry, cache: WatchCache) -> None:
        self.store, self.registry, self.cache = store, registry, cache
        crd_rt = registry.get(*CRDS)
        assert crd_rt is not None
        self.crd_rt: ResourceType = crd_rt
        self.crds: dict[str, Obj] = {}  # name -> latest CRD seen
        self.installed: dict[str, set[tuple[str, str, str]]] = {}  # CRD name -> registry keys
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Serve every stored CRD before returning (the server is not ready before), then follow changes."""
        revision = await self._relist()
        self._sub = await self.cache.subscribe(self.crd_rt.storage_prefix, revision)
        self._tasks = [
            asyncio.create_task(self._follow(), name="crd-controller watch"),
            asyncio.create_task(self._work(), name="crd-controller worker"),
        ]

    async def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _relist(self) -> int:
        listed = await self.store.list(self.crd_rt, None, ListOptions())
        self.crds = {crd["metadata"]["name"]: crd for crd in listed["items"]}
        for name, crd in self.crds.items():
            if condition_true(crd, "Established"):
                self._install(name, crd)
            self._enqueue(name)
        for name in list(self.installed):
            if name not in self.crds:
                self._uninstall(name)
        return int(listed["metadata"]["resourceVersion"])

    async def _follow(self) -> None:
        while True:
            sub = self._sub
            assert sub is not None
            ev = await sub.queue.get()
            if ev is None:  # the watch ended (backlog or storage trouble): list again and resubscribe
                sub.close()
                await asyncio.sleep(RETRY_SECONDS)
                try:
                    self._sub = await self.cache.subscribe(self.crd_rt.storage_prefix, await self._relist())
                except Exception:
                    log.exception("CRD controller: resubscribing failed")
                    self._sub = sub
                continue
            name = ev.key.rsplit("/", 1)[-1]
            if ev.type == "DELETE":
                gone = self.crds.pop(name, None)
                if gone is None and ev.prev_value:
                    gone = objects.loads(ev.prev_value)
                group = ((gone or {}).get("spec") or {}).get("group")
            else:
                self.crds[name] = objects.loads(ev.value)
                group = (self.crds[name].get("spec") or {}).get("group")
            self._enqueue(name)
            # names another CRD of the group gave up or changed may now be free for those that wanted them
            for other, crd in self.crds.items():
                if other != name and (crd.get("spec") or {}).get("group") == group:
                    if not condition_true(crd, "NamesAccepted"):
                        self._enqueue(other)

    def _enqueue(self, name: str) -> None:
        if name not in self._queued:
            self._queued.add(name)
            self.queue.put_nowait(name)

    async def _work(self) -> None:
        while True:
            name = await self.queue.get()
            self._queued.discard(name)
            try:
                again = await self.reconcile(name)
            except Exception as exc:
                if not isinstance(exc, errors.Conflict | errors.NotFound):
                    log.exception("CRD controller: reconciling %s failed", name)
                again = True
            if again:
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self._enqueue, name)

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, name: str) -> bool:
        """Bring the registry and `name`'s status in line with the CRD; True: try again later."""
        try:
            crd = await self.store.get(self.crd_rt, None, name)
        except errors.NotFound:
            self._uninstall(name)
            return False
        self.crds[name] = crd
        if crd["metadata"].get("deletionTimestamp"):
            return await self._finalize(name, crd)
        status = copy.deepcopy(crd.get("status") or {})
        accepted, reason, message = self._accepted_names(crd)
        now = objects.now_rfc3339()
        if reason:
            set_condition(status, "NamesAccepted", "False", reason, message, now)
            if not condition_true(crd, "Established"):
                set_condition(status, "Established", "False", "NotAccepted", "not all names are accepted", now)
        else:
            status["acceptedNames"] = accepted
            set_condition(status, "NamesAccepted", "True", "NoConflicts", "no conflicts found", now)
        if not reason or condition_true(crd, "Established"):
            self._install(name, {**crd, "status": status})
            set_condition(status, "Established", "True", "InitialNamesAccepted",
                          "the initial names have been accepted", now)  # fmt: skip
        await self._write_status(crd, status)
        return False

    def _accepted_names(self, crd: Obj) -> tuple[Obj, str, str]:
        """(names to accept, conflict reason or "", message): names of other CRDs of the group are taken."""
        spec = crd.get("spec") or {}
        wanted = copy.deepcopy(spec.get("names") or {})
        group, me = spec.get("group"), crd["metadata"]["name"]
        taken: dict[str, set[str]] = {key: set() for key, _ in NAME_FIELDS}
        taken["shortNames"] = set()
        for other_name, other in self.crds.items():
            ospec = other.get("spec") or {}
            if other_name == me or ospec.get("group") != group:
                continue
            names = (other.get("status") or {}).get("acceptedNames") or {}
            for key, _reason in NAME_FIELDS:
                if names.get(key):
                    taken[key].add(names[key])
            taken["shortNames"].update(names.get("shortNames") or ())
        # checked in Kubernetes' order; as there, the last conflict found is the one reported
        conflict = ("", "")
        for key, reason in NAME_FIELDS:
            value = wanted.get(key)
            if value and value in taken[key]:
                conflict = (reason, f'"{value}" is already in use')
            if key == "singular":
                for short in wanted.get("shortNames") or ():
                    if short in taken["shortNames"]:
                        conflict = ("ShortNamesConflict", f'"{short}" is already in use')
        return ({}, *conflict) if conflict[0] else (wanted, "", "")

    async def _write_status(self, crd: Obj, status: Obj) -> None:
        if status == crd.get("status"):
            return
        body = {**crd, "status": status}
        written = await self.store.update(self.crd_rt, None, crd["metadata"]["name"], body, WriteOptions(),
                                          subresource="status")  # fmt: skip
        self.crds[crd["metadata"]["name"]] = written

    async def _finalize(self, name: str, crd: Obj) -> bool:
        """Delete every object of the kind, then drop the cleanup finalizer (the CRD then goes)."""
        finalizers = list(crd["metadata"].get("finalizers") or [])
        if crd_validation.CLEANUP_FINALIZER not in finalizers:
            return False
        rts = resource_types(crd, terminating=True)
        if not rts:
            remaining = 0
        else:
            self._install(name, crd, terminating=True)
            rt = rts[0]
            status = copy.deepcopy(crd.get("status") or {})
            now = objects.now_rfc3339()
            set_condition(status, "Terminating", "True", "InstanceDeletionInProgress",
                          "CustomResource deletion is in progress", now)  # fmt: skip
            await self._write_status(crd, status)
            await self.store.delete_collection(rt, None, ListOptions(), DeleteOptions())
            remaining = len((await self.store.list(rt, None, ListOptions()))["items"])
        if remaining:
            return True  # objects with finalizers of their own: wait for them
        crd = await self.store.get(self.crd_rt, None, name)
        crd["metadata"]["finalizers"] = [
            f for f in crd["metadata"].get("finalizers") or [] if f != crd_validation.CLEANUP_FINALIZER
        ]
        await self.store.update(self.crd_rt, None, name, crd, WriteOptions())
        return False

    # ------------------------------------------------------------------ registry
    def _install(self, name: str, crd: Obj, *, terminating: bool = False) -> None:
        rts = resource_types(crd, terminating=terminating)
        keys = {(rt.group, rt.version, rt.plural) for rt in rts}
        for key in self.installed.get(name, set()) - keys:
            self.registry.remove(*key)
        for rt in rts:
            current = self.registry.get(rt.group, rt.version, rt.plural)
            if current is not None and current.extra.get("crd") != name:
                continue  # a built-in kind or another CRD's: never replaced
            if current is None or not _same(current, rt):
                self.registry.add(rt)
        self.installed[name] = keys

    def _uninstall(self, name: str) -> None:
        for key in self.installed.pop(name, set()):
            current = self.registry.get(*key)
            if current is not None and current.extra.get("crd") == name:
                self.registry.remove(*key)


def _same(a: ResourceType, b: ResourceType) -> bool:
    """Whether two types of one CRD serve identically (no registry change, no OpenAPI rebuild)."""
    fields = ("kind", "plural", "singular", "namespaced", "short_names", "categories", "subresources",
              "storage_version")  # fmt: skip
    return (
        all(getattr(a, f) == getattr(b, f) for f in fields)
        and _served_extra(a) == _served_extra(b)
        and getattr(a.strategy, "terminating", None) == getattr(b.strategy, "terminating", None)
    )


def _served_extra(rt: ResourceType) -> dict[str, Any]:
    """What a type carries for serving, without its compiled schema (which compares by identity)."""
    return {k: v for k, v in rt.extra.items() if k != "structural"}

"""Informers: list, then watch, into a local cache, and tell handlers what changed.

The reflector loop of client-go, for one resource (optionally one namespace
and selectors):

- list everything (paged) and remember the list's resourceVersion;
- watch from there with bookmarks, applying each event to the cache and
  calling `on_add(obj)` / `on_update(old, new)` / `on_delete(obj)`;
  bookmarks only advance the resourceVersion;
- when the stream ends, watch again from the last resourceVersion; when the
  server cannot be reached, back off and watch again from there;
- on 410 Gone (history compacted while away) or another API error, list
  again and emit only the difference to the cache (added, changed, deleted),
  so handlers see what happened while the informer was not looking;
- every `resync` seconds, `on_update(obj, obj)` for every cached object, so
  level-triggered controllers re-check even when nothing changes.

Handlers run in the informer's task, one at a time, and should only enqueue
keys. Cached objects are shared: read them, and `copy.deepcopy` before
changing one (see `skiff.client.cache`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skiff.api import errors
from skiff.client.cache import Cache, IndexFunc, Obj, object_key
from skiff.client.errors import ServerUnreachable
from skiff.client.ratelimit import Backoff
from skiff.client.resources import Resource
from skiff.client.rest import Client
from skiff.client.tasks import cancel_and_wait, spawn, wait_or_stop

log = logging.getLogger(__name__)
_HANDLER_ATTRS = {"add": "on_add", "update": "on_update", "delete": "on_delete"}
AddHandler = Callable[[Obj], object]  # may return an awaitable (async handlers): it is awaited
UpdateHandler = Callable[[Obj, Obj], object]
DeleteHandler = Callable[[Obj], object]
SHORT_WATCH = 1.0  # a watch that ends this soon without events counts as a failure (backoff)


@dataclass(frozen=True)
class Handlers:
    on_add: AddHandler | None = None
    on_update: UpdateHandler | None = None
    on_delete: DeleteHandler | None = None


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """A cache of one resource kept in step with the server by list + watch."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync: float | None = None,
        page_size: int = 500,
        backoff: Backoff | None = None,
        watch_timeout: tuple[int, int] = (300, 600),
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync = resync
        self.page_size = page_size
        self.backoff = backoff or Backoff(0.8, 30.0)
        self.watch_timeout = watch_timeout
        self.cache = Cache()
        self.resource_version = ""  # the last resourceVersion seen (list, event or bookmark)
        self.relists = 0  # how many times the informer listed (1 = only the initial list)
        self.name = f"informer/{resource.plural}" + (f"/{namespace}" if namespace else "")
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- reading ------------------------------------------------------------------------------
    def get(self, key: str) -> Obj | None:
        """The cached object under `namespace/name` (or `name`); read-only, deepcopy before changing."""
        return self.cache.get(key)

    def list(self) -> builtins.list[Obj]:
        return self.cache.list()

    def keys(self) -> builtins.list[str]:
        return self.cache.keys()

    def add_index(self, name: str, fn: IndexFunc) -> None:
        self.cache.add_index(name, fn)

    def by_index(self, name: str, value: str) -> builtins.list[Obj]:
        return self.cache.by_index(name, value)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Wait until the first list is in the cache and handed to handlers (bound it with `asyncio.timeout`)."""
        await self._synced.wait()

    # --- handlers -----------------------------------------------------------------------------
    def add_handlers(
        self,
        *,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """Register callbacks (sync or async). Registered after the first sync, on_add is replayed for the cache."""
        handlers = Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if self.has_synced and on_add is not None:
            spawn(self._replay(handlers), name=f"{self.name}/replay", logger=log)

    async def _replay(self, handlers: Handlers) -> None:
        for obj in self.cache.list():
            await self._emit_to(handlers, "add", obj)

    async def _emit(self, kind: str, *objs: Obj) -> None:
        for handlers in list(self._handlers):
            await self._emit_to(handlers, kind, *objs)

    async def _emit_to(self, handlers: Handlers, kind: str, *objs: Obj) -> None:
        """Call one handler; a sync one (most are: they enqueue a key) costs no extra coroutine."""
        fn: Callable[..., Any] | None = getattr(handlers, _HANDLER_ATTRS[kind])
        if fn is None:
            return
        try:
            result = fn(*objs)
        except Exception:
            log.exception("%s on_%s handler failed", self.name, kind)
            return
        if result is not None and inspect.isawaitable(result):
            try:
                await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s on_%s handler failed", self.name, kind)

    # --- running ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Run in a background task (once; later calls return the same task).

        Started again after `stop()`, the informer keeps its cache and watches from its last
        resourceVersion; if that is compacted away (410) it lists again and emits the difference.
        """
        if self._task is None or self._task.done():
            self._task = spawn(self.run(), name=self.name, logger=log)
        return self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """List and watch until `stop` is set (or the task is cancelled)."""
        resync = spawn(self._resync_loop(), name=f"{self.name}/resync", logger=log) if self.resync else None
        try:
            if stop is None:
                await self._list_and_watch()
            else:
                await wait_or_stop(self._list_and_watch(), stop)
        finally:
            if resync is not None:
                await cancel_and_wait([resync])

    async def _list_and_watch(self) -> None:
        need_list = not (self.has_synced and self.resource_version)  # a restarted informer resumes its watch
        while True:
            if need_list:
                try:
                    await self._relist()
                except (errors.StatusError, ServerUnreachable) as exc:
                    log.warning("%s: list failed: %s", self.name, exc)
                    await self.backoff.sleep()
                    continue
                except Exception:
                    log.exception("%s: list failed", self.name)
                    await self.backoff.sleep()
                    continue
                need_list = False
                self.backoff.reset()
            started, seen = asyncio.get_running_loop().time(), 0
            try:
                seen = await self._watch()
            except errors.Gone as exc:
                log.info("%s: watch from %s expired (%s); listing again", self.name, self.resource_version, exc)
                need_list = True
                continue
            except ServerUnreachable as exc:
                log.warning("%s: %s", self.name, exc)  # keep the resourceVersion: the server likely has it still
                await self.backoff.sleep()
                continue
            except errors.StatusError as exc:
                log.warning("%s: watch failed: %s; listing again", self.name, exc)
                need_list = True
                await self.backoff.sleep()
                continue
            except Exception:  # a bug or a garbled stream must not leave the cache stale forever
                log.exception("%s: watch failed; listing again", self.name)
                need_list = True
                await self.backoff.sleep()
                continue
            if seen == 0 and asyncio.get_running_loop().time() - started < SHORT_WATCH:
                await self.backoff.sleep()  # the server ends our watches at once: do not spin
            else:
                self.backoff.reset()

    async def _list_all(self) -> tuple[builtins.list[Obj], str]:
        items: builtins.list[Obj] = []
        token: str | None = None
        rv = ""
        while True:
            try:
                page = await self.client.list(
                    self.resource,
                    namespace=self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    limit=self.page_size if self.page_size else None,
                    continue_=token,
                )
            except errors.Gone:
                if token is None:
                    raise
                log.info("%s: list continuation expired; listing in one page", self.name)
                items, token, self.page_size = [], None, 0
                continue
            items.extend(page["items"])
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            token = meta.get("continue") or None
            if token is None:
                return items, rv

    async def _relist(self) -> None:
        items, rv = await self._list_all()
        old = self.cache.items()
        self.cache.replace(items)
        self.resource_version = rv
        self.relists += 1
        current = self.cache.items()
        for key, obj in current.items():
            prev = old.get(key)
            if prev is None:
                await self._emit("add", obj)
            elif _rv(prev) != _rv(obj):
                await self._emit("update", prev, obj)
        for key, prev in old.items():
            if key not in current:
                await self._emit("delete", prev)
        if not self._synced.is_set():
            log.debug("%s: synced %d objects at resourceVersion %s", self.name, len(current), rv)
            self._synced.set()

    async def _watch(self) -> int:
        """Apply one watch stream to the cache; the number of events it carried."""
        seen = 0
        stream = self.client.watch(
            self.resource,
            namespace=self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=random.randint(*self.watch_timeout),
            allow_bookmarks=True,
        )
        async with contextlib.aclosing(stream) as events:
            async for type_, obj in events:
                seen += 1
                rv = _rv(obj)
                if type_ in ("ADDED", "MODIFIED"):
                    old = self.cache.put(obj)
                    if old is None:
                        await self._emit("add", obj)
                    else:
                        await self._emit("update", old, obj)
                elif type_ == "DELETED":
                    self.cache.remove(object_key(obj))
                    await self._emit("delete", obj)  # the object's final state, as the server sent it
                if rv:
                    self.resource_version = rv
        return seen

    async def _resync_loop(self) -> None:
        assert self.resync
        while True:
            await asyncio.sleep(self.resync)
            if self.has_synced:
                for obj in self.cache.list():
                    await self._emit("update", obj, obj)

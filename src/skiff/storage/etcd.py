"""The store on a real etcd 3.x cluster, for deployments that already run one.

etcd *is* the data model the interface describes, so this backend is a thin
translation: etcd's revisions are skiff's revisions, conditional writes are
etcd transactions comparing `create_revision == 0` (create) or
`mod_revision == expected` (update/delete), lists are ranges (at a revision
when asked), watches are etcd watches with `prev_kv`. There is no second
source of truth and no local cache of data. Transport: `etcd_client`.

Compacted revision: etcd has no API that reports it, so the backend keeps the
highest value it has learnt -- from its own `compact()` calls, from a watch
that etcd cancels with `compact_revision`, and, when a read fails as
compacted or `compacted_revision()` finds its value stale (a range at the
known revision fails), from a probe watch that etcd cancels with the exact
value. With C known, reads and watch starts at or below C are refused
locally: etcd itself would still serve revision C, but the interface promises
CompactedError at or below the compacted revision. If another client compacts
etcd, a read at exactly that revision may succeed until the backend learns it.

Usage: `EtcdBackend(["https://a:2379", "https://b:2379"], ca_file=..., cert_file=...,
key_file=...)`, then `await start()` (raises Unavailable if no endpoint
answers) and `await close()`. Watches that lose their connection resume on
another endpoint from the next revision; they raise Unavailable only when no
endpoint answers.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from contextlib import aclosing
from types import TracebackType

from skiff.storage.etcd_client import (
    EtcdClient,
    EtcdError,
    Json,
    b64,
    header_revision,
    parse_kv,
    sleep_backoff,
)
from skiff.storage.interface import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    StorageError,
    Unavailable,
)
from skiff.storage.keys import prefix_end_bytes

_PROBE_KEY = b"\x00skiff/compaction-probe"
_PROBE_TIMEOUT = 5.0
_WATCH_RECONNECTS = 6


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    key = prefix.encode()
    return (key or b"\0"), prefix_end_bytes(key)


def _parse_event(obj: Json) -> Event:
    kv = parse_kv(obj["kv"])
    prev = parse_kv(obj["prev_kv"]) if obj.get("prev_kv") else None
    if obj.get("type") == "DELETE":
        value, created = (prev.value, prev.create_revision) if prev else (b"", 0)
        return Event("DELETE", KeyValue(kv.key, value, created, kv.mod_revision), prev)
    if kv.create_revision == kv.mod_revision:
        return Event("CREATE", kv)
    return Event("UPDATE", kv, prev)


class EtcdBackend:
    """`Backend` over etcd's JSON gateway (see module docstring)."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self._client = EtcdClient(
            endpoints,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            request_timeout=request_timeout,
        )
        self._compacted = 0

    async def __aenter__(self) -> EtcdBackend:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        await self._client.start()
        try:
            await self.compacted_revision()
        except BaseException:
            await self._client.close()
            raise

    async def close(self) -> None:
        await self._client.close()

    # --- reads ---------------------------------------------------------------

    async def _range(self, body: Json) -> Json:
        requested = int(body.get("revision", 0))
        try:
            return await self._client.call("/v3/kv/range", body, idempotent=True)
        except EtcdError as exc:
            raise await self._map_revision_error(exc, requested) from exc

    async def _map_revision_error(self, exc: EtcdError, requested: int) -> StorageError:
        if exc.compacted:
            return CompactedError(requested, await self._probe_compacted(requested))
        if exc.future_revision:
            return FutureRevisionError(requested, await self.current_revision())
        return exc

    async def current_revision(self) -> int:
        resp = await self._client.call("/v3/kv/range", {"key": b64(_PROBE_KEY), "count_only": True}, idempotent=True)
        return header_revision(resp)

    async def compacted_revision(self) -> int:
        """The highest compaction known; refreshed by one range at that revision (see module docs)."""
        probe_at = max(self._compacted, 1)
        body = {"key": b64(_PROBE_KEY), "count_only": True, "revision": probe_at}
        try:
            await self._client.call("/v3/kv/range", body, idempotent=True)
        except EtcdError as exc:
            if exc.compacted:
                await self._probe_compacted(probe_at)
            elif not exc.future_revision:  # an empty etcd (revision 1) has nothing to compact
                raise
        return self._compacted

    async def _probe_compacted(self, below: int) -> int:
        """Learn etcd's compact revision from a watch at `below`, which etcd says is compacted."""
        body = {"create_request": {"key": b64(_PROBE_KEY), "start_revision": max(below, 1)}}
        try:
            stream = self._client.stream("/v3/watch", body)
            async with asyncio.timeout(_PROBE_TIMEOUT), aclosing(stream):
                async for message in stream:
                    result = message.get("result", {})
                    if result.get("canceled") or result.get("compact_revision"):
                        self._note_compacted(int(result.get("compact_revision", 0)))
                        break
        except TimeoutError:
            pass
        return self._compacted

    def _note_compacted(self, revision: int) -> None:
        self._compacted = max(self._compacted, revision)

    def _check_compacted(self, revision: int) -> None:
        if 0 < revision <= self._compacted:
            raise CompactedError(revision, self._compacted)

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._range({"key": b64(key)})
        kvs = resp.get("kvs") or []
        return parse_kv(kvs[0]) if kvs else None

    async def count(self, prefix: str) -> int:
        key, end = _prefix_range(prefix)
        resp = await self._range({"key": b64(key), "range_end": b64(end), "count_only": True})
        return int(resp.get("count", 0))

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, start_key: str | None = None) -> ListResult:
        self._check_compacted(revision)
        key, end = _prefix_range(prefix)
        first = max(key, start_key.encode()) if start_key is not None else key
        body: Json = {"key": b64(first), "range_end": b64(end)}
        if revision > 0:
            body["revision"] = revision
        if limit > 0:
            body["limit"] = limit
        resp = await self._range(body)
        at = revision or header_revision(resp)
        items = [parse_kv(kv) for kv in resp.get("kvs") or []]
        count = int(resp.get("count", 0))  # from start_key on, as the interface wants
        return ListResult(items=items, revision=at, more=bool(resp.get("more")), count=count)

    # --- writes --------------------------------------------------------------

    async def _txn(self, compare: builtins.list[Json], success: Json, failure: Json | None) -> Json:
        body: Json = {"compare": compare, "success": [success]}
        if failure is not None:
            body["failure"] = [failure]
        return await self._client.call("/v3/kv/txn", body)

    @staticmethod
    def _first_response(resp: Json, kind: str) -> Json:
        responses = resp.get("responses") or [{}]
        result: Json = responses[0].get(kind, {})
        return result

    def _failed_current(self, resp: Json) -> KeyValue | None:
        kvs = self._first_response(resp, "response_range").get("kvs") or []
        return parse_kv(kvs[0]) if kvs else None

    async def create(self, key: str, value: bytes) -> KeyValue:
        k = b64(key)
        resp = await self._txn(
            [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            {"request_put": {"key": k, "value": b64(value)}},
            None,
        )
        if not resp.get("succeeded"):
            raise KeyExistsError(key)
        rev = header_revision(resp)
        return KeyValue(key, value, rev, rev)

    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue:
        k = b64(key)
        if expected_revision <= 0:  # mod_revision == 0 would match a missing key
            current = await self.get(key)
            if current is None:
                raise KeyNotFoundError(key)
            raise RevisionConflictError(key, current)
        resp = await self._txn(
            [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected_revision}],
            {"request_put": {"key": k, "value": b64(value), "prev_kv": True}},
            {"request_range": {"key": k}},
        )
        if not resp.get("succeeded"):
            current = self._failed_current(resp)
            if current is None:
                raise KeyNotFoundError(key)
            raise RevisionConflictError(key, current)
        prev = parse_kv(self._first_response(resp, "response_put")["prev_kv"])
        return KeyValue(key, value, prev.create_revision, header_revision(resp))

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Returns the deleted value with mod_revision = the delete's revision (as the DELETE event)."""
        k = b64(key)
        compare: Json = (
            {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected_revision}
            if expected_revision > 0
            else {"key": k, "target": "CREATE", "result": "GREATER", "create_revision": 0}
        )
        resp = await self._txn(
            [compare],
            {"request_delete_range": {"key": k, "prev_kv": True}},
            {"request_range": {"key": k}},
        )
        if not resp.get("succeeded"):
            current = self._failed_current(resp)
            if current is None:
                raise KeyNotFoundError(key)
            raise RevisionConflictError(key, current)
        prev_kvs = self._first_response(resp, "response_delete_range").get("prev_kvs") or []
        if not prev_kvs:  # deleted concurrently between compare and delete: cannot happen in one txn
            raise KeyNotFoundError(key)
        prev = parse_kv(prev_kvs[0])
        return KeyValue(key, prev.value, prev.create_revision, header_revision(resp))

    async def compact(self, revision: int) -> None:
        """etcd compaction (physical); afterwards reads at <= `revision` raise CompactedError.

        Compacting at or below the known compacted revision is a no-op.
        """
        if revision <= self._compacted:
            return
        try:
            await self._client.call("/v3/kv/compaction", {"revision": revision, "physical": True})
        except EtcdError as exc:
            if exc.compacted:
                await self._probe_compacted(revision)
                return
            if exc.future_revision:
                raise FutureRevisionError(revision, await self.current_revision()) from exc
            raise
        self._note_compacted(revision)

    # --- watch ---------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        """Events under `prefix` with revision >= start_revision (<= 0: from now on)."""
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: str, start_revision: int) -> AsyncIterator[builtins.list[Event]]:
        self._check_compacted(start_revision)
        key, end = _prefix_range(prefix)
        next_rev = max(start_revision, 0)  # 0: from now on, fixed at the first "created" answer
        failures = 0
        while True:
            request: Json = {"key": b64(key), "range_end": b64(end), "prev_kv": True}
            if next_rev > 0:
                request["start_revision"] = next_rev
            try:
                async with aclosing(self._client.stream("/v3/watch", {"create_request": request})) as stream:
                    async for message in stream:
                        failures = 0
                        events, next_rev = self._watch_message(message, next_rev)
                        if events:
                            yield events
            except Unavailable:
                if self._client.closed:
                    return
                failures += 1
                if failures > _WATCH_RECONNECTS:
                    raise
                await sleep_backoff(failures)

    def _watch_message(self, message: Json, next_rev: int) -> tuple[builtins.list[Event], int]:
        """Events of one watch answer and the revision to resume from after them."""
        result = message.get("result")
        if result is None:
            raise StorageError(f"etcd watch error: {message.get('error', message)}")
        if result.get("compact_revision"):
            compacted = int(result["compact_revision"])
            self._note_compacted(compacted)
            raise CompactedError(next_rev, compacted)
        if result.get("canceled"):
            raise StorageError(f"etcd canceled the watch: {result.get('cancel_reason', '')}")
        if result.get("created") and next_rev == 0:
            next_rev = header_revision(result) + 1
        events = [_parse_event(e) for e in result.get("events") or []]
        if events:
            next_rev = events[-1].kv.mod_revision + 1
        return events, next_rev

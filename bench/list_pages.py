"""CPU per list of 1,000 ConfigMaps in the API server's store: paginated from the watch cache vs from storage.

    .venv/bin/python -m bench.list_pages [--objects 1000] [--limit 500] [--rounds 20] [--writes 50]
    .venv/bin/python -m bench.list_pages --http [--old-src DIR] [--rounds 10]

Why: kubectl sends limit=500 on every `get` and informers list with a limit;
paginated lists used to read storage (a range at the list's revision and a
COUNT per page). This drives `Store.list` in one process over a SQLite file,
with a watch cache (the pages from memory) and without (the storage path,
which is what paginated lists took before), interleaved A/B, and reports the
process CPU per whole list (every page, objects decoded; the HTTP encoding
is the same for both and not included). `--writes`: writes made between the
first and the second page, which the cache undoes to serve the later pages.

`--http`: the same lists over HTTPS against a real `skiff server` (keep-alive,
the official Python client), reporting the server process's CPU per list,
paginated and not; with `--old-src DIR` a second server runs the code in DIR
(e.g. a `git worktree` of an older commit) and the rounds alternate between
the two, an interleaved A/B on the same machine load. It also lists as a Table (kubectl get's default
Accept, limit as kubectl sends it), which needs the decoded objects for its columns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from skiff.apiserver.builtin import builtin_types
from skiff.apiserver.options import ListOptions, WriteOptions
from skiff.apiserver.registry import Registry
from skiff.apiserver.store import Store
from skiff.apiserver.watchcache import WatchCache
from skiff.storage.sqlite import SQLiteBackend


async def whole_list(
    store: Store, rt: Any, limit: int, between: Callable[[], Awaitable[None]] | None
) -> tuple[int, float]:
    """Every page of one list: (objects, process CPU seconds spent in the list calls, not in `between`)."""
    t0 = time.process_time()
    page = await store.list(rt, "list", ListOptions(limit=limit))
    spent = time.process_time() - t0
    count = len(page["items"])
    while token := page["metadata"].get("continue"):
        if between is not None:
            await between()
            between = None
        t0 = time.process_time()
        page = await store.list(rt, "list", ListOptions(limit=limit, continue_token=token))
        spent += time.process_time() - t0
        count += len(page["items"])
    return count, spent


async def main(args: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="skiff-list-pages-")
    backend = SQLiteBackend(f"{workdir}/state.db")
    await backend.start()
    cache = WatchCache(backend)
    await cache.start()
    try:
        registry = Registry()
        for rt in builtin_types():
            registry.add(rt)
        ns_rt, cm_rt = registry.get("", "v1", "namespaces"), registry.get("", "v1", "configmaps")
        assert ns_rt is not None and cm_rt is not None
        cached, stored = Store(backend, registry, cache), Store(backend, registry, None)
        await cached.create(ns_rt, None, {"metadata": {"name": "list"}}, WriteOptions())
        for i in range(args.objects):
            body = {"metadata": {"name": f"o{i:05d}", "labels": {"app": "bench"}}, "data": {"k": "v" * 200}}
            await cached.create(cm_rt, "list", body, WriteOptions())
        written = 0

        async def writes() -> None:
            nonlocal written
            for _ in range(args.writes):
                name = f"o{written % args.objects:05d}"
                written += 1
                patch = {"data": {"k": str(written)}}
                await cached.patch(cm_rt, "list", name, "application/merge-patch+json", patch, WriteOptions())

        cpu: dict[str, list[float]] = {"cache": [], "storage": [], "cache+writes": [], "storage+writes": []}
        for _ in range(args.rounds):
            for name, store in (("cache", cached), ("storage", stored)):
                for suffix, between in (("", None), ("+writes", writes if args.writes else None)):
                    if suffix and between is None:
                        continue
                    n, spent = await whole_list(store, cm_rt, args.limit, between)
                    assert n == args.objects, n
                    cpu[name + suffix].append(spent * 1000)
        t0 = time.process_time()
        for _ in range(args.rounds):
            await cached.list(cm_rt, "list", ListOptions())
        unpaginated = (time.process_time() - t0) * 1000 / args.rounds
        # the JSON body of an unpaginated list: decoded and encoded again, or spliced from the stored bytes
        body: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for encoded in (False, True):
                t0 = time.process_time()
                orjson.dumps(await cached.list(cm_rt, "list", ListOptions(), encoded=encoded))
                body[encoded].append((time.process_time() - t0) * 1000)
        print(f"{args.objects} objects, limit={args.limit}, {args.rounds} interleaved rounds; CPU ms/op (median, min)")
        for name, values in cpu.items():
            if values:
                values.sort()
                note = f" ({args.writes} patches between pages 1 and 2, not counted)" if "writes" in name else ""
                print(f"  paginated from {name:15s} {values[len(values) // 2]:7.1f} {values[0]:7.1f}{note}")
        print(f"  unpaginated from cache      {unpaginated:7.1f}")
        for encoded, values in body.items():
            values.sort()
            what = "spliced" if encoded else "decoded"
            print(f"  JSON body, {what}, cache   {values[len(values) // 2]:7.1f} {values[0]:7.1f}")
    finally:
        await cache.close()
        await backend.close()
        shutil.rmtree(workdir, ignore_errors=True)


def server_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_main(args: argparse.Namespace) -> None:
    from kubernetes import client
    from tests.e2e.cluster import Server

    workdir = Path(tempfile.mkdtemp(prefix="skiff-list-pages-http-"))
    servers: dict[str, Any] = {}
    try:
        for name, src in (("new", None), ("old", args.old_src)):
            if name == "old" and not src:
                continue
            saved = os.environ.get("PYTHONPATH")
            if src:
                os.environ["PYTHONPATH"] = str(Path(src) / "src")
            try:
                srv = Server(workdir / name, extra_args=["--disable-controllers", "--log-level", "warning"]).start()
            finally:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
            core = client.CoreV1Api(srv.client())
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="list")))
            for i in range(args.objects):
                meta = client.V1ObjectMeta(name=f"o{i:05d}", labels={"app": "bench"})
                core.create_namespaced_config_map("list", client.V1ConfigMap(metadata=meta, data={"k": "v" * 200}))
            servers[name] = (srv, core)

        def one(core: Any, limit: int, table: bool = False) -> int:
            if table:  # kubectl get's default: a Table, `limit` 500 as kubectl sends
                return table_list(core, limit)
            kw: dict[str, Any] = {"limit": limit} if limit else {}
            page = json.loads(core.list_namespaced_config_map("list", _preload_content=False, **kw).data)
            count = len(page["items"])
            while token := page["metadata"].get("continue"):
                raw = core.list_namespaced_config_map("list", _preload_content=False, _continue=token, **kw)
                page = json.loads(raw.data)
                count += len(page["items"])
            return count

        def table_list(core: Any, limit: int) -> int:
            count, token = 0, ""
            while True:
                query = [("limit", limit)] + ([("continue", token)] if token else [])
                request = core.api_client.param_serialize(
                    "GET", "/api/v1/namespaces/list/configmaps", query_params=query,
                    header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
                    auth_settings=["BearerToken"],
                )  # fmt: skip
                raw = core.api_client.call_api(*request)
                raw.read()
                page = json.loads(raw.data)
                count += len(page["rows"])
                token = page["metadata"].get("continue", "")
                if not token:
                    return count

        cpu: dict[tuple[str, int, bool], list[float]] = {}
        for _ in range(args.rounds):
            for name, (srv, core) in servers.items():
                for limit, table in ((args.limit, False), (0, False), (args.limit, True)):
                    one(core, limit, table)  # warm
                    t0 = server_cpu(srv.proc.pid)
                    for _ in range(args.lists):
                        assert one(core, limit, table) == args.objects
                    spent = (server_cpu(srv.proc.pid) - t0) * 1000 / args.lists
                    cpu.setdefault((name, limit, table), []).append(spent)
        rounds = f"{args.rounds} interleaved rounds of {args.lists}"
        print(f"server CPU ms per list of {args.objects} (HTTPS, {rounds}): median, min")
        for (name, limit, table), values in sorted(cpu.items()):
            values.sort()
            what = (f"limit={limit}" if limit else "unpaginated") + (" Table" if table else "")
            print(f"  {name:4s} {what:18s} {values[len(values) // 2]:7.1f} {values[0]:7.1f}")
    finally:
        for srv, _ in servers.values():
            srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--lists", type=int, default=10, help="with --http: lists per round and server")
    parser.add_argument("--http", action="store_true", help="against a real server over HTTPS (server CPU per list)")
    parser.add_argument("--old-src", help="with --http: a second server running the skiff tree in this directory")
    parsed = parser.parse_args()
    if parsed.http:
        http_main(parsed)
    else:
        asyncio.run(main(parsed))

"""Custom-resource create/get throughput beside a built-in kind (ConfigMap), in the same run.

Why this exists: a custom object goes through the same generic store as a
ConfigMap, plus its CRD's structural schema (pruning, defaulting,
validation) and the storage-version rewrite. Issue 6 asks that this does not
make custom kinds several times slower; this prints the ratio.

One throw-away `skiff server` (data under /var/tmp, SQLite); a CRD `Widget`
with a typical schema (required fields, enum, bounds, pattern, defaults, a
list of objects, a status subresource) is applied and Established first.
Load comes from a separate process over HTTPS with the admin certificate:
`--clients` concurrent clients creating small objects for `--seconds`,
then getting them, alternating ConfigMap and Widget rounds (`--rounds`) so
that other work on the machine hits both alike. Prints rates, p50/p99 and
server CPU per request, and the Widget/ConfigMap ratios; never fails on time.

    .venv/bin/python -m bench.crd [--seconds 5] [--clients 16] [--rounds 2]
    .venv/bin/python -m bench.crd --in-process 2000 [--rounds 3]

`--in-process N` measures the generic store alone instead (no HTTP, no TLS,
no other process): CPU per create and get of N objects per kind and round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.api import Target, cpu_seconds, percentile, session_for  # noqa: E402

GROUP = "bench.example.com"
CRD_RESOURCE = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
            "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size", "owner"], "properties": {
                    "size": {"type": "integer", "minimum": 1, "maximum": 100},
                    "owner": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "maxLength": 63},
                    "color": {"type": "string", "enum": ["red", "green", "blue"], "default": "red"},
                    "ports": {"type": "array", "maxItems": 8, "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["name"], "items": {
                                  "type": "object", "required": ["name"], "properties": {
                                      "name": {"type": "string"},
                                      "port": {"type": "integer", "default": 80}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                }},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }}},
        }],
    },
}  # fmt: skip


def body(kind: str, name: str) -> bytes:
    if kind == "configmap":
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                               "data": {"size": "3", "owner": "team-a", "color": "blue", "port": "8080"}}  # fmt: skip
    else:
        obj = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
               "spec": {"size": 3, "owner": "team-a", "color": "blue", "ports": [{"name": "http", "port": 8080}],
                        "labels": {"tier": "web"}}}  # fmt: skip
    return json.dumps(obj, separators=(",", ":")).encode()


def collection(kind: str) -> str:
    if kind == "configmap":
        return "/api/v1/namespaces/bench/configmaps"
    return f"/apis/{GROUP}/v1/namespaces/bench/widgets"


@dataclass
class Spec:
    target: Target
    kind: str
    op: str
    clients: int
    seconds: float
    prefix: str
    names: int = 0


@dataclass
class Result:
    ops: int = 0
    errors: int = 0
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu: float = 0.0

    def rate(self, seconds: float) -> float:
        return self.ops / seconds


def run(spec: Spec) -> Result:
    return asyncio.run(_run(spec))


async def _run(spec: Spec) -> Result:
    result = Result()
    url = spec.target.url + collection(spec.kind)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    counter = 0
    async with session_for(spec.target, spec.clients) as session:
        end = time.perf_counter() + spec.seconds
        cpu0 = sum(cpu_seconds(p) for p in spec.target.cpu_pids)

        async def client() -> None:
            nonlocal counter
            while time.perf_counter() < end:
                i = counter
                counter += 1
                t0 = time.perf_counter()
                if spec.op == "create":
                    req = session.post(url, data=body(spec.kind, f"{spec.prefix}{i:07d}"), headers=headers)
                    want = 201
                else:
                    req = session.get(f"{url}/{spec.prefix}{i % spec.names:07d}", headers=headers)
                    want = 200
                async with req as resp:
                    text = await resp.read()
                    if resp.status != want:
                        result.errors += 1
                        result.first_error = result.first_error or f"{resp.status}: {text[:200]!r}"
                        continue
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(client() for _ in range(spec.clients)))
        result.server_cpu = sum(cpu_seconds(p) for p in spec.target.cpu_pids) - cpu0
    result.ops = len(result.latencies_ms)
    result.latencies_ms.sort()
    return result


async def in_process(count: int, rounds: int) -> None:
    """CPU per create and get in the generic store itself (no HTTP, no TLS): the two kinds' own cost."""
    from aiohttp import web

    from skiff.apiserver.app import REGISTRY, STORE, create_app
    from skiff.apiserver.options import WriteOptions
    from skiff.storage.sqlite import SQLiteBackend

    workdir = Path(tempfile.mkdtemp(prefix="skiff-bench-crd-", dir="/var/tmp"))
    backend = SQLiteBackend(str(workdir / "state.db"))
    await backend.start()
    app = create_app(backend=backend)
    runner = web.AppRunner(app)
    await runner.setup()  # startup hooks: watch cache, namespaces, the CRD controller
    try:
        store, registry = app[STORE], app[REGISTRY]
        ns_rt, crd_rt = registry.get("", "v1", "namespaces"), registry.get(*CRD_RESOURCE)
        assert ns_rt is not None and crd_rt is not None
        await store.create(ns_rt, None, {"metadata": {"name": "bench"}}, WriteOptions())
        await store.create(crd_rt, None, json.loads(json.dumps(CRD)), WriteOptions())
        for _ in range(200):  # the CRD controller serves the kind moments after the CRD is stored
            if registry.get(GROUP, "v1", "widgets") is not None:
                break
            await asyncio.sleep(0.05)
        kinds = {"configmap": registry.get("", "v1", "configmaps"), "widget": registry.get(GROUP, "v1", "widgets")}
        cpu: dict[tuple[str, str], float] = {}
        for r in range(rounds):
            for op in ("create", "get"):
                for kind, rt in kinds.items():
                    assert rt is not None
                    bodies = [json.loads(body(kind, f"{kind[0]}{r}-{i:07d}")) for i in range(count)]
                    names = [f"{kind[0]}0-{i:07d}" for i in range(count)]
                    t0 = time.process_time()
                    if op == "create":
                        await asyncio.gather(*(store.create(rt, "bench", b, WriteOptions()) for b in bodies))
                    else:
                        await asyncio.gather(*(store.get(rt, "bench", n) for n in names))
                    cpu[(kind, op)] = cpu.get((kind, op), 0.0) + time.process_time() - t0
        print(f"\nin process: {rounds} x {count} objects per kind and verb, CPU per request (ms)\n")
        print("| verb | ConfigMap | Widget | Widget/ConfigMap |\n|---|---:|---:|---:|")
        for op in ("create", "get"):
            cm, cr = (1000 * cpu[(k, op)] / (count * rounds) for k in ("configmap", "widget"))
            print(f"| {op} | {cm:.3f} | {cr:.3f} | {cr / cm:.2f} |")
    finally:
        await runner.cleanup()
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    from tests.e2e.cluster import Server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-process", type=int, default=0, metavar="N",
                        help="instead: N creates and gets per kind and round through the store, CPU per request")
    args = parser.parse_args(argv)
    if args.in_process:
        asyncio.run(in_process(args.in_process, args.rounds))
        return 0
    server = Server(Path(tempfile.mkdtemp(prefix="skiff-bench-crd-", dir="/var/tmp")),
                    extra_args=["--log-level", "warning"]).start(timeout=60)  # fmt: skip
    try:
        assert server.proc is not None
        server.raw("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
        code, out, _ = server.raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
        assert code == 201, out
        server.kubectl("wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=30s")
        target = Target(server.url, str(server.data_dir / "tls"), (server.proc.pid,))
        totals: dict[tuple[str, str], list[Result]] = {}
        with ProcessPoolExecutor(1) as pool:
            for r in range(args.rounds):
                for op in ("create", "get"):
                    for kind in ("configmap", "widget"):
                        if op == "create":
                            spec = Spec(target, kind, op, args.clients, args.seconds, prefix=f"{kind[0]}{r}-")
                        else:  # the objects the first round created
                            first = totals[(kind, "create")][0].ops
                            spec = Spec(target, kind, op, args.clients, args.seconds, f"{kind[0]}0-", max(first, 1))
                        res = pool.submit(run, spec).result()
                        totals.setdefault((kind, op), []).append(res)
                        p50, p99 = percentile(res.latencies_ms, 50), percentile(res.latencies_ms, 99)
                        print(f"round {r + 1} {op:6} {kind:9}: {res.rate(args.seconds):7.0f}/s "
                              f"p50 {p50:5.1f} ms p99 {p99:5.1f} ms errors {res.errors} {res.first_error}",
                              flush=True)  # fmt: skip
        print(f"\n{args.clients} clients, {args.rounds} x {args.seconds:.0f} s per kind and verb\n")
        print("| verb | ConfigMap /s | Widget /s | Widget/ConfigMap | server CPU ms/req CM | CR | p99 ms CM | CR |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for op in ("create", "get"):
            row = []
            for kind in ("configmap", "widget"):
                rs = totals[(kind, op)]
                ops = sum(x.ops for x in rs)
                lat = sorted(v for x in rs for v in x.latencies_ms)
                row.append((ops / (args.seconds * len(rs)), 1000 * sum(x.server_cpu for x in rs) / max(ops, 1),
                            percentile(lat, 99)))  # fmt: skip
            (cm, cm_cpu, cm_p99), (cr, cr_cpu, cr_p99) = row
            print(f"| {op} | {cm:.0f} | {cr:.0f} | {cr / cm:.2f} | {cm_cpu:.2f} | {cr_cpu:.2f} | "
                  f"{cm_p99:.1f} | {cr_p99:.1f} |")  # fmt: skip
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

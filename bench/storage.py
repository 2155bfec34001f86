"""Storage throughput: creates/s through each backend at several concurrency levels.

    .venv/bin/python bench/storage.py [--seconds 3] [--value-size 1000] [--no-etcd]

SQLite runs on a temp file on disk (durable commits, so fsync speed matters).
The etcd part starts a throw-away etcd (needs the `etcd` binary) and compares
EtcdBackend.create with raw /v3/kv/put requests, to show the backend's own
overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from itertools import count

import aiohttp

from skiff.storage.etcd import EtcdBackend
from skiff.storage.sqlite import SQLiteBackend

CONCURRENCY = (1, 16, 64)


_runs = count()


async def measure(write: Callable[[str], Awaitable[object]], writers: int, seconds: float) -> float:
    """Creates/s with `writers` tasks each writing unique keys for `seconds`."""
    run = next(_runs)
    ids = count()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await write(f"/bench/{run}/{next(ids):09d}")
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(writers)))
    return done / (time.perf_counter() - began)


async def bench_sqlite(seconds: float, value: bytes) -> None:
    workdir = tempfile.mkdtemp(prefix="skiff-bench-", dir=os.getcwd())
    try:
        for writers in CONCURRENCY:
            async with SQLiteBackend(os.path.join(workdir, f"w{writers}.db")) as store:
                rate = await measure(lambda key: store.create(key, value), writers, seconds)
                print(f"sqlite  {writers:3d} writers: {rate:8.0f} creates/s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def bench_etcd(seconds: float, value: bytes) -> None:
    binary = shutil.which("etcd")
    if binary is None:
        print("etcd: binary not found, skipped")
        return
    workdir = tempfile.mkdtemp(prefix="skiff-bench-etcd-", dir=os.getcwd())
    url, peer = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    proc = await asyncio.create_subprocess_exec(
        *[
            binary,
            f"--data-dir={workdir}/data",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for _ in range(200):
                try:
                    async with session.post(f"{url}/v3/kv/range", json={"key": "AA=="}) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            encoded = base64.b64encode(value).decode()

            async def raw_put(key: str) -> None:
                body = {"key": base64.b64encode(key.encode()).decode(), "value": encoded}
                async with session.post(f"{url}/v3/kv/put", json=body) as resp:
                    await resp.read()

            async with EtcdBackend([url]) as store:
                for writers in CONCURRENCY:
                    raw = await measure(raw_put, writers, seconds)
                    ours = await measure(lambda key: store.create(key, value), writers, seconds)
                    print(
                        f"etcd    {writers:3d} writers: {ours:8.0f} creates/s (raw puts {raw:8.0f}/s)",
                        flush=True,
                    )
    finally:
        proc.kill()
        await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--value-size", type=int, default=1000)
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()
    value = b"x" * args.value_size
    await bench_sqlite(args.seconds, value)
    if not args.no_etcd:
        await bench_etcd(args.seconds, value)


if __name__ == "__main__":
    asyncio.run(main())

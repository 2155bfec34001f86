"""Fixtures that start real skiff servers for end-to-end tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Server, SimNodes

_sim_sets = itertools.count()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by a whole test session (tests use their own namespaces or names)."""
    srv = Server(tmp_path_factory.mktemp("skiff-shared")).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for tests that restart or kill it."""
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    return d


@pytest.fixture
def sim_nodes(request: pytest.FixtureRequest) -> Iterator[Callable[..., SimNodes]]:
    """Start simulated nodes: `sim_nodes(3)` on the shared `server`, or `sim_nodes(3, server=srv)`.

    Each call starts one `skiff sim nodes` process (default prefix: a unique `sim-<n>`, so node
    names never clash on the shared server) and waits until its nodes are Ready; returns a
    `SimNodes` (`.names`, `.kill()`, `.stop()`). After the test every process is stopped and its
    nodes and Leases are deleted.
    """
    started: list[SimNodes] = []

    def start(count: int = 3, *, server: Server | None = None, prefix: str | None = None, **kw: Any) -> SimNodes:
        srv = server if server is not None else request.getfixturevalue("server")
        sim = srv.sim_nodes(count, prefix=prefix or f"sim-{next(_sim_sets)}", **kw)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
        if sim.server.proc is not None and sim.server.proc.poll() is None:
            sim.delete_nodes()

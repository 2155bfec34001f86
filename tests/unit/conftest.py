"""Fixtures shared by the unit tests: a throw-away SQLite backend for the store and watch cache tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skiff.storage.sqlite import SQLiteBackend


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    """A real SQLite backend in the test's own directory, closed afterwards."""
    b = SQLiteBackend(str(tmp_path / "state.db"))
    await b.start()
    yield b
    await b.close()

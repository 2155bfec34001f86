"""open_backend: the --datastore-endpoint flag picks the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.storage.etcd import EtcdBackend
from skiff.storage.factory import open_backend
from skiff.storage.sqlite import SQLiteBackend


def test_default_is_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    backend = open_backend(None, str(tmp_path / "data"))
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == f"{tmp_path}/data/db/state.db"
    assert (tmp_path / "data" / "db").is_dir()


def test_sqlite_url(tmp_path: Path) -> None:
    backend = open_backend(f"sqlite://{tmp_path}/x/store.db", "/unused")
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == f"{tmp_path}/x/store.db"


def test_etcd_endpoints() -> None:
    backend = open_backend("http://a:2379, https://b:2379", "/unused")
    assert isinstance(backend, EtcdBackend)
    assert backend._client.endpoints == ["http://a:2379", "https://b:2379"]


@pytest.mark.parametrize("endpoint", ["mysql://root@tcp(db)/k", "a:2379", "sqlite://", "http://a:2379,b:1"])
def test_unknown_scheme_is_a_clear_error(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        open_backend(endpoint, "/unused")


async def test_sqlite_backend_from_factory_works(tmp_path: Path) -> None:
    backend = open_backend(None, str(tmp_path))
    await backend.start()
    try:
        kv = await backend.create("/a", b"1")
        assert await backend.get("/a") == kv
    finally:
        await backend.close()

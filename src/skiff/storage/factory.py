"""Pick a storage backend from the `--datastore-endpoint` flag (k3s/kine style).

- None / ""                           -> SQLite at {data_dir}/db/state.db (the default)
- "sqlite:///abs/path.db"             -> SQLite at that path ("sqlite://rel.db" is relative)
- "http(s)://a:2379,http(s)://b:2379" -> etcd at those endpoints

The backend is returned un-started: call `await backend.start()`.
"""

from __future__ import annotations

import os
from pathlib import Path

from skiff.storage.etcd import EtcdBackend
from skiff.storage.interface import Backend
from skiff.storage.sqlite import SQLiteBackend


def open_backend(
    datastore_endpoint: str | None,
    data_dir: str,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Backend:
    """The backend `datastore_endpoint` names; TLS files apply to https etcd endpoints."""
    if not datastore_endpoint:
        db_dir = Path(data_dir) / "db"
        db_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteBackend(str(db_dir / "state.db"))
    if datastore_endpoint.startswith("sqlite://"):
        path = datastore_endpoint.removeprefix("sqlite://")
        if not path:
            raise ValueError("sqlite datastore endpoint needs a path: sqlite:///path/to/state.db")
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return SQLiteBackend(path)
    endpoints = [e.strip() for e in datastore_endpoint.split(",") if e.strip()]
    bad = [e for e in endpoints if not e.startswith(("http://", "https://"))]
    if bad or not endpoints:
        raise ValueError(
            f"unsupported datastore endpoint {datastore_endpoint!r}: use sqlite:///path/to/state.db "
            "or a comma-separated list of http(s)://host:port etcd endpoints"
        )
    return EtcdBackend(endpoints, ca_file=ca_file, cert_file=cert_file, key_file=key_file)

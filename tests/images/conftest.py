"""Fixtures that start a real docker-registry (CNCF distribution) on a free loopback port.

These tests run the real tools (docker-registry, skopeo, umoci, busybox-static); CI installs
them and runs as root. They need no root themselves (umoci unpacks rootless otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skiff.images.recipes import ensure_builtin_image
from skiff.images.registry import RegistryInfo, run_registry
from skiff.images.store import ImageStore
from tests.ports import free_port


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryInfo]:
    async with run_registry(tmp_path / "registry-data", f"127.0.0.1:{free_port()}") as info:
        yield info


@pytest.fixture
async def busybox(registry: RegistryInfo) -> str:
    """The built-in busybox image, built and pushed into `registry`; its full reference."""
    return str(await ensure_builtin_image("busybox", registry.host))


@pytest.fixture
def store(tmp_path: Path, registry: RegistryInfo) -> ImageStore:
    return ImageStore(tmp_path / "store", default_registry=registry.host)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is marked `images`: they need docker-registry, skopeo, umoci and busybox-static."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.images)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "images: runs the real image tools (docker-registry, skopeo, umoci); some checks only as root"
    )

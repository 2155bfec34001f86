"""`runc list` racing a container's deletion: the listing is tried again instead of failing a pod's sync."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from skiff.node.runtime.runc import Runc, RuncError

# a stand-in for runc that fails the first `list` as runc does when a container goes mid-listing
FLAKY_RUNC = """#!/bin/sh
count="$0.count"
n=$(cat "$count" 2>/dev/null || echo 0); echo $((n + 1)) > "$count"
if [ "$n" -lt "{failures}" ]; then
  echo 'stat /run/skiff/runc/abc: no such file or directory' >&2; exit 1
fi
echo '[{{"id": "def", "status": "running", "pid": 42}}]'
"""


def _runc(tmp_path: Path, failures: int) -> Runc:
    binary = tmp_path / "runc"
    binary.write_text(FLAKY_RUNC.format(failures=failures))
    binary.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    return Runc(root, binary=str(binary))


def test_a_list_that_meets_a_deleted_container_is_tried_again(tmp_path: Path) -> None:
    states = asyncio.run(_runc(tmp_path, failures=1).list_states())
    assert list(states) == ["def"] and states["def"]["pid"] == 42


def test_a_list_that_keeps_failing_raises_runc_s_message(tmp_path: Path) -> None:
    with pytest.raises(RuncError, match="no such file or directory"):
        asyncio.run(_runc(tmp_path, failures=10).list_states())

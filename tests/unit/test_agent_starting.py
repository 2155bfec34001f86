"""Helpers of starting containers: FallbackToLogsOnError's log tail and termination message files."""

from __future__ import annotations

from pathlib import Path

from skiff.images.model import Image, ImageConfig
from skiff.node.agent.starting import image_id, log_tail, read_termination_message


def test_log_tail_joins_partial_lines_and_keeps_the_last_80(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    lines = [f"2026-01-01T00:00:00.{i:09d}Z stdout F line {i}" for i in range(100)]
    lines += ["2026-01-01T00:00:01.000000000Z stderr P half ", "2026-01-01T00:00:01.000000001Z stderr F done", "junk"]
    log.write_text("\n".join(lines) + "\n")
    tail = log_tail(log)
    assert tail.splitlines()[0] == "line 21" and tail.endswith("line 99\nhalf done\n")
    assert len(tail.splitlines()) == 80


def test_log_tail_is_at_most_2048_bytes(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("".join(f"2026-01-01T00:00:00Z stdout F {'x' * 100}\n" for _ in range(50)))
    assert len(log_tail(log)) == 2048
    assert log_tail(tmp_path / "missing.log") == ""


def test_termination_message_is_capped_at_4_kib(tmp_path: Path) -> None:
    path = tmp_path / "msg"
    path.write_text("y" * 5000)
    assert read_termination_message(path) == "y" * 4096
    assert read_termination_message(tmp_path / "none") == ""


def test_image_id_names_the_containers_own_repository() -> None:
    digest = "sha256:" + "ab" * 32
    image = Image(ref="a:5000/busybox:latest", digest=digest, rootfs=Path("/"), config=ImageConfig(),
                  names=(f"b:6000/busybox@{digest}", f"a:5000/busybox@{digest}"))  # fmt: skip
    assert image_id(image, "a:5000/busybox", "r:1") == f"a:5000/busybox@{digest}"
    assert image_id(image, "busybox:1.36", "r:1") == f"r:1/busybox@{digest}"
    assert image_id(image, f"b:6000/busybox@{digest}", "r:1") == f"b:6000/busybox@{digest}"

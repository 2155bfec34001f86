"""Which images the node agent's image GC removes: the kubelet's thresholds, LRU order, in-use and min age."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skiff.node.agent.imagegc import Candidate, GCFailed, ImageGCPolicy, images_in_use, plan

MB = 1_000_000
NOW = 10_000.0


def image(digest: str, size_mb: int, *, last_used: float, first_detected: float = 0.0) -> Candidate:
    return Candidate(digest=digest, size=size_mb * MB, last_used=last_used, first_detected=first_detected)


IMAGES = [
    image("sha256:new", 10, last_used=900),
    image("sha256:old", 10, last_used=100),
    image("sha256:mid", 10, last_used=500),
    image("sha256:used", 10, last_used=50),
]


def test_under_the_high_threshold_nothing_is_removed() -> None:
    # 84% used, high threshold 85
    p = plan(IMAGES, in_use=set(), capacity=100 * MB, available=16 * MB, policy=ImageGCPolicy(), now=NOW)
    assert p.usage_percent == 84 and p.amount_to_free == 0 and p.remove == ()


def test_over_the_high_threshold_frees_down_to_the_low_one_least_recently_used_first() -> None:
    # 90% used: free down to 80% -> 10 MB; one image of 10 MB is enough, the oldest unused one
    p = plan(IMAGES, in_use={"sha256:used"}, capacity=100 * MB, available=10 * MB, policy=ImageGCPolicy(), now=NOW)
    assert p.usage_percent == 90 and p.amount_to_free == 10 * MB
    assert p.remove == ("sha256:old",) and p.freed == 10 * MB


def test_at_the_high_threshold_gc_runs() -> None:
    p = plan(IMAGES, in_use=set(), capacity=100 * MB, available=15 * MB, policy=ImageGCPolicy(), now=NOW)
    assert p.usage_percent == 85 and p.amount_to_free == 5 * MB and p.remove == ("sha256:used",)


def test_in_use_and_young_images_are_kept_even_when_not_enough_is_freed() -> None:
    young = image("sha256:young", 10, last_used=10, first_detected=NOW - 60)
    p = plan([*IMAGES, young], in_use={"sha256:used"}, capacity=100 * MB, available=0, policy=ImageGCPolicy(),
             now=NOW)  # fmt: skip
    assert p.amount_to_free == 20 * MB
    assert p.remove == ("sha256:old", "sha256:mid")  # neither young (60 s < 2 m) nor in use
    strict = ImageGCPolicy(high_threshold_percent=50, low_threshold_percent=0, min_age=0)
    p = plan([*IMAGES, young], in_use={"sha256:used"}, capacity=100 * MB, available=0, policy=strict, now=NOW)
    assert p.remove == ("sha256:young", "sha256:old", "sha256:mid", "sha256:new")
    assert p.amount_to_free == 100 * MB and p.freed == 40 * MB  # the caller reports FreeDiskSpaceFailed


def test_equal_last_use_goes_by_first_detection() -> None:
    a = image("sha256:a", 5, last_used=1, first_detected=20)
    b = image("sha256:b", 5, last_used=1, first_detected=10)
    p = plan([a, b], in_use=set(), capacity=100 * MB, available=15 * MB, policy=ImageGCPolicy(), now=NOW)
    assert p.remove == ("sha256:b",)


def test_zero_capacity_is_invalid_disk_capacity() -> None:
    with pytest.raises(GCFailed, match="invalid capacity 0 on image filesystem") as e:
        plan(IMAGES, in_use=set(), capacity=0, available=0, policy=ImageGCPolicy(), now=NOW)
    assert e.value.reason == "InvalidDiskCapacity"


@pytest.mark.parametrize(
    ("high", "low", "message"),
    [(101, 80, "HighThresholdPercent 101"), (85, -1, "LowThresholdPercent -1"), (70, 80, "can not be higher")],
    ids=["high-over-100", "low-negative", "low-above-high"],
)
def test_bad_thresholds_are_refused(high: int, low: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageGCPolicy(high_threshold_percent=high, low_threshold_percent=low)


async def test_images_in_use_are_those_of_every_container_the_runtime_has(tmp_path: Path) -> None:
    from skiff.node.agent.starting import image_record
    from skiff.node.agent.volumes import pod_dir
    from skiff.node.runtime.types import ContainerId, ContainerInfo, ContainerState

    log = tmp_path / "log"
    infos = [ContainerInfo(id=ContainerId(cid), pod_uid=uid, name="c", attempt=0, log_path=log, state=state)
             for cid, uid, state in (("c1", "u1", ContainerState.RUNNING), ("c2", "u2", ContainerState.EXITED),
                                     ("c3", "u3", ContainerState.RUNNING))]  # fmt: skip
    for cid, uid, image_id in (("c1", "u1", "reg/a@sha256:aaa"), ("c2", "u2", "reg/b@sha256:bbb")):
        record = image_record(pod_dir(tmp_path, uid), cid)
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"image": "x", "imageID": image_id, "attempt": 0}))

    class Listing:
        async def list(self) -> list[ContainerInfo]:
            return infos

    # c3 has no record (being created): it names no image; exited containers still hold theirs
    assert await images_in_use(Listing(), tmp_path) == {"sha256:aaa", "sha256:bbb"}  # type: ignore[arg-type]

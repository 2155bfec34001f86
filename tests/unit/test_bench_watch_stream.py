"""The API bench's lean watcher: what it reads off a watch stream decides "every watcher saw every event".

bench/api.py's lean watcher undoes the chunked framing itself and finds each event's name and send
stamp by a bytes search; these check that it counts exactly the expected events, whatever the chunk
and read boundaries, and that a missing event leaves the watcher incomplete.
"""

from __future__ import annotations

import json

from bench.api import LeanStream


def event(type_: str, name: str, sent: float) -> bytes:
    obj = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "watch", "resourceVersion": "7"},
        "data": {"sent": repr(sent)},
    }
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


def chunked(*chunks: bytes, end: bool = False) -> bytes:
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    return body + (b"0\r\n\r\n" if end else b"")


def feed_in_pieces(stream: LeanStream, data: bytes, size: int, now: float) -> None:
    for i in range(0, len(data), size):
        stream.feed(data[i : i + size], now)


def test_every_expected_event_counted_once_whatever_the_read_boundaries() -> None:
    events = [event("ADDED", f"w{i:05d}", 100.0) for i in range(3)]
    # one event split over two chunks, two events in one chunk, a duplicate, another kind and another name
    data = chunked(
        events[0][:30],
        events[0][30:],
        events[1] + events[2],
        events[2],
        event("MODIFIED", "w00009", 100.0),
        event("ADDED", "other", 100.0),
        end=True,
    )
    for size in (1, 7, 64, len(data)):
        stream = LeanStream(b"w")
        feed_in_pieces(stream, data, size, now=100.25)
        assert sorted(stream.seen) == [b"w00000", b"w00001", b"w00002"]
        assert stream.delays == [250.0, 250.0, 250.0]
        assert stream.ended


def test_one_read_per_chunk() -> None:
    stream = LeanStream(b"w")
    first = event("ADDED", "w00001", 2.0)
    reads = [chunked(event("ADDED", "w00000", 2.0)), chunked(first[:40]), chunked(first[40:]), chunked(first)]
    for data in reads:
        stream.feed(data, 2.5)
    assert sorted(stream.seen) == [b"w00000", b"w00001"]
    assert stream.delays == [500.0, 500.0]


def test_a_missing_event_leaves_the_watcher_short() -> None:
    stream = LeanStream(b"w")
    stream.feed(chunked(event("ADDED", "w00000", 1.0), event("ADDED", "w00002", 1.0)), 1.5)
    assert len(stream.seen) == 2  # of 3 expected: the bench reports this watcher as not complete
    assert not stream.ended

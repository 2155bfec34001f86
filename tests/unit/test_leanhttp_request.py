"""The REST handler chain reads nothing of a request that `leanrequest.LeanRequest` lacks.

Plain REST requests reach the middlewares and handlers as a `LeanRequest`, not aiohttp's
`web.Request`. An attribute a handler starts to read that the light request does not have would
fail only on that path (a 500 to the user), so every `request.<name>` in the modules on it is
checked here. Modules reached only through a hand-off to aiohttp (watches, the pod proxy and
logs, discovery, OpenAPI, metrics.k8s.io, the aiohttp-side dispatch) are left out, and so is
`leanhttp`'s own machinery (the connection, its framing, the request object itself).
"""

from __future__ import annotations

import re
from pathlib import Path

from skiff.apiserver import httpframing, leanrequest

APISERVER = Path(leanrequest.__file__).parent
ONLY_AFTER_HAND_OFF = {
    "watchstream.py",
    "pod_proxy.py",
    "discovery.py",
    "openapi.py",
    "openapi_v2.py",
    "metrics.py",
    "fastroute.py",
    "leanhttp.py",
    "httpframing.py",
    "leanrequest.py",
}


def test_the_rest_path_reads_only_what_the_lean_request_has() -> None:
    used: dict[str, set[str]] = {}
    for module in sorted(APISERVER.glob("*.py")):
        if module.name in ONLY_AFTER_HAND_OFF:
            continue
        for name in re.findall(r"\brequest\.([A-Za-z_]\w*)", module.read_text()):
            used.setdefault(name, set()).add(module.name)
    assert {"method", "path", "query", "headers", "transport", "get"} <= used.keys()  # the scan finds them
    missing = {name: sorted(where) for name, where in used.items() if not hasattr(leanrequest.LeanRequest, name)}
    assert not missing, f"read by the REST path but not served by leanrequest.LeanRequest: {missing}"

def _dechunk_fed(data: bytes, step: int) -> tuple[bytes | bool, int]:
    """Feed `data` `step` bytes at a time to the chunked-body decoder as the protocol does; (result, end)."""
    buf = bytearray()
    head = httpframing.RequestHead()
    head.chunks, head.scan, head.body_start, head.total = [], 0, 0, 0
    result: bytes | bool = False
    for i in range(0, len(data), step):
        buf += data[i : i + step]
        result = httpframing.dechunk(buf, head)
        if result is not False:
            break
    return result, head.total


def test_chunked_bodies_decode_however_they_arrive() -> None:
    body = b'{"metadata": {"name": "x"}, "data": {"k": "' + b"v" * 300 + b'"}}'
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (body[:1], body[1:100], body[100:]))
    for end in (b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n"):
        for step in (1, 2, 7, 64, len(framed) + len(end)):
            assert _dechunk_fed(framed + end + b"GET /next", step) == (body, len(framed) + len(end)), step


def test_bad_chunk_framing_is_left_to_aiohttp() -> None:
    for bad in (b"zz\r\nabc\r\n", b"3\r\nabcd\r\n", b"\r\n", b"-1\r\n", b"1" * 2000):
        assert _dechunk_fed(bad, 1)[0] is True, bad
    over = b"%x\r\n" % (3 * 1024 * 1024 + 1)
    assert _dechunk_fed(over, len(over))[0] is True  # over the body limit

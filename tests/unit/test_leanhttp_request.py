"""The REST handler chain reads nothing of a request that `leanhttp.LeanRequest` lacks.

Plain REST requests reach the middlewares and handlers as a `LeanRequest`, not aiohttp's
`web.Request`. An attribute a handler starts to read that the light request does not have would
fail only on that path (a 500 to the user), so every `request.<name>` in the modules on it is
checked here. Modules reached only through a hand-off to aiohttp (watches, the pod proxy and
logs, discovery, OpenAPI, metrics.k8s.io, the aiohttp-side dispatch) are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from skiff.apiserver import leanhttp

APISERVER = Path(leanhttp.__file__).parent
ONLY_AFTER_HAND_OFF = {
    "watchstream.py",
    "pod_proxy.py",
    "discovery.py",
    "openapi.py",
    "openapi_v2.py",
    "metrics.py",
    "fastroute.py",
    "leanhttp.py",
}


def test_the_rest_path_reads_only_what_the_lean_request_has() -> None:
    used: dict[str, set[str]] = {}
    for module in sorted(APISERVER.glob("*.py")):
        if module.name in ONLY_AFTER_HAND_OFF:
            continue
        for name in re.findall(r"\brequest\.([A-Za-z_]\w*)", module.read_text()):
            used.setdefault(name, set()).add(module.name)
    assert {"method", "path", "query", "headers", "transport", "get"} <= used.keys()  # the scan finds them
    missing = {name: sorted(where) for name, where in used.items() if not hasattr(leanhttp.LeanRequest, name)}
    assert not missing, f"read by the REST path but not served by leanhttp.LeanRequest: {missing}"

"""Ports for the servers the tests start, picked so that nothing else takes them before they are bound.

The usual trick (bind port 0, read the port, close, hand it to a child that binds
it later) picks from the kernel's ephemeral range, the range every outgoing
connection also takes its local port from: between the pick and the child's bind,
one of the suite's many short connections (each kubectl call, each HTTPS request)
can get that very port, and the child fails with "address already in use". So the
port is drawn below the ephemeral range (and below the NodePort range, which the
service proxy may program on this host), checked free for TCP and UDP on every
address, and never handed out twice by this process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A TCP and UDP port free on every address now, outside the ephemeral range, new to this process."""
    hi = min(_ephemeral_low(), 30000)  # 30000-32767: NodePorts
    lo = 15000 if hi > 17000 else hi // 2
    for _ in range(2000):
        port = random.randrange(lo, hi)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # nothing free below the ephemeral range: the usual trick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

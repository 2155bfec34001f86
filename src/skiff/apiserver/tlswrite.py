"""One write to a TLS connection without asyncio's per-write bookkeeping.

Why this exists: the watch cache writes every event to every watcher that
keeps up (`watchstream._Writer.direct`), and with 1,000 watchers that write
is the server's hottest line. Through `transport.write`, asyncio's
pure-Python TLS layer (`asyncio.sslproto`) spends most of a small write on
bookkeeping -- a write backlog, a buffer size counted up and down, flow
control checked -- around the two things that matter: encrypting into the
memory BIO and handing the bytes to the socket transport.

`write` does exactly those two when nothing else is in flight on the
connection (TLS established, no backlog, neither side of flow control
paused), which is what asyncio's own path ends up doing in that state, and
leaves every other case (handshake, shutdown, congestion, a renegotiation
asking to read, a transport that is not asyncio's TLS) to `transport.write`.
The fast path reads private attributes of `asyncio.sslproto` (the same since
Python 3.11's rewrite); where one is missing it is not taken.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any

_WRAPPED: Any = getattr(getattr(sslproto, "SSLProtocolState", None), "WRAPPED", None)


def write(transport: asyncio.BaseTransport, data: bytes) -> None:
    """`transport.write(data)`, encrypting straight into the socket transport when that is all it would do."""
    proto: Any = getattr(transport, "_ssl_protocol", None)
    try:
        fast = (
            proto is not None
            and _WRAPPED is not None
            and proto._state is _WRAPPED
            and not proto._write_backlog
            and not proto._ssl_writing_paused
            and not proto._app_writing_paused
            and proto._transport is not None
        )
    except AttributeError:  # another Python's sslproto: asyncio's own path
        fast = False
    if fast:
        try:
            count = proto._sslobj.write(data)
        except ssl.SSLError:  # e.g. wants to read first: asyncio's path retries and reports
            count = 0
        pending = proto._outgoing.read()
        if pending:
            proto._transport.write(pending)
        if count >= len(data):
            return
        data = data[count:]
    transport.write(data)  # type: ignore[attr-defined]

"""Where a request's head and body end in a connection's bytes, and whether `leanhttp` serves it.

Why this exists: `leanhttp.LeanProtocol` keeps a connection's state (buffer,
keep-alive, the request being served, hand-off to aiohttp); deciding what the
bytes at the buffer's start are is pure logic with no connection in it, and
is kept here where it can be read and unit-tested on its own.

`parse_head` reads a request head and returns a `RequestHead` only for a
request `leanhttp` serves: HTTP/1.1 GET/POST/PUT/PATCH/DELETE on a path the
REST routes dispatch, not streaming, with well-formed headers and a body
framed by Content-Length or chunked alone. `dechunk` decodes a chunked body
as it arrives, resuming where the last call stopped. Neither consumes the
buffer: anything they refuse (None, True) goes whole to aiohttp, which
answers it as it always did.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from skiff.apiserver import content
from skiff.apiserver.fastroute import Handler, RestRoutes

MAX_HEAD = 64 * 1024  # a longer head goes to aiohttp (which answers 431/400)

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_STREAMING_SEGMENTS = frozenset({"watch", "log", "exec", "attach", "portforward", "proxy"})


class RequestHead:
    """A parsed request head that is ours to serve, waiting for its body."""

    __slots__ = (
        "body_start",
        "chunks",
        "close",
        "expect_continue",
        "handler",
        "headers",
        "length",
        "method",
        "params",
        "path",
        "query_string",
        "route",
        "scan",
        "size",
        "too_large",
        "total",
    )

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    length: int | None
    body_start: int
    total: int
    handler: Handler
    route: web.AbstractRoute
    params: dict[str, str]

    def __init__(self) -> None:
        self.close = False
        self.too_large = False
        self.expect_continue = False
        self.chunks: list[bytes] | None = None  # a chunked body: the chunks decoded so far
        self.scan = 0  # a chunked body: where the next chunk's size line starts in the buffer
        self.size = 0  # a chunked body: its bytes so far


def parse_head(buf: bytearray, end: int, routes: RestRoutes) -> RequestHead | None:
    """The head of the request at `buf`'s start (ending at `end`) if it is one to serve here, else None.

    `routes` decides which paths are served here."""
    text = bytes(buf[:end]).decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or parts[0] not in _METHODS:
        return None
    method, target = parts[0], parts[1]
    path, _, query_string = target.partition("?")
    if (
        not path.startswith("/")
        or "%" in path
        or "{" in path
        or "}" in path
        or "#" in target
        or "//" in path
        or "/." in path
        or not _STREAMING_SEGMENTS.isdisjoint(path.split("/"))
        or "watch=" in query_string
    ):
        return None
    found = routes.find(path)
    if found is None:
        return None
    head = RequestHead()
    head.method, head.path, head.query_string = method, path, query_string
    head.handler, head.route, head.params = found
    fields: list[tuple[str, str]] = []
    length: int | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or name[0] in " \t":  # obs-fold, "Name :", no colon
            return None
        value = value.strip(" \t")
        if not value.isascii():
            value = value.encode("latin-1").decode("utf-8", "surrogateescape")
        lower = name.lower()
        if lower == "content-length":
            if length is not None or not (value.isascii() and value.isdigit()):
                return None
            length = int(value)
        elif lower == "transfer-encoding":
            if head.chunks is not None or value.lower() != "chunked":
                return None  # a coding other than chunked alone: aiohttp's answer
            head.chunks = []
        elif lower == "upgrade":
            return None
        elif lower == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "upgrade" in tokens:
                return None
            head.close = head.close or "close" in tokens
        elif lower == "expect":
            if value.lower() != "100-continue":
                return None  # aiohttp answers 417
            head.expect_continue = True
        elif "\x00" in value or "\r" in value or "\n" in value:
            return None
        fields.append((name, value))
    if head.chunks is not None and length is not None:
        return None  # both framings: aiohttp refuses it
    head.headers = CIMultiDictProxy(CIMultiDict(fields))
    head.length = length
    head.body_start = end + 4
    head.total = head.body_start + (length or 0)
    head.scan = head.body_start
    head.too_large = length is not None and length > content.MAX_BODY
    return head


def dechunk(buf: bytearray, head: RequestHead) -> bytes | bool:
    """The chunked body of `head` in `buf` once it is whole (its end goes to `head.total`); False while more is to come,
    True when it is not ours after all (bad framing, over the size limit: aiohttp answers it)."""
    chunks = head.chunks
    assert chunks is not None
    if len(buf) > 2 * content.MAX_BODY:  # chunk framing around a body of at most MAX_BODY: a flood of tiny chunks
        return True
    pos = head.scan
    while True:
        head.scan = pos  # chunks before it are decoded: a later call goes on from here
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return len(buf) - pos > 1024  # a size line that long is no size line
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip(b" \t")
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 8:
            return True
        size = int(size_text, 16)
        if size == 0:
            if buf[eol + 2 : eol + 4] == b"\r\n":  # no trailers
                head.total = eol + 4
            else:
                end = buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    return len(buf) - eol > MAX_HEAD
                head.total = end + 4
            return b"".join(chunks)
        data_end = eol + 2 + size
        if head.size + size > content.MAX_BODY:
            return True
        if len(buf) < data_end + 2:
            return False
        if buf[data_end : data_end + 2] != b"\r\n":
            return True
        chunks.append(bytes(buf[eol + 2 : data_end]))
        head.size += size
        pos = data_end + 2

"""SPDY/3.1 framing (draft-mbelshe-httpbis-spdy-00 and the 3.1 additions), enough for port-forward.

kubectl port-forward multiplexes connections as SPDY streams (tunnelled in WebSocket messages, or
after a plain `Upgrade: SPDY/3.1`). This module turns bytes into frames and frames into bytes;
what the streams mean is `portforward.py`'s business.

    control frame: 1 | version (15) | type (16) | flags (8) | length (24) | payload
    data frame:    0 | stream id (31)            | flags (8) | length (24) | payload

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are `count, (len name, len value)*` with 32-bit
big-endian lengths, compressed with zlib using the spec's dictionary: one compression context per
direction for the whole session, each block ending with a sync flush.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL, INTERNAL_ERROR = 1, 2, 3, 5, 6

MAX_DATA = 0xFFFFFF

_WORDS = [
    *(
        "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
        "allow authorization cache-control connection content-base content-encoding content-language content-length "
        "content-location content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
        "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
        "user-agent vary via warning www-authenticate method get status"
    ).split(),
    *("200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"),
]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# the header compression dictionary of SPDY/3: length-prefixed common words, then common text
DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3."""


@dataclass
class Data:
    stream_id: int
    data: bytes
    flags: int = 0


@dataclass
class SynStream:
    stream_id: int
    headers: Headers
    flags: int = 0
    associated_id: int = 0
    priority: int = 0


@dataclass
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    entries: list[tuple[int, int, int]]  # (flags, id, value)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int = 0


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


Frame = Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate


def encode_header_block(headers: Headers) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n, v = name.lower().encode(), b"\0".join(x.encode() for x in values)
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        pos, headers = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            (v,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4 : pos + 4 + v]
            pos += 4 + v
            headers[name] = [x.decode() for x in value.split(b"\0")]
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"bad header block: {e}") from e
    return headers


class Codec:
    """One side of a SPDY session: `feed` the peer's bytes to get frames, `encode` frames to send.

    Holds the two zlib contexts, so every frame of the session in each direction must pass through
    the same codec, in order.
    """

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                         zdict=DICTIONARY)  # fmt: skip
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._buffer = bytearray()

    def _compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _decompress(self, data: bytes) -> Headers:
        try:
            return decode_header_block(self._inflate.decompress(data))
        except zlib.error as e:
            raise ProtocolError(f"cannot decompress a header block: {e}") from e

    # --- out ------------------------------------------------------------------------------------
    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            if len(frame.data) > MAX_DATA:
                raise ValueError("a data frame holds at most 16 MiB")
            return struct.pack(">II", frame.stream_id & 0x7FFFFFFF, (frame.flags << 24) | len(frame.data)) + frame.data
        flags = 0
        if isinstance(frame, SynStream):
            kind, flags = SYN_STREAM, frame.flags
            payload = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0)
            payload += self._compress(frame.headers)
        elif isinstance(frame, SynReply):
            kind, flags = SYN_REPLY, frame.flags
            payload = struct.pack(">I", frame.stream_id) + self._compress(frame.headers)
        elif isinstance(frame, HeadersFrame):
            kind, flags = HEADERS, frame.flags
            payload = struct.pack(">I", frame.stream_id) + self._compress(frame.headers)
        elif isinstance(frame, RstStream):
            kind, payload = RST_STREAM, struct.pack(">II", frame.stream_id, frame.status)
        elif isinstance(frame, Settings):
            kind, flags = SETTINGS, frame.flags
            payload = struct.pack(">I", len(frame.entries))
            payload += b"".join(struct.pack(">II", (f << 24) | i, v) for f, i, v in frame.entries)
        elif isinstance(frame, Ping):
            kind, payload = PING, struct.pack(">I", frame.ping_id)
        elif isinstance(frame, GoAway):
            kind, payload = GOAWAY, struct.pack(">II", frame.last_good_stream_id, frame.status)
        elif isinstance(frame, WindowUpdate):
            kind, payload = WINDOW_UPDATE, struct.pack(">II", frame.stream_id, frame.delta)
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"not a SPDY frame: {frame!r}")
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload

    # --- in -------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data` (a partial frame waits for the next call)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer, 0)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = second >> 24
            if first & 0x80000000:
                frame = self._control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Data(first & 0x7FFFFFFF, payload, flags))
        return frames

    def _control(self, version: int, kind: int, flags: int, p: bytes) -> Frame | None:
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} is not supported (only 3)")
        try:
            if kind == SYN_STREAM:
                sid, assoc, prio = struct.unpack_from(">IIB", p, 0)
                return SynStream(sid & 0x7FFFFFFF, self._decompress(p[10:]), flags, assoc & 0x7FFFFFFF, prio >> 5)
            if kind == SYN_REPLY:
                return SynReply(struct.unpack_from(">I", p, 0)[0] & 0x7FFFFFFF, self._decompress(p[4:]), flags)
            if kind == HEADERS:
                return HeadersFrame(struct.unpack_from(">I", p, 0)[0] & 0x7FFFFFFF, self._decompress(p[4:]), flags)
            if kind == RST_STREAM:
                sid, status = struct.unpack_from(">II", p, 0)
                return RstStream(sid & 0x7FFFFFFF, status)
            if kind == SETTINGS:
                (count,) = struct.unpack_from(">I", p, 0)
                entries = []
                for i in range(count):
                    head, value = struct.unpack_from(">II", p, 4 + 8 * i)
                    entries.append((head >> 24, head & 0xFFFFFF, value))
                return Settings(entries, flags)
            if kind == PING:
                return Ping(struct.unpack_from(">I", p, 0)[0])
            if kind == GOAWAY:
                last, status = struct.unpack_from(">II", p, 0) if len(p) >= 8 else (*struct.unpack_from(">I", p), 0)
                return GoAway(last & 0x7FFFFFFF, status)
            if kind == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p, 0)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error as e:
            raise ProtocolError(f"short control frame of type {kind}") from e
        return None  # unknown control frames are ignored, as the spec asks

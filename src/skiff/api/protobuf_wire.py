"""The protobuf wire format, read by hand.

kubectl's typed commands send their request bodies as protobuf (see
`skiff.api.protobuf`). Decoding them needs only the bottom layer of protobuf:
splitting a message into (field number, wire type, value) records. This module
is that layer and nothing more, so that skiff does not depend on a protobuf
runtime or on generated code: what the fields *mean* lives in
`skiff.api.protobuf_schema`.

Every function raises `WireError` (a `ValueError`) on malformed input: a
truncated varint or length, a length running past the end of the buffer, a
field number of 0, or a wire type that protobuf does not define (the deprecated
group wire types 3 and 4 included, since no Kubernetes message uses them).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

VARINT: Final = 0
FIXED64: Final = 1
LENGTH_DELIMITED: Final = 2
FIXED32: Final = 5

_MAX_VARINT_BYTES: Final = 10
_UINT64: Final = 1 << 64


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a base-128 varint at `pos`; return (unsigned value, position after it)."""
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & (_UINT64 - 1), pos + i + 1
        shift += 7
    raise WireError("varint longer than 10 bytes")


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for each record of one message.

    The value is an unsigned int for varints, the raw little-endian bytes for
    the fixed-width types (8 or 4 bytes), and the payload for length-delimited
    records (strings, bytes, nested messages, packed repeated scalars).
    """
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 0x7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos)
            if length > end - pos:
                raise WireError(f"field {number}: length {length} runs past the end of the message")
            value = buf[pos : pos + length]
            pos += length
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise WireError(f"field {number}: truncated 64-bit value")
            value = buf[pos : pos + 8]
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise WireError(f"field {number}: truncated 32-bit value")
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise WireError(f"field {number}: unsupported wire type {wire_type}")
        yield number, wire_type, value


def iter_packed_varints(buf: bytes) -> Iterator[int]:
    """Yield the unsigned varints of a packed repeated scalar field."""
    pos = 0
    while pos < len(buf):
        value, pos = read_varint(buf, pos)
        yield value


def as_int64(value: int) -> int:
    """Reinterpret an unsigned 64-bit varint as a two's-complement int64."""
    return value - _UINT64 if value >= 1 << 63 else value


def as_int32(value: int) -> int:
    """Reinterpret a varint as an int32 (negative int32s are sign-extended to 64 bits on the wire)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def as_double(raw: bytes) -> float:
    """A little-endian IEEE 754 double from a 64-bit record."""
    return float(struct.unpack("<d", raw)[0])


def as_float(raw: bytes) -> float:
    """A little-endian IEEE 754 float from a 32-bit record."""
    return float(struct.unpack("<f", raw)[0])

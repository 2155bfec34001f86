"""Key-range helpers shared by the backends.

Both stores order keys by their UTF-8 bytes (SQLite's BINARY collation on
TEXT, etcd's byte order), which is also Unicode code-point order. A prefix
query is the half-open range [prefix, prefix_end(prefix)).
"""

from __future__ import annotations

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`.

    None means "no upper bound" (empty prefix, or a prefix made only of the
    highest code point).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code in _SURROGATES:
            code = _SURROGATES.stop
        if code <= _MAX_CODE_POINT:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def prefix_end_bytes(prefix: bytes) -> bytes:
    """etcd's range_end for a prefix: the prefix with its last byte incremented.

    Returns b"\\0" (etcd's "to the end of the keyspace") when no such key exists.
    """
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"

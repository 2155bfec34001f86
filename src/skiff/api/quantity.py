"""Kubernetes resource quantities (`250m`, `1.5`, `64Mi`, `12345n`, `1e3`) as exact numbers.

Requests, limits, allocatable and reported usage are all `resource.Quantity`
strings on the wire. Whoever compares or adds them — the scheduler fitting
requests into a node, the HPA dividing usage by requests, a node summing its
pods' usage — needs the same parser, so it lives here, below every layer.
Values are `Fraction`s (exact, like Go's inf.Dec); `milli_value` and `value`
round up as `Quantity.MilliValue()` / `Quantity.Value()` do.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([numkMGTPE]|[KMGTPE]i)?)$")


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


def parse(value: str | int | float) -> Fraction:
    """The exact value of a quantity; numbers (as YAML gives them) are taken as they are."""
    if isinstance(value, bool):
        raise QuantityError(f"quantities must be strings or numbers, not {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"quantities must be finite, not {value!r}")
        return Fraction(str(value))
    m = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise QuantityError(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}"
        )
    number, exponent, suffix = m.groups()
    base = Fraction(number)
    if exponent:
        return base * Fraction(10) ** int(exponent[1:])
    return base * _SUFFIXES[suffix or ""]


def is_quantity(value: object) -> bool:
    try:
        parse(value)  # type: ignore[arg-type]
    except (QuantityError, TypeError):
        return False
    return True


def milli_value(value: str | int | float) -> int:
    """`Quantity.MilliValue()`: thousandths, rounded up (`"250m"` → 250, `"1"` → 1000, `"1n"` → 1)."""
    return math.ceil(parse(value) * 1000)


def value(value: str | int | float) -> int:
    """`Quantity.Value()`: whole units, rounded up (`"64Mi"` → 67108864, `"1m"` → 1)."""
    return math.ceil(parse(value))


def format_milli(milli: int) -> str:
    """A CPU-style quantity from thousandths: 250 → `"250m"`, 2000 → `"2"`."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def format_nano(nano: int) -> str:
    """Nanounits as metrics-server prints CPU usage: `"12345n"` (`"0"` for zero)."""
    return f"{nano}n" if nano else "0"


def format_bytes(n: int) -> str:
    """Bytes in Go's canonical binary form, as memory usage prints: `"64Mi"`, `"123456Ki"`, `"1000"`."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        size = int(_SUFFIXES[suffix])
        if n and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)

"""Quantities parse exactly and round up like Kubernetes' MilliValue/Value."""

from __future__ import annotations

from fractions import Fraction

import pytest

from skiff.api import quantity


@pytest.mark.parametrize(
    ("text", "milli"),
    [
        ("250m", 250),
        ("1", 1000),
        ("1.5", 1500),
        ("12345n", 1),
        ("123456789n", 124),
        ("1n", 1),
        ("0", 0),
        ("2k", 2_000_000),
        ("1e3", 1_000_000),
        ("1Ki", 1_024_000),
        (".5", 500),
        (3, 3000),
        (0.25, 250),
    ],
    ids=str,
)
def test_milli_value(text: str | int | float, milli: int) -> None:
    assert quantity.milli_value(text) == milli


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        ("64Mi", Fraction(64 * 2**20)),
        ("123456Ki", Fraction(123456 * 1024)),
        ("1G", Fraction(10**9)),
        ("100u", Fraction(1, 10**4)),
    ],
    ids=str,
)
def test_parse(text: str, exact: Fraction) -> None:
    assert quantity.parse(text) == exact


@pytest.mark.parametrize("bad", ["", "abc", "1x", "Mi", "1.2.3", "--1", "1 m"], ids=repr)
def test_invalid(bad: str) -> None:
    with pytest.raises(quantity.QuantityError):
        quantity.parse(bad)
    assert not quantity.is_quantity(bad)


def test_format() -> None:
    assert quantity.value("1m") == 1
    assert quantity.format_milli(250) == "250m" and quantity.format_milli(2000) == "2"
    assert quantity.format_nano(12345) == "12345n" and quantity.format_nano(0) == "0"
    assert quantity.format_bytes(2048) == "2Ki" and quantity.format_bytes(1000) == "1000"
    assert quantity.format_bytes(64 * 2**20) == "64Mi" and quantity.format_bytes(123456 * 1024) == "123456Ki"

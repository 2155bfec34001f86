"""Go duration strings parse and print as Go's time.Duration does."""

from __future__ import annotations

import pytest

from skiff.api.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("1.5s", 1.5), ("500ms", 0.5), ("2h", 7200.0), ("0", 0.0), ("-1s", -1.0)],
    ids=str,
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "10", "s", "1x", "1s2", "1 s"], ids=repr)
def test_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10.0, "10s"), (1.5, "1.5s"), (90.0, "1m30s"), (7200.0, "2h0m0s"), (0.25, "250ms"), (0.0, "0s")],
    ids=str,
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)

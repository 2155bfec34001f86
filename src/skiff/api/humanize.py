"""Human-readable ages and durations, exactly as Kubernetes prints them.

kubectl has no client-side printers: the AGE, DURATION, LAST SEEN and
"3 (5m ago)" cells of `kubectl get` are strings the API server computes.
These are ports of apimachinery's `duration.HumanDuration` /
`duration.ShortHumanDuration` and of the printers' `translateTimestampSince`,
so skiff's tables read the same as a real cluster's ("5s", "3m12s", "2d4h",
"10d", "3y20d").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_SECOND_US = 1_000_000
_MINUTE_US = 60 * _SECOND_US
_HOUR_US = 60 * _MINUTE_US
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time.Time, what an unset timestamp serializes as


def _micros(d: timedelta) -> int:
    return d // timedelta(microseconds=1)


def _whole_seconds(us: int) -> int:
    # Go's int(d.Seconds()) truncates toward zero
    return int(us / _SECOND_US) if us < 0 else us // _SECOND_US


def human_duration(d: timedelta) -> str:
    """A succinct duration with ~2-3 significant figures (`duration.HumanDuration`)."""
    us = _micros(d)
    seconds = _whole_seconds(us)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = us // _MINUTE_US
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = us // _HOUR_US
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def short_human_duration(d: timedelta) -> str:
    """A duration with one unit of precision (`duration.ShortHumanDuration`)."""
    us = _micros(d)
    seconds = _whole_seconds(us)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    minutes = us // _MINUTE_US
    if minutes < 60:
        return f"{minutes}m"
    hours = us // _HOUR_US
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: object) -> datetime | None:
    """Parse an RFC 3339 `metav1.Time`/`MicroTime` string; None when absent or unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def since(value: object, now: datetime) -> str:
    """`translateTimestampSince`: the age of a timestamp, or "<unknown>" when it is unset."""
    t = parse_time(value)
    if t is None or t == _ZERO_TIME:
        return "<unknown>"
    return human_duration(now - t)


def utc_now() -> datetime:
    return datetime.now(UTC)

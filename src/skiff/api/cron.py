"""Cron schedules as a CronJob's `spec.schedule` and `spec.timeZone` mean them.

The CronJob controller needs two answers from a schedule: "when is the next
run after t" (to requeue itself exactly then instead of polling) and "which
runs were missed between t0 and t1". Both come from `Schedule.next`. The
grammar is Kubernetes' (robfig/cron `ParseStandard`): five fields —
minute, hour, day of month, month, day of week — each a `*`, a value, a
range `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a comma list of those;
months and weekdays by name too (`jan`, `mon`, case-insensitive); `?`
means `*` in the day fields; descriptors `@yearly` (`@annually`),
`@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly`. When both day
fields are restricted a day matches either (`0 0 1 * mon`: the 1st and
every Monday); when one is `*`, both must match — as cron always did.

Times are wall-clock times in the schedule's time zone (IANA name through
`zoneinfo`; UTC when none is given). Across daylight-saving changes this
behaves like Kubernetes: a wall time that does not exist that day (in the
spring-forward gap) does not run, and one that happens twice (in the
repeated hour) runs twice, once at each instant.

Pure: no I/O, no clock; invalid input raises `CronError` with a message
that says what is wrong, suitable for an API validation error.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronError", "Schedule", "load_time_zone", "parse"]

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: i + 1 for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}
# the earliest local wall time whose instant can follow a given instant lies at most this far back
# (a clock set back by more than this in one step is not handled; none has been since 1900 or so)
_MAX_SETBACK = timedelta(hours=3)
_SEARCH_YEARS = 5  # like robfig/cron: a schedule with no run in five years has none


class CronError(ValueError):
    """An invalid schedule or time zone; the message says what and where."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)


def load_time_zone(name: str | None) -> tzinfo:
    """The IANA zone `name` (UTC when empty); `CronError` for an unknown or malformed name."""
    if not name:
        return UTC
    if name.startswith("/") or ".." in name or name != name.strip():
        raise CronError(f"unknown time zone {name}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {name}") from exc


def _number(text: str, field: _Field, whole: str) -> int:
    if field.names is not None and text.lower() in field.names:
        return field.names[text.lower()]
    if not text.isdigit():
        raise CronError(f"{field.name}: failed to parse {text!r} in {whole!r}: not a number or a known name")
    return int(text)


def _parse_part(part: str, field: _Field) -> tuple[set[int], bool]:
    """The values of one comma-separated part, and whether it counts as `*` (for the day rule)."""
    if not part:
        raise CronError(f"{field.name}: empty item in a list")
    range_text, slash, step_text = part.partition("/")
    star = False
    if range_text in ("*", "?"):
        if range_text == "?" and field.name not in ("day of month", "day of week"):
            raise CronError(f"{field.name}: '?' is allowed only in the day fields")
        low, high, star = field.low, field.high, True
    else:
        first, dash, last = range_text.partition("-")
        low = _number(first, field, part)
        high = _number(last, field, part) if dash else low
        if slash and not dash:
            high = field.high  # `a/n` means `a-max/n`
    step = 1
    if slash:
        if not step_text.isdigit():
            raise CronError(f"{field.name}: failed to parse step {step_text!r} in {part!r}")
        step = int(step_text)
        if step == 0:
            raise CronError(f"{field.name}: step of range should be a positive number: {part!r}")
        if step > 1:
            star = False  # `*/2` restricts the field (robfig/cron clears the star bit)
    if low < field.low:
        raise CronError(f"{field.name}: beginning of range ({low}) below minimum ({field.low}): {part!r}")
    if high > field.high:
        raise CronError(f"{field.name}: end of range ({high}) above maximum ({field.high}): {part!r}")
    if low > high:
        raise CronError(f"{field.name}: beginning of range ({low}) beyond end of range ({high}): {part!r}")
    return set(range(low, high + 1, step)), star


def _parse_field(text: str, field: _Field) -> tuple[tuple[int, ...], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        part_values, part_star = _parse_part(part, field)
        values |= part_values
        star = star or part_star
    return tuple(sorted(values)), star


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the allowed values of each field, and the zone its wall times are in."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool
    tz: tzinfo = UTC

    # --- matching -----------------------------------------------------------------------------
    def _day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime) -> bool:
        """Whether the schedule runs at the minute of `when` (its wall time in the schedule's zone)."""
        local = when.astimezone(self.tz) if when.tzinfo else when
        return (
            local.minute in self.minutes
            and local.hour in self.hours
            and local.month in self.months
            and self._day_matches(local)
        )

    # --- searching ----------------------------------------------------------------------------
    def _next_wall(self, start: datetime) -> datetime | None:
        """The first naive wall time >= `start` (a whole minute) that the fields allow, or None."""
        t = start
        limit = start.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                i = bisect.bisect_right(self.months, t.month)
                t = datetime(t.year, self.months[i], 1) if i < len(self.months) else datetime(t.year + 1, 1, 1)
                continue
            if not self._day_matches(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                i = bisect.bisect_right(self.hours, t.hour)
                day = datetime(t.year, t.month, t.day)
                t = day.replace(hour=self.hours[i]) if i < len(self.hours) else day + timedelta(days=1)
                continue
            if t.minute not in self.minutes:
                i = bisect.bisect_right(self.minutes, t.minute)
                hour = t.replace(minute=0)
                t = hour.replace(minute=self.minutes[i]) if i < len(self.minutes) else hour + timedelta(hours=1)
                continue
            return t
        return None

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants at which the zone's clocks show `wall`: none (gap), one, or two (repeated hour)."""
        found: list[datetime] = []
        for fold in (0, 1):
            aware = wall.replace(tzinfo=self.tz, fold=fold)
            instant = aware.astimezone(UTC)
            if instant.astimezone(self.tz).replace(tzinfo=None) == wall and instant not in found:
                found.append(instant)
        return sorted(found)

    def next(self, after: datetime) -> datetime | None:
        """The first run strictly after `after` (an aware datetime), or None if none within 5 years.

        The answer is in UTC: Python compares and subtracts two datetimes of one zone by their wall
        times, ignoring `fold`, which would make the two runs of a repeated hour look equal.
        """
        if after.tzinfo is None:
            raise ValueError("Schedule.next needs an aware datetime")
        after_utc = after.astimezone(UTC)
        start = (after.astimezone(self.tz) - _MAX_SETBACK).replace(tzinfo=None, second=0, microsecond=0)
        best: datetime | None = None
        bound: datetime | None = None
        wall = self._next_wall(start)
        while wall is not None and (bound is None or wall <= bound):
            for instant in self._instants(wall):
                if instant > after_utc and (best is None or instant < best):
                    best, bound = instant, wall + _MAX_SETBACK
            wall = self._next_wall(wall + timedelta(minutes=1))
        return best

    def times(self, after: datetime, until: datetime) -> list[datetime]:
        """Every run in (after, until], oldest first."""
        out: list[datetime] = []
        t = self.next(after)
        while t is not None and t <= until:
            out.append(t)
            t = self.next(t)
        return out


def parse(expression: str, time_zone: str | None = None) -> Schedule:
    """Parse a five-field cron expression or an @descriptor, its wall times in `time_zone` (IANA; UTC if None)."""
    text = expression.strip()
    if not text:
        raise CronError("empty schedule")
    upper = text.upper()
    if upper.startswith(("TZ=", "CRON_TZ=")):
        raise CronError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    tz = load_time_zone(time_zone)
    if text.startswith("@"):
        std = _DESCRIPTORS.get(text.lower())
        if std is None:
            raise CronError(f"unrecognized descriptor: {text}")
        fields = std.split()
    else:
        fields = text.split()
    if len(fields) != len(_FIELDS):
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {text!r}")
    (minutes, _), (hours, _), (days, days_star), (months, _), (weekdays, weekdays_star) = (
        _parse_field(f, spec) for f, spec in zip(fields, _FIELDS, strict=True)
    )
    return Schedule(
        expression=text,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        days_star=days_star,
        weekdays_star=weekdays_star,
        tz=tz,
    )

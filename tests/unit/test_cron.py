"""Cron schedules: grammar, next run times (also across daylight-saving changes), clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from skiff.api.cron import CronError, parse


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def runs(expr: str, after: datetime, n: int, tz: str | None = None) -> list[datetime]:
    sched = parse(expr, tz)
    out = []
    t = after
    for _ in range(n):
        nxt = sched.next(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 1)),
        ("* * * * *", utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 1)),  # strictly after
        ("*/15 * * * *", utc(2024, 1, 1, 0, 16), utc(2024, 1, 1, 0, 30)),
        ("5 4 * * *", utc(2024, 1, 1, 4, 5), utc(2024, 1, 2, 4, 5)),
        ("0 0 1 1 *", utc(2024, 6, 1), utc(2025, 1, 1)),
        ("0 22 * * 1-5", utc(2024, 3, 1, 23), utc(2024, 3, 4, 22)),  # Friday night -> Monday
        ("0 0 * * sun", utc(2024, 3, 1), utc(2024, 3, 3)),
        ("0 0 1 jan,jul *", utc(2024, 2, 1), utc(2024, 7, 1)),
        ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),  # leap days only
        ("0 9-17/4 * * *", utc(2024, 1, 1, 10), utc(2024, 1, 1, 13)),
        ("10/20 * * * *", utc(2024, 1, 1, 0, 31), utc(2024, 1, 1, 0, 50)),  # a/n means a-max/n
        ("0 0 ? * MON", utc(2024, 1, 1), utc(2024, 1, 8)),
        ("59 23 31 12 *", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_next(expr: str, after: datetime, expected: datetime) -> None:
    assert parse(expr).next(after) == expected


@pytest.mark.parametrize(
    ("descriptor", "after", "expected"),
    [
        ("@hourly", utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 1)),
        ("@daily", utc(2024, 1, 1, 0, 30), utc(2024, 1, 2)),
        ("@midnight", utc(2024, 1, 1, 0, 30), utc(2024, 1, 2)),
        ("@weekly", utc(2024, 1, 1), utc(2024, 1, 7)),  # Sunday
        ("@monthly", utc(2024, 1, 15), utc(2024, 2, 1)),
        ("@yearly", utc(2024, 1, 15), utc(2025, 1, 1)),
        ("@annually", utc(2024, 1, 15), utc(2025, 1, 1)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_descriptors(descriptor: str, after: datetime, expected: datetime) -> None:
    assert parse(descriptor).next(after) == expected


def test_day_of_month_or_day_of_week() -> None:
    # both restricted: either matches (the 13th, and every Friday)
    days = [t.day for t in runs("0 0 13 * fri", utc(2024, 9, 1), 4)]
    assert days == [6, 13, 20, 27]
    # one of them `*`: both must match
    assert [t.day for t in runs("0 0 * * fri", utc(2024, 9, 1), 2)] == [6, 13]
    # a step in the day field restricts it, like robfig/cron: days 1,3,5,... or Mondays
    sched = parse("0 0 */2 * mon")
    assert sched.next(utc(2024, 9, 1)) == utc(2024, 9, 2)  # Monday the 2nd (an even day)
    assert sched.next(utc(2024, 9, 2)) == utc(2024, 9, 3)  # the 3rd: odd day


def test_names_are_case_insensitive_and_mixed_with_numbers() -> None:
    a = parse("0 0 * JAN-Mar Mon,3")
    assert a.months == (1, 2, 3)
    assert a.weekdays == (1, 3)


def test_time_zone_wall_clock() -> None:
    # 09:00 in New York is 14:00 UTC in winter, 13:00 UTC in summer
    sched = parse("0 9 * * *", "America/New_York")
    assert sched.next(utc(2024, 1, 10)) == utc(2024, 1, 10, 14)
    assert sched.next(utc(2024, 7, 10)) == utc(2024, 7, 10, 13)
    assert sched.next(utc(2024, 7, 10)).tzinfo is UTC  # type: ignore[union-attr]


def test_dst_spring_forward_skips_the_missing_hour() -> None:
    # 2024-03-10: clocks in New York go from 02:00 EST straight to 03:00 EDT
    ny = ZoneInfo("America/New_York")
    sched = parse("30 2 * * *", "America/New_York")
    nxt = sched.next(datetime(2024, 3, 9, 3, tzinfo=ny))
    assert nxt == datetime(2024, 3, 11, 2, 30, tzinfo=ny)  # no 02:30 on the 10th
    hourly = runs("0 * * * *", datetime(2024, 3, 10, 0, 30, tzinfo=ny), 3, "America/New_York")
    assert [t.astimezone(UTC).hour for t in hourly] == [6, 7, 8]  # 01:00 EST, 03:00 EDT, 04:00 EDT
    assert [t.astimezone(ny).hour for t in hourly] == [1, 3, 4]
    assert hourly[1] - hourly[0] == timedelta(hours=1)


def test_dst_fall_back_runs_the_repeated_time_twice() -> None:
    # 2024-11-03: New York clocks show 01:00-01:59 twice (EDT, then EST)
    sched = parse("30 1 * * *", "America/New_York")
    first = sched.next(utc(2024, 11, 3, 0))
    assert first == utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    second = sched.next(first)  # type: ignore[arg-type]
    assert second == utc(2024, 11, 3, 6, 30)  # 01:30 EST, an hour later
    third = sched.next(second)  # type: ignore[arg-type]
    assert third == utc(2024, 11, 4, 6, 30)
    # every 20 minutes through the repeated hour: six runs in 01:00-01:59 local, in instant order
    times = runs("*/20 * * * *", utc(2024, 11, 3, 4, 50), 7, "America/New_York")
    assert times == [utc(2024, 11, 3, 5, m) for m in (0, 20, 40)] + [utc(2024, 11, 3, 6, m) for m in (0, 20, 40)] + [
        utc(2024, 11, 3, 7, 0)
    ]


def test_other_zone_and_half_hour_offset() -> None:
    sched = parse("0 0 * * *", "Asia/Kolkata")  # UTC+05:30
    assert sched.next(utc(2024, 1, 1, 12)) == utc(2024, 1, 1, 18, 30)


def test_times_lists_missed_runs() -> None:
    sched = parse("*/10 * * * *")
    assert sched.times(utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 35)) == [
        utc(2024, 1, 1, 0, 10),
        utc(2024, 1, 1, 0, 20),
        utc(2024, 1, 1, 0, 30),
    ]


def test_never_matching_schedule_has_no_next() -> None:
    assert parse("0 0 30 2 *").next(utc(2024, 1, 1)) is None


def test_matches() -> None:
    sched = parse("*/5 10 * * *", "Europe/Paris")
    assert sched.matches(datetime(2024, 6, 1, 10, 5, tzinfo=ZoneInfo("Europe/Paris")))
    assert sched.matches(utc(2024, 6, 1, 8, 5))  # 10:05 in Paris (CEST)
    assert not sched.matches(utc(2024, 6, 1, 10, 5))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "empty schedule"),
        ("* * * *", "expected exactly 5 fields, found 4"),
        ("* * * * * *", "expected exactly 5 fields, found 6"),
        ("60 * * * *", "minute: end of range (60) above maximum (59)"),
        ("* 24 * * *", "hour: end of range (24) above maximum (23)"),
        ("* * 0 * *", "day of month: beginning of range (0) below minimum (1)"),
        ("* * * 13 *", "month: end of range (13) above maximum (12)"),
        ("* * * * 7", "day of week: end of range (7) above maximum (6)"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
        ("*/0 * * * *", "step of range should be a positive number"),
        ("*/x * * * *", "failed to parse step 'x'"),
        ("abc * * * *", "minute: failed to parse 'abc'"),
        ("* * * foo *", "month: failed to parse 'foo'"),
        ("1,,2 * * * *", "minute: empty item in a list"),
        ("? * * * *", "'?' is allowed only in the day fields"),
        ("@every 5m", "unrecognized descriptor: @every 5m"),
        ("@fortnightly", "unrecognized descriptor"),
        ("TZ=UTC * * * * *", "use timeZone field instead"),
        ("CRON_TZ=Europe/Paris 0 * * * *", "use timeZone field instead"),
    ],
    ids=lambda v: v or "empty",
)
def test_invalid_expressions(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse(expr)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "Not A Zone"])
def test_invalid_time_zone(zone: str) -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        parse("* * * * *", zone)


def test_next_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse("* * * * *").next(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("expr", "earliest", "at", "expected", "count"),
    [
        ("*/5 * * * *", utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 4), None, 0),
        ("*/5 * * * *", utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 5), 1),
        ("*/5 * * * *", utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 17), utc(2024, 1, 1, 0, 15), 3),
        # months of missed minutes: the count stops past 100, the latest time is still exact
        ("* * * * *", utc(2024, 1, 1), utc(2024, 3, 1, 12, 30, 30), utc(2024, 3, 1, 12, 30), 101),
        ("0 0 * * *", utc(2020, 1, 1), utc(2024, 3, 1, 12), utc(2024, 3, 1), 101),
    ],
)
def test_cronjob_most_recent_missed(
    expr: str, earliest: datetime, at: datetime, expected: datetime | None, count: int
) -> None:
    from skiff.controllers.cronjob import job_name, most_recent_missed

    last, missed = most_recent_missed(parse(expr), earliest, at)
    assert (last, missed) == (expected, count)
    if last is not None:
        assert job_name("hello", last) == f"hello-{int(last.timestamp()) // 60}"


def test_cronjob_local_zone_from_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.controllers.cronjob import local_zone_name

    monkeypatch.setenv("TZ", ":Europe/Paris")
    assert local_zone_name() == "Europe/Paris"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert local_zone_name() is None  # then UTC, as schedules without a zone

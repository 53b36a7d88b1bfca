"""Event-time boundaries (UTC and KST days and hours) that every core relies on."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from coinpilot import clock


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_floors_drop_seconds_and_minutes() -> None:
    ts = utc(2026, 3, 1, 12, 34, 56, 789)
    assert clock.floor_minute(ts) == utc(2026, 3, 1, 12, 34)
    assert clock.floor_hour(ts) == utc(2026, 3, 1, 12)


def test_naive_times_are_taken_as_utc_and_aware_times_are_converted() -> None:
    assert clock.ensure_utc(datetime(2026, 1, 1, 9)) == utc(2026, 1, 1, 9)
    assert clock.ensure_utc(datetime(2026, 1, 1, 9, tzinfo=clock.KST)) == utc(2026, 1, 1, 0)


@pytest.mark.parametrize(
    ("ts", "boundary", "expected"),
    [
        pytest.param(utc(2026, 1, 1, 23, 59), time(0), date(2026, 1, 1), id="utc-day-before-midnight"),
        pytest.param(utc(2026, 1, 2, 0, 0), time(0), date(2026, 1, 2), id="utc-day-at-midnight"),
        pytest.param(utc(2026, 1, 2, 14, 59), time(15), date(2026, 1, 1), id="kst-midnight-boundary-before"),
        pytest.param(utc(2026, 1, 2, 15, 0), time(15), date(2026, 1, 2), id="kst-midnight-boundary-at"),
    ],
)
def test_trading_day_follows_the_configured_boundary(ts: datetime, boundary: time, expected: date) -> None:
    assert clock.trading_day(ts, boundary) == expected
    start = clock.trading_day_start(expected, boundary)
    assert start <= ts < start + clock.DAY


def test_kst_day_starts_at_15_utc_the_day_before() -> None:
    assert clock.kst_day_start(utc(2026, 1, 1, 16)) == utc(2026, 1, 1, 15)
    assert clock.kst_day_start(utc(2026, 1, 1, 14, 59)) == utc(2025, 12, 31, 15)


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        pytest.param(
            utc(2026, 1, 1, 12, 59), utc(2026, 1, 1, 13, 0), utc(2026, 1, 1, 13), id="crossing-fires"
        ),
        pytest.param(utc(2026, 1, 1, 13, 0), utc(2026, 1, 1, 13, 1), None, id="after-does-not-fire-twice"),
        pytest.param(utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 59), None, id="before-does-not-fire"),
        pytest.param(
            utc(2026, 1, 1, 10, 0), utc(2026, 1, 3, 1, 0), utc(2026, 1, 2, 13), id="gap-fires-once-latest"
        ),
        pytest.param(None, utc(2026, 1, 1, 13, 30), None, id="no-history-no-fire"),
    ],
)
def test_a_daily_boundary_fires_once_when_event_time_passes_it(previous, now, expected) -> None:
    assert clock.crossed_daily_boundary(previous, now, time(13)) == expected


def test_next_and_last_boundaries_bracket_the_time() -> None:
    ts = utc(2026, 1, 1, 0, 3)
    assert clock.next_daily_boundary(ts, time(0, 5)) == utc(2026, 1, 1, 0, 5)
    assert clock.last_daily_boundary(ts, time(0, 5)) == utc(2025, 12, 31, 0, 5)
    assert clock.next_daily_boundary(utc(2026, 1, 1, 0, 5), time(0, 5)) == utc(2026, 1, 1, 0, 5)


def test_seconds_until_next_utc_midnight() -> None:
    assert clock.seconds_until_next_utc_midnight(utc(2026, 1, 1, 23, 0)) == 3600
    assert clock.seconds_until_next_utc_midnight(utc(2026, 1, 1)) == 86400


def test_iso_minute_is_compact_and_utc() -> None:
    ts = datetime(2026, 1, 1, 9, 30, 15, tzinfo=clock.KST)
    assert clock.iso_minute(ts) == "2026-01-01T00:30Z"
    assert clock.iso_minute(ts + timedelta(seconds=30)) == "2026-01-01T00:30Z"

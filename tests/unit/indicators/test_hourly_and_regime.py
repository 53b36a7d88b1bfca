"""Hourly resampling (§2.5, §13.3 D) and the regime (§2.6 rebuild, §13.3 E)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from coinpilot.contracts import Regime
from coinpilot.indicators import (
    HOUR_MS,
    MINUTE_MS,
    HourBar,
    RegimeRule,
    classify_regime,
    regime_from_closes,
    resample_hourly,
)

T0 = int(datetime(2026, 1, 1, 0, 30, tzinfo=UTC).timestamp() * 1000)
H0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def case_d_rows() -> list[tuple[int, float, float, float, float, float]]:
    """120 consecutive 1m rows from 00:30 with open=high=low=close=i and volume 1."""
    return [(T0 + i * MINUTE_MS, float(i), float(i), float(i), float(i), 1.0) for i in range(120)]


def bar(hour: int, o: float, h: float, lo: float, c: float, v: float) -> HourBar[float]:
    return HourBar(H0 + hour * HOUR_MS, o, h, lo, c, v, int(v))


def test_resampling_case_d_with_the_forming_hour_gives_the_three_original_buckets() -> None:
    assert resample_hourly(case_d_rows(), include_forming=True) == [
        bar(0, 0, 29, 0, 29, 30),
        bar(1, 30, 89, 30, 89, 60),
        bar(2, 90, 119, 90, 119, 30),
    ]


def test_the_live_rule_drops_the_forming_hour() -> None:
    assert [b.start_ms for b in resample_hourly(case_d_rows())] == [H0, H0 + HOUR_MS]


def test_an_hour_is_closed_by_its_59th_minute() -> None:
    rows = case_d_rows()[:90]  # 00:30 .. 01:59
    assert [b.start_ms for b in resample_hourly(rows)] == [H0, H0 + HOUR_MS]


def test_an_hour_is_closed_when_event_time_reaches_its_end() -> None:
    rows = case_d_rows()[:100]  # last row 02:09
    assert len(resample_hourly(rows, as_of_ms=H0 + 3 * HOUR_MS)) == 3
    assert len(resample_hourly(rows, as_of_ms=H0 + 3 * HOUR_MS - 1)) == 2


def test_hours_without_a_candle_do_not_exist() -> None:
    rows = [(H0, 1.0, 1.0, 1.0, 1.0, 1.0), (H0 + 3 * HOUR_MS + 5 * MINUTE_MS, 2.0, 3.0, 1.5, 2.5, 4.0)]
    bars = resample_hourly(rows, include_forming=True)
    assert [b.start_ms for b in bars] == [H0, H0 + 3 * HOUR_MS]
    assert bars[1].count == 1


@pytest.mark.parametrize(
    ("ma50", "ma200", "expected"),
    [
        pytest.param(102.01, 100.0, Regime.BULL, id="above-plus-2-is-bull"),
        pytest.param(102.0, 100.0, Regime.SIDEWAYS, id="exactly-plus-2-is-sideways"),
        pytest.param(97.99, 100.0, Regime.BEAR, id="below-minus-2-is-bear"),
        pytest.param(98.0, 100.0, Regime.SIDEWAYS, id="exactly-minus-2-is-sideways"),
        pytest.param(math.nan, 100.0, Regime.UNKNOWN, id="nan-is-unknown"),
        pytest.param(None, 100.0, Regime.UNKNOWN, id="none-is-unknown"),
        pytest.param(100.0, None, Regime.UNKNOWN, id="no-slow-ma-is-unknown"),
        pytest.param(1.0, 0.0, Regime.SIDEWAYS, id="zero-slow-ma-gives-diff-0"),
    ],
)
def test_regime_thresholds_of_case_e(ma50: float | None, ma200: float | None, expected: Regime) -> None:
    assert classify_regime(ma50, ma200) is expected


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        pytest.param(0, Regime.UNKNOWN, id="no-hours"),
        pytest.param(50, Regime.UNKNOWN, id="ma50-known-but-not-200-hours"),
        pytest.param(199, Regime.UNKNOWN, id="199-closed-hours"),
        pytest.param(200, Regime.BULL, id="200-closed-hours"),
    ],
)
def test_regime_is_unknown_until_200_closed_hours(hours: int, expected: Regime) -> None:
    closes = [100.0 + i for i in range(hours)]  # a steady rise: MA50 well above MA200
    reading = regime_from_closes(closes)
    assert reading.regime is expected
    assert reading.hourly_count == hours
    assert math.isnan(reading.ma50) is (hours < 50)


def test_regime_reads_only_the_last_200_closed_hours() -> None:
    history = [1.0] * 500 + [100.0] * 200
    assert regime_from_closes(history) == regime_from_closes(history[-200:])
    assert regime_from_closes(history).regime is Regime.SIDEWAYS


def test_regime_values_are_the_simple_averages() -> None:
    closes = [float(i) for i in range(1, 201)]
    reading = regime_from_closes(closes)
    assert reading.ma50 == sum(closes[-50:]) / 50
    assert reading.ma200 == sum(closes) / 200
    assert reading.diff_pct == pytest.approx((175.5 - 100.5) / 100.5 * 100)


def test_a_configured_rule_changes_the_thresholds() -> None:
    rule = RegimeRule(ma_fast_period=2, ma_slow_period=4, bull_threshold_pct=50, min_hourly_candles=4)
    assert regime_from_closes([1.0, 1.0, 2.0, 2.0], rule).regime is Regime.SIDEWAYS  # +33 %
    assert regime_from_closes([1.0, 1.0, 3.0, 3.0], rule).regime is Regime.SIDEWAYS  # +50 % is not > 50
    assert regime_from_closes([1.0, 1.0, 4.0, 4.0], rule).regime is Regime.BULL  # +60 %

"""§9.1 performance figures: the original examples (§13.3 M) and the rebuild's guards."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from coinpilot.analytics.performance import (
    DAILY_PERIODS_PER_YEAR,
    HOURLY_PERIODS_PER_YEAR,
    PerformanceReport,
    generate_report,
    max_drawdown_pct,
    sharpe_annualised,
    sharpe_raw,
    simple_returns,
    win_rate,
)


@pytest.mark.parametrize(
    ("equity", "expected"),
    [
        pytest.param([100, 110, 99, 120], 10.0, id="spec-example-is-ten-percent"),
        pytest.param([], 0.0, id="empty-curve-is-zero"),
        pytest.param([100], 0.0, id="single-point-is-zero"),
        pytest.param([100, 120, 150], 0.0, id="rising-curve-is-zero"),
        pytest.param([100, 50, 200, 100], 50.0, id="deepest-of-two-falls"),
        pytest.param([0, 0, 10, 5], 50.0, id="zero-peak-is-guarded"),
        pytest.param([-10, -20, 5], 0.0, id="negative-peak-is-guarded"),
        pytest.param([Decimal("10000000"), Decimal("9900000")], 1.0, id="decimal-input"),
    ],
)
def test_max_drawdown_pct(equity: list[float], expected: float) -> None:
    assert max_drawdown_pct(equity) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("returns", "expected"),
    [
        pytest.param([0.01, 0.02, 0.03], 2.0, id="spec-example-is-two"),
        pytest.param([], 0.0, id="empty-is-zero"),
        pytest.param([0.05], 0.0, id="single-return-is-zero-not-nan"),
        pytest.param([0.01, 0.01, 0.01], 0.0, id="constant-returns-are-zero"),
        pytest.param([0.01, -0.01], 0.0, id="mean-zero-is-zero"),
    ],
)
def test_sharpe_raw(returns: list[float], expected: float) -> None:
    assert sharpe_raw(returns) == pytest.approx(expected)


def test_sharpe_raw_uses_sample_std_with_ddof_one() -> None:
    # mean 0.02, sample std 0.01 (population std would give 2.449...)
    assert sharpe_raw([0.01, 0.02, 0.03]) == pytest.approx(2.0)
    assert sharpe_raw([0.02, 0.03, 0.04], risk_free=0.01) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("periods", "expected"),
    [
        pytest.param(HOURLY_PERIODS_PER_YEAR, 2.0 * math.sqrt(8760), id="hourly"),
        pytest.param(DAILY_PERIODS_PER_YEAR, 2.0 * math.sqrt(365), id="daily"),
    ],
)
def test_sharpe_annualised_scales_raw_by_root_periods(periods: int, expected: float) -> None:
    assert sharpe_annualised([0.01, 0.02, 0.03], periods) == pytest.approx(expected)


def test_sharpe_annualised_rejects_non_positive_periods() -> None:
    with pytest.raises(ValueError, match="periods_per_year"):
        sharpe_annualised([0.01, 0.02], 0)


@pytest.mark.parametrize(
    ("pnls", "expected"),
    [
        pytest.param([10, -5, 0, 20], 0.5, id="spec-example-zero-is-a-loss"),
        pytest.param([], 0.0, id="no-trades-is-zero"),
        pytest.param([Decimal("1"), Decimal("-1")], 0.5, id="decimals"),
    ],
)
def test_win_rate(pnls: list[float], expected: float) -> None:
    assert win_rate(pnls) == expected


def test_simple_returns_drop_the_first_point() -> None:
    assert simple_returns([100, 110, 99]) == pytest.approx([0.1, -0.1])


def test_generate_report_summarises_curve_and_trades() -> None:
    report = generate_report([100, 110, 99, 120], [10, -5, 0, 20], periods_per_year=DAILY_PERIODS_PER_YEAR)
    returns = [0.1, -0.1, 120 / 99 - 1]
    assert report == PerformanceReport(
        total_return_pct=pytest.approx(20.0),
        mdd_pct=pytest.approx(10.0),
        sharpe_ratio=pytest.approx(sharpe_raw(returns)),
        sharpe_annualised=pytest.approx(sharpe_raw(returns) * math.sqrt(365)),
        win_rate=0.5,
        total_trades=4,
    )


def test_generate_report_on_an_empty_curve_is_all_zero() -> None:
    assert generate_report([], []) == PerformanceReport(0.0, 0.0, 0.0, 0.0, 0.0, 0)

"""RSI exactly as BEHAVIOUR §2.2 defines it (§13.3 A), against hand values, pandas and TA-Lib."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from coinpilot.indicators import (
    InsufficientDataError,
    price_changes,
    rsi_min_lookback,
    rsi_series,
    rsi_tail,
    rsi_tail_and_last,
)

# §13.3 A: 20 closes.
CLOSES = [
    44.34,
    44.09,
    44.15,
    43.61,
    44.33,
    44.83,
    45.10,
    45.42,
    45.84,
    46.08,
    45.89,
    46.03,
    45.61,
    46.28,
    46.28,
    46.00,
    46.03,
    46.41,
    46.22,
    45.64,
]


@pytest.mark.parametrize(
    ("period", "index", "expected"),
    [
        pytest.param(14, 13, 71.8024, id="rsi14-first-defined-at-index-13"),
        pytest.param(14, 19, 54.1793, id="rsi14-last"),
        pytest.param(7, 6, 73.4374, id="rsi7-first-defined-at-index-6"),
        pytest.param(7, 19, 45.4147, id="rsi7-last"),
    ],
)
def test_rsi_of_case_a_matches_the_hand_values(period: int, index: int, expected: float) -> None:
    assert round(rsi_series(CLOSES, period)[index], 4) == expected


@pytest.mark.parametrize(("period", "first"), [(14, 13), (7, 6)])
def test_rsi_is_undefined_before_index_period_minus_one(period: int, first: int) -> None:
    values = rsi_series(CLOSES, period)
    assert all(math.isnan(v) for v in values[:first])
    assert not any(math.isnan(v) for v in values[first:])


def test_last_five_rsi7_of_case_a_and_their_minimum() -> None:
    last5 = [round(v, 4) for v in rsi_series(CLOSES, 7)[-5:]]
    assert last5 == [61.9253, 62.5933, 70.2951, 62.7576, 45.4147]
    assert round(rsi_min_lookback(rsi_series(CLOSES, 7), 5), 4) == 45.4147


def test_rsi_tail_returns_the_same_values_as_the_full_series() -> None:
    gains, losses = price_changes(CLOSES)
    assert rsi_tail(gains, losses, 7, 5) == rsi_series(CLOSES, 7)[-5:]
    assert rsi_tail(gains, losses, 14, 1) == rsi_series(CLOSES, 14)[-1:]


@pytest.mark.parametrize(("rows", "period"), [(10, 14), (14, 14), (7, 7)])
def test_rsi_with_fewer_than_period_plus_one_closes_raises(rows: int, period: int) -> None:
    with pytest.raises(InsufficientDataError):
        rsi_series(CLOSES[:rows], period)


@pytest.mark.parametrize(
    ("closes", "expected"),
    [
        pytest.param([100.0] * 20, None, id="flat-prices-are-undefined"),
        pytest.param([100.0 + i for i in range(20)], 100.0, id="only-gains-give-100"),
        pytest.param([100.0 - i for i in range(20)], 0.0, id="only-losses-give-0"),
    ],
)
def test_rsi_edge_values(closes: list[float], expected: float | None) -> None:
    last = rsi_series(closes, 14)[-1]
    assert math.isnan(last) if expected is None else last == expected


def test_rsi_of_a_steadily_falling_series_stays_below_50() -> None:
    closes = [50_000.0 - 100 * i for i in range(60)]
    assert all(0 <= v < 50 for v in rsi_series(closes, 14)[13:])


def pandas_rsi(closes: np.ndarray, period: int) -> np.ndarray:
    """The original's formula: pandas ewm(alpha=1/p, adjust=False, min_periods=p), first diff = 0."""
    d = pd.Series(closes).diff()
    gain = d.clip(lower=0).fillna(0.0)
    loss = (-d).clip(lower=0).fillna(0.0)
    a = gain.ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    b = loss.ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    return (100 - 100 / (1 + a / b)).to_numpy()


@pytest.mark.parametrize("period", [14, 7])
def test_rsi_on_real_windows_equals_the_original_pandas_formula(btc_2025, period: int) -> None:
    closes = btc_2025["close"]
    for end in range(200, len(closes), 9_973):
        window = closes[end - 200 : end]
        ours = np.array(rsi_series(window.tolist(), period))
        np.testing.assert_allclose(ours, pandas_rsi(window, period), rtol=0, atol=1e-9)


def test_talib_rsi_is_seeded_differently_and_would_fail_case_a() -> None:
    """TA-Lib seeds Wilder's average with the SMA of the first ``p`` changes: first defined one
    index later (14, not 13) and a different value there (70.4641 instead of 71.8024)."""
    theirs = talib.RSI(np.array(CLOSES), 14)
    assert math.isnan(theirs[13])
    assert round(theirs[14], 4) == 70.4641
    assert round(rsi_series(CLOSES, 14)[14], 4) == 71.8024


def test_talib_rsi_on_real_200_candle_windows_differs_by_well_under_a_thousandth_of_a_point(btc_2025) -> None:
    """On the 200-candle window the seed has mostly decayed: RSI(14) differs by up to ~2e-4
    points, RSI(7) by ~1e-10 (measured on the 90-day file), never exactly zero for RSI(14)."""
    closes = btc_2025["close"]
    worst = {14: 0.0, 7: 0.0}
    for end in range(200, len(closes), 997):
        window = closes[end - 200 : end]
        for period in worst:
            diff = abs(rsi_series(window.tolist(), period)[-1] - talib.RSI(window, period)[-1])
            worst[period] = max(worst[period], diff)
    assert 0 < worst[14] < 1e-3
    assert worst[7] < 1e-8


def test_one_pass_for_both_rsis_is_bitwise_the_two_separate_passes() -> None:
    rng = np.random.default_rng(7)
    for case in range(300):
        size = int(rng.integers(15, 241))
        closes = (100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, size)))).tolist()
        if case % 5 == 0:
            closes[size // 2 :] = [closes[size // 2]] * (size - size // 2)  # a flat stretch: B = 0
        tail = int(rng.integers(1, 300))
        gains, losses = price_changes(closes)
        short, last = rsi_tail_and_last(gains, losses, 7, tail, 14)
        assert [x.hex() for x in short] == [x.hex() for x in rsi_tail(gains, losses, 7, tail)]
        assert last.hex() == rsi_tail(gains, losses, 14, 1)[-1].hex()


def test_one_pass_needs_a_window_long_enough_for_the_longer_rsi() -> None:
    gains, losses = price_changes(CLOSES[:14])
    with pytest.raises(InsufficientDataError):
        rsi_tail_and_last(gains, losses, 7, 2, 14)

"""SMA, Bollinger (sample std), volume ratios and the RSI(7) low (§2.3, §13.3 A and B)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from coinpilot.indicators import (
    InsufficientDataError,
    bollinger,
    recent_vol_ratios,
    sample_std_last,
    sma,
    vol_ratio,
    vol_ratio_series,
)
from tests.unit.indicators.test_rsi import CLOSES


def test_bollinger_of_case_a_uses_the_sample_standard_deviation() -> None:
    lower, mid, upper = bollinger(CLOSES)
    _, std = sample_std_last(CLOSES, 20)
    assert (round(mid, 4), round(std, 6), round(lower, 6), round(upper, 6)) == (
        45.4090,
        0.875328,
        43.658344,
        47.159656,
    )


def test_sma_needs_period_rows() -> None:
    with pytest.raises(InsufficientDataError):
        sma(CLOSES[:19], 20)
    assert sma(CLOSES, 20) == pytest.approx(45.409, abs=1e-12)


def test_sma_and_std_agree_with_talib_on_real_data(btc_2025) -> None:
    """TA-Lib's SMA keeps a running total and STDDEV is the population std (ddof=0): they agree
    with ours to rounding once STDDEV is scaled by sqrt(20/19)."""
    closes = btc_2025["close"][:5_000]
    talib_sma = talib.SMA(closes, 20)
    talib_std = talib.STDDEV(closes, 20, 1.0) * math.sqrt(20 / 19)
    for end in range(20, len(closes), 37):
        window = closes[:end].tolist()
        mean, std = sample_std_last(window, 20)
        assert mean == pytest.approx(talib_sma[end - 1], rel=1e-12)
        assert std == pytest.approx(talib_std[end - 1], rel=1e-6, abs=1e-9)
        assert std == pytest.approx(float(np.std(closes[end - 20 : end], ddof=1)), rel=1e-9)


@pytest.mark.parametrize(
    ("volumes", "ratio", "last_series_value"),
    [
        pytest.param([100.0] * 20 + [200.0], 2.0, 2.0, id="double-the-average-is-2"),
        pytest.param([0.0] * 20 + [5.0], 0.0, math.inf, id="zero-mean-is-0-but-inf-in-the-series"),
        pytest.param([0.0] * 21, 0.0, 0.0, id="all-zero-is-0-and-the-series-nan-becomes-0"),
    ],
)
def test_volume_ratio_of_case_b(volumes: list[float], ratio: float, last_series_value: float) -> None:
    assert vol_ratio(volumes) == ratio
    assert recent_vol_ratios(volumes)[-1] == last_series_value


def test_volume_ratio_needs_21_rows() -> None:
    with pytest.raises(InsufficientDataError):
        vol_ratio([1.0] * 20)


def test_recent_volume_ratios_are_the_last_five_of_the_series_oldest_first() -> None:
    volumes = [10.0] * 20 + [20.0, 10.0, 30.0, 10.0, 40.0]
    series = vol_ratio_series(volumes)
    assert all(math.isnan(v) for v in series[:20])
    assert recent_vol_ratios(volumes) == series[-5:]
    assert recent_vol_ratios(volumes)[0] == 2.0

"""The vectorised batch path equals the live window bit for bit (here across the real 2023 gap)."""

from __future__ import annotations

import numpy as np
import pytest

from coinpilot.indicators import (
    IndicatorParams,
    MinuteWindow,
    compute_history,
    minute_batch,
    param_values,
    regime_from_closes,
    resample_hourly,
)
from coinpilot.indicators.hourly import resample_hourly_arrays

ROWS = 20_000  # 13.9 days of March 2023: the 80-minute gap and the first regimes are inside
PARAMS = (
    IndicatorParams(),
    IndicatorParams(
        bb_recovery_sustain_candles=2, bb_touch_lookback=12, ma_period=7, rsi_7_recovery_lookback=9
    ),
)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal including NaN positions, and bitwise for every number."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    return bool(
        np.array_equal(np.nan_to_num(a, nan=0.0).view(np.int64), np.nan_to_num(b, nan=0.0).view(np.int64))
    )


@pytest.fixture(scope="module")
def live_columns(btc_2023) -> dict[IndicatorParams, dict[str, np.ndarray]]:
    ts, close, volume = (btc_2023[k][:ROWS] for k in ("ts", "close", "volume"))
    window = MinuteWindow()
    columns: dict[IndicatorParams, dict[str, list]] = {p: {} for p in PARAMS}
    for i in range(ROWS):
        window = window.push(int(ts[i]), float(close[i]), float(volume[i]))
        for params in PARAMS:
            values = window.values(params)
            for name in values.__slots__:
                value = getattr(values, name)
                if name == "recent_vol_ratios":
                    value = value if value is not None else (np.nan,) * 5
                elif name == "bb_touch_recovery":
                    value = -1 if value is None else int(value)
                columns[params].setdefault(name, []).append(value)
    return {p: {k: np.array(v) for k, v in cols.items()} for p, cols in columns.items()}


@pytest.mark.parametrize("params", PARAMS, ids=["default-params", "other-lookbacks"])
def test_batch_values_equal_the_live_window_bitwise(btc_2023, live_columns, params: IndicatorParams) -> None:
    batch = minute_batch(
        btc_2023["ts"][:ROWS],
        btc_2023["close"][:ROWS],
        btc_2023["volume"][:ROWS],
        rsi_tail_len=params.rsi_lookback,
    )
    by_params = param_values(batch, params)
    live = live_columns[params]
    expected = {
        "rsi_14": batch.rsi_14,
        "rsi_7": batch.rsi_7_tail[:, -1],
        "rsi_7_prev": batch.rsi_7_tail[:, -2],
        "rsi_7_min_lookback": by_params.rsi_7_min_lookback,
        "ma": by_params.ma,
        "bb_mid": batch.bb_mid,
        "bb_upper": batch.bb_upper,
        "bb_lower": batch.bb_lower,
        "vol_ratio": batch.vol_ratio,
        "recent_vol_ratios": batch.recent_vol_ratios,
        "bb_touch_recovery": by_params.bb_touch_recovery,
        "rows": batch.rows,
        "bars_seen": batch.bars_seen,
        "gap_minutes": batch.gap_minutes,
        "window_has_gap": batch.bars_seen < batch.rows,
    }
    for name, column in expected.items():
        assert same_bits(live[name], column), name
    assert live["gap_minutes"].max() == 80
    assert (live["bb_touch_recovery"] == 1).any() and (live["bb_touch_recovery"] == 0).any()


def test_history_regimes_are_the_regime_of_the_closed_hours(btc_2023) -> None:
    columns = [btc_2023[k][:ROWS] for k in ("ts", "open", "high", "low", "close", "volume")]
    result = compute_history(*columns)
    bars = resample_hourly(zip(*(c.tolist() for c in columns), strict=True))
    assert [b.start_ms for b in result.hours] == [b.start_ms for b in bars]
    closes = [b.close for b in bars]
    assert list(result.readings) == [regime_from_closes(closes[: k + 1]) for k in range(len(bars))]
    assert sum(r.regime.value != "UNKNOWN" for r in result.readings) == len(bars) - 199


@pytest.mark.parametrize("rows", [0, 1, 59, 60, 61, ROWS, ROWS - 7])
def test_the_vectorised_resampler_gives_the_bars_of_the_candle_by_candle_one(btc_2023, rows) -> None:
    """Same bars (volume summed oldest first), the forming last hour dropped, across the real gap."""
    columns = [np.asarray(btc_2023[k][:rows]) for k in ("ts", "open", "high", "low", "close", "volume")]
    columns[0] = columns[0].astype(np.int64)
    columns[1:] = [c.astype(np.float64) for c in columns[1:]]
    expected = resample_hourly(zip(*(c.tolist() for c in columns), strict=True))
    assert resample_hourly_arrays(*columns) == expected
    if rows == ROWS - 7:  # ends mid-hour: that hour is not a bar yet
        assert expected[-1].end_ms <= columns[0][-1]


def test_the_vectorised_resampler_refuses_rows_out_of_order() -> None:
    ts = np.array([120_000, 60_000], dtype=np.int64)
    ones = np.ones(2)
    with pytest.raises(ValueError, match="increasing"):
        resample_hourly_arrays(ts, ones, ones, ones, ones, ones)

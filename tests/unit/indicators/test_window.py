"""The live window: values per the reference definitions, what is missing while warming up, gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinpilot.indicators import (
    IndicatorParams,
    MinuteValues,
    MinuteWindow,
    bb_touch_recovery,
    bollinger,
    recent_vol_ratios,
    rsi_min_lookback,
    rsi_series,
    sma,
    vol_ratio,
)

MINUTE_MS = 60_000
PARAMS = IndicatorParams()


def grow(closes: list[float], volumes: list[float], ts: list[int] | None = None) -> MinuteWindow:
    window = MinuteWindow()
    for i, (c, v) in enumerate(zip(closes, volumes, strict=True)):
        window = window.push(ts[i] if ts else i * MINUTE_MS, c, v)
    return window


def wavy(n: int) -> tuple[list[float], list[float]]:
    closes = [100 + 3 * math.sin(i / 3) + (i % 7) * 0.1 for i in range(n)]
    volumes = [1.0 + (i * 37 % 11) for i in range(n)]
    return closes, volumes


def computable(values: MinuteValues) -> set[str]:
    names = ("rsi_14", "rsi_7", "rsi_7_prev", "rsi_7_min_lookback", "ma", "bb_mid", "vol_ratio")
    out = {name for name in names if not math.isnan(getattr(values, name))}
    if values.recent_vol_ratios is not None:
        out.add("recent_vol_ratios")
    if values.bb_touch_recovery is not None:
        out.add("bb_touch_recovery")
    return out


RSI7 = {"rsi_7", "rsi_7_prev", "rsi_7_min_lookback"}
RSI = RSI7 | {"rsi_14"}
BANDS = RSI | {"ma", "bb_mid"}
VOLUME = BANDS | {"vol_ratio", "recent_vol_ratios"}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(7, set(), id="7-rows-nothing"),
        pytest.param(8, RSI7, id="8-rows-rsi7"),
        pytest.param(14, RSI7, id="14-rows-still-no-rsi14"),
        pytest.param(15, RSI, id="15-rows-rsi14"),
        pytest.param(19, RSI, id="19-rows-no-ma-or-bands"),
        pytest.param(20, BANDS, id="20-rows-ma-and-bands"),
        pytest.param(21, VOLUME, id="21-rows-volume-ratios"),
        pytest.param(48, VOLUME, id="48-rows-29-banded-rows-too-few-for-the-touch"),
        pytest.param(49, VOLUME | {"bb_touch_recovery"}, id="49-rows-everything"),
    ],
)
def test_values_become_computable_as_the_window_fills(rows: int, expected: set[str]) -> None:
    assert computable(grow(*wavy(rows)).values(PARAMS)) == expected


@pytest.mark.parametrize("rows", [30, 120, 200, 260])
def test_window_values_are_the_reference_definitions_on_the_last_200_rows(rows: int) -> None:
    closes, volumes = wavy(rows)
    values = grow(closes, volumes).values(PARAMS)
    c, v = closes[-200:], volumes[-200:]
    lower = [bollinger(c[: i + 1])[0] if i >= 19 else math.nan for i in range(len(c))]
    assert values.rsi_14 == rsi_series(c, 14)[-1]
    assert values.rsi_7 == rsi_series(c, 7)[-1]
    assert values.rsi_7_prev == rsi_series(c, 7)[-2]
    assert values.rsi_7_min_lookback == rsi_min_lookback(rsi_series(c, 7), 5)
    assert values.ma == sma(c, 20)
    assert (values.bb_lower, values.bb_mid, values.bb_upper) == bollinger(c)
    assert values.vol_ratio == vol_ratio(v)
    assert values.recent_vol_ratios == tuple(recent_vol_ratios(v))
    # §2.4 answers False for too few banded rows; the window reports "not computable" instead.
    touch = bb_touch_recovery(c, lower, 30, 1) if len(c) - 19 >= 30 else None
    assert values.bb_touch_recovery == touch
    assert values.rows == min(rows, 200)


def test_the_window_keeps_only_the_last_200_candles() -> None:
    closes, volumes = wavy(500)
    assert grow(closes, volumes).values(PARAMS) == grow(closes[-200:], volumes[-200:]).values(PARAMS)


def test_a_gap_is_flagged_and_values_are_counted_in_candles() -> None:
    closes, volumes = wavy(60)
    ts = [i * MINUTE_MS for i in range(30)] + [(i + 80) * MINUTE_MS for i in range(30, 60)]
    window = MinuteWindow()
    seen = []
    for i in range(60):
        window = window.push(ts[i], closes[i], volumes[i])
        v = window.values(PARAMS)
        seen.append((v.gap_minutes, v.bars_seen, v.window_has_gap))
    assert seen[29] == (0, 30, False)
    assert seen[30] == (80, 1, True)  # 80 minutes missing right before this candle
    assert seen[59] == (0, 30, True)
    assert window.values(PARAMS).rsi_14 == rsi_series(closes, 14)[-1]  # same values as without the gap


def test_the_gap_leaves_the_window_after_200_more_candles() -> None:
    closes, volumes = wavy(260)
    ts = [0, *((i + 5) * MINUTE_MS for i in range(1, 260))]
    v = grow(closes, volumes, ts).values(PARAMS)
    assert (v.bars_seen, v.window_has_gap, v.gap_minutes) == (200, False, 0)


def test_a_candle_not_after_the_last_is_refused() -> None:
    window = MinuteWindow().push(MINUTE_MS, 1.0, 1.0)
    with pytest.raises(ValueError, match="not after"):
        window.push(MINUTE_MS, 1.0, 1.0)


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        pytest.param(IndicatorParams(ma_period=5), "ma", "sma5"),
        pytest.param(IndicatorParams(rsi_7_recovery_lookback=12), "rsi_7_min_lookback", "min12"),
        pytest.param(IndicatorParams(rsi_7_recovery_lookback=0), "rsi_7_min_lookback", "min5"),
    ],
)
def test_regime_params_change_only_their_values(params: IndicatorParams, field: str, expected: str) -> None:
    closes, volumes = wavy(100)
    values = grow(closes, volumes).values(params)
    reference = {
        "sma5": sma(closes, 5),
        "min12": rsi_min_lookback(rsi_series(closes, 7), 12),
        "min5": rsi_min_lookback(rsi_series(closes, 7), 5),
    }
    assert getattr(values, field) == reference[expected]


def test_rebuilding_from_stored_rows_gives_the_values_of_the_grown_window(btc_2023) -> None:
    """Restart path: ``from_rows`` over the last 200 candles == the window grown candle by candle,
    here across the real 80-minute gap of March 2023."""
    ts, close, volume = btc_2023["ts"][:14_000], btc_2023["close"][:14_000], btc_2023["volume"][:14_000]
    gap = int(np.nonzero(np.diff(ts) > MINUTE_MS)[0][0])
    cuts = [1, 19, 21, 199, 200, 201, gap - 100, gap, gap + 1, gap + 150, 13_999]
    window = MinuteWindow()
    sideways = IndicatorParams(bb_recovery_sustain_candles=2)
    for i in range(len(ts)):
        window = window.push(int(ts[i]), float(close[i]), float(volume[i]))
        if i in cuts:
            lo = max(0, i - 199)
            rebuilt = MinuteWindow.from_rows(
                ts[lo : i + 1].tolist(), close[lo : i + 1].tolist(), volume[lo : i + 1].tolist()
            )
            for params in (PARAMS, sideways):
                assert rebuilt.values(params) == window.values(params) or _nan_equal(
                    rebuilt.values(params), window.values(params)
                )


def _nan_equal(a: MinuteValues, b: MinuteValues) -> bool:
    for name in MinuteValues.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y):
            continue
        if x != y:
            return False
    return True

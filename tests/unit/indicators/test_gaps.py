"""Missing minutes: a gap of at most the bound is filled with no-trade minutes, a longer one is an
outage; the live window, the restart and the batch path fill it alike (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from coinpilot.indicators import (
    MAX_FILLED_GAP,
    MINUTE_MS,
    IndicatorParams,
    MinuteWindow,
    compute_history,
    fill_gaps,
    fill_rows,
)
from coinpilot.strategy_config import DataConfig

BOUND = MAX_FILLED_GAP
PARAMS = IndicatorParams()
ROWS = 3_000


def push_all(ts, close, volume, bound: int = BOUND) -> list:
    window = MinuteWindow(max_filled_gap=bound)
    out = []
    for t, c, v in zip(ts, close, volume, strict=True):
        window = window.push(int(t), float(c), float(v))
        out.append(window)
    return out


def test_the_bound_is_the_yaml_default() -> None:
    assert DataConfig().max_filled_gap_minutes == BOUND == 15


@pytest.mark.parametrize("missing", [1, BOUND])
def test_a_gap_up_to_the_bound_becomes_flat_no_trade_minutes(missing: int) -> None:
    ts = [0, MINUTE_MS, (missing + 2) * MINUTE_MS]
    before, after = push_all(ts, [100.0, 101.5, 99.0], [2.0, 3.0, 4.0])[1:]
    assert after.ts == (0, MINUTE_MS, *(k * MINUTE_MS for k in range(2, missing + 2)), ts[-1])
    assert after.close[2:-1] == (101.5,) * missing  # the previous close
    assert after.volume[2:-1] == (0.0,) * missing  # nothing traded
    assert after.close[-1] == 99.0 and after.volume[-1] == 4.0
    values = after.values(PARAMS)
    assert (values.gap_minutes, values.bars_seen, values.rows) == (missing, missing + 3, missing + 3)
    assert values.window_has_gap  # a filled minute is inside the window
    assert before.values(PARAMS).bars_seen == 2


def test_a_gap_longer_than_the_bound_is_an_outage_and_restarts_the_count() -> None:
    ts = [0, MINUTE_MS, (BOUND + 3) * MINUTE_MS]
    after = push_all(ts, [100.0, 101.5, 99.0], [2.0, 3.0, 4.0])[-1]
    assert after.ts == tuple(ts)  # nothing filled
    values = after.values(PARAMS)
    assert (values.gap_minutes, values.bars_seen, values.rows, values.window_has_gap) == (
        BOUND + 1,
        1,
        3,
        True,
    )


def test_a_filled_minute_is_exactly_a_flat_candle_received() -> None:
    """Filling is the same as receiving the no-trade candle (but the gap is still reported)."""
    rng = np.random.default_rng(7)
    close = list(100 + np.cumsum(rng.normal(0, 0.3, 120)))
    volume = list(rng.uniform(0.5, 3.0, 120))
    ts = [i * MINUTE_MS for i in range(120)]
    gapped = [i for i in range(120) if i not in (40, 70, 71, 72)]
    explicit_close, explicit_volume = close.copy(), volume.copy()
    for i in (40, 70, 71, 72):
        explicit_close[i], explicit_volume[i] = explicit_close[i - 1], 0.0
    filled = push_all([ts[i] for i in gapped], [close[i] for i in gapped], [volume[i] for i in gapped])[-1]
    received = push_all(ts, explicit_close, explicit_volume)[-1]
    assert (filled.ts, filled.close, filled.volume) == (received.ts, received.close, received.volume)
    a, b = filled.values(PARAMS), received.values(PARAMS)
    assert (a.rsi_14, a.rsi_7, a.ma, a.bb_lower, a.vol_ratio, a.bars_seen) == (
        b.rsi_14,
        b.rsi_7,
        b.ma,
        b.bb_lower,
        b.vol_ratio,
        b.bars_seen,
    )
    assert (a.window_has_gap, b.window_has_gap) == (True, False)


def test_the_filled_minutes_leave_the_window_like_any_row() -> None:
    ts = [0, (BOUND + 1) * MINUTE_MS, *((BOUND + 1 + k) * MINUTE_MS for k in range(1, 200))]
    windows = push_all(ts, [100.0 + (k % 5) for k in range(len(ts))], [1.0] * len(ts))
    flags = [w.values(PARAMS).window_has_gap for w in windows]
    assert flags[1] and flags[-2]  # the last filled row is still the window's first
    assert not flags[-1]
    assert windows[-1].values(PARAMS).bars_seen == 200


@pytest.fixture(scope="module")
def gapped(btc_2023) -> dict[str, np.ndarray]:
    """The first rows of the 2023 file with gaps of 1, the bound, bound + 1 and 3 minutes cut out
    (one across an hour boundary) and the real 80-minute gap kept."""
    ts = btc_2023["ts"]
    start = int(np.flatnonzero(np.diff(ts) > MINUTE_MS)[0]) - ROWS // 2  # the real gap mid-slice
    keep = np.ones(ROWS, dtype=bool)
    for at, n in ((300, 1), (700, BOUND), (1100, BOUND + 1), (1_995, 3), (2_400, 1), (2_402, 2)):
        keep[at : at + n] = False
    return {k: v[start : start + ROWS][keep] for k, v in btc_2023.items()}


def test_batch_restart_and_live_fill_alike(gapped) -> None:
    ts, close, volume = gapped["ts"], gapped["close"], gapped["volume"]
    steps = np.diff(ts) // MINUTE_MS - 1
    assert {1, 2, 3, BOUND, BOUND + 1, 80} <= set(steps.tolist())
    live = push_all(ts, close, volume)
    result = compute_history(
        ts, gapped["open"], gapped["high"], gapped["low"], close, volume, max_filled_gap=BOUND
    )
    batch = result.batch
    for i in range(len(ts)):
        v = live[i].values(PARAMS)
        got = (
            batch.rsi_14[i],
            batch.rsi_7_tail[i, -1],
            batch.rsi_7_tail[i, -2],
            result.rsi_7_min_lookback[i],
            result.ma[i],
            batch.bb_lower[i],
            batch.bb_upper[i],
            batch.vol_ratio[i],
            int(batch.rows[i]),
            int(batch.bars_seen[i]),
            int(batch.gap_minutes[i]),
            bool(batch.window_has_gap[i]),
            int(result.bb_touch_recovery[i]),
        )
        want = (
            v.rsi_14,
            v.rsi_7,
            v.rsi_7_prev,
            v.rsi_7_min_lookback,
            v.ma,
            v.bb_lower,
            v.bb_upper,
            v.vol_ratio,
            v.rows,
            v.bars_seen,
            v.gap_minutes,
            v.window_has_gap,
            -1 if v.bb_touch_recovery is None else int(v.bb_touch_recovery),
        )
        assert np.array_equal(np.array(got, dtype=float), np.array(want, dtype=float), equal_nan=True), i
        if i in (301, 702, 1_101, 1_500, 1_996, 2_396, 2_397):  # restart right after the gaps
            lo = max(0, i + 1 - 200)
            rebuilt = MinuteWindow.from_rows(
                ts[lo : i + 1].tolist(), close[lo : i + 1].tolist(), volume[lo : i + 1].tolist(), 200, BOUND
            )
            assert rebuilt.values(PARAMS) == v, i


def test_fill_gaps_is_fill_rows_vectorised(gapped) -> None:
    ts, close, volume = gapped["ts"], gapped["close"], gapped["volume"]
    rows = fill_gaps(ts, close, volume, BOUND)
    want_ts, want_close, want_volume, last = fill_rows(ts.tolist(), close.tolist(), volume.tolist(), BOUND)
    assert rows.ts.tolist() == want_ts and rows.close.tolist() == want_close
    assert rows.volume.tolist() == want_volume
    assert int(rows.ts[rows.filled][-1]) == last
    assert rows.ts[rows.candle_rows].tolist() == ts.tolist()
    assert len(want_ts) - len(ts) == 1 + BOUND + 3 + 1 + 2  # the outages (bound + 1, 80) stay gaps

"""The batch path: every candle's indicators over a whole history at once, vectorised with numpy.

Each value is the same pure function of the same bounded window as in the live path
(``window.py``), computed with the same float64 operations in the same order, only across all
candles at once: the recursions loop over the *position inside the window* (200 steps) while
numpy runs across all windows. That is why ``compute_history`` equals a candle-by-candle live run
bit for bit (``tests/unit/indicators/test_parity.py`` proves it on the 90-day BTC file).
Short gaps are filled with no-trade minutes before anything is computed (:func:`fill_gaps`, the
live window's ``fill_rows`` vectorised), and the rows of the candles are picked out at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from coinpilot.contracts.enums import Regime
from coinpilot.indicators.hourly import (
    MINUTE_MS,
    HourBar,
    RegimeReading,
    closes_hour,
    regime_from_closes,
    resample_hourly_arrays,
)
from coinpilot.indicators.kernels import rsi_tail
from coinpilot.indicators.params import (
    BB_PERIOD,
    BB_WIDTH,
    DEFAULT_REGIME_PARAMS,
    DEFAULT_REGIME_RULE,
    RECENT_VOLUME_RATIOS,
    RSI_PERIOD,
    RSI_SHORT_PERIOD,
    VOLUME_PERIOD,
    WINDOW,
    IndicatorParams,
    RegimeParams,
    RegimeRule,
)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def _rsi_values(a: Floats, b: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 - 100.0 / (1.0 + a / b)
    return np.where(b == 0.0, np.where(a > 0.0, 100.0, np.nan), out)


def _rolling_sum(values: Floats, period: int, first_row: int) -> Floats:
    """Element ``k``: the ``period`` values ending at row ``k + first_row``, summed oldest first
    from 0.0 exactly as ``kernels.mean_last`` adds them."""
    count = len(values) - first_row
    acc = np.zeros(max(count, 0))
    start = first_row - period + 1
    for k in range(period):
        acc = acc + values[start + k : start + k + count]
    return acc


def _rsi_windows(gain: Floats, loss: Floats, size: int, tail: int) -> tuple[Floats, Floats]:
    """RSI(14) at the newest row and the last ``tail`` RSI(7) values of every candle's window."""
    n = len(gain)
    rsi14 = np.full(n, np.nan)
    rsi7 = np.full((n, tail), np.nan)
    gains, losses = gain.tolist(), loss.tolist()
    for i in range(min(n, size - 1)):  # windows still growing from the first candle
        rows = i + 1
        if rows >= RSI_SHORT_PERIOD + 1:
            values = rsi_tail(gains[:rows], losses[:rows], RSI_SHORT_PERIOD, tail)
            rsi7[i, tail - len(values) :] = values
        if rows >= RSI_PERIOD + 1:
            rsi14[i] = rsi_tail(gains[:rows], losses[:rows], RSI_PERIOD, 1)[-1]
    full = n - size + 1
    if full <= 0:
        return rsi14, rsi7
    emas = [  # (alpha, beta, A or B of every full window, its rows' gains or losses)
        (1.0 / period, 1.0 - 1.0 / period, np.zeros(full), values)
        for period in (RSI_SHORT_PERIOD, RSI_PERIOD)
        for values in (gain, loss)
    ]
    g7, l7, g14, l14 = (ema[2] for ema in emas)
    term = np.empty(full)
    first_tail = size - tail
    for j in range(1, size):
        # acc = beta * acc + alpha * row in place: the expression's very operations, in its order,
        # without a new ~1 MB array per operation (2,400 over the 90-day file, each page-faulted)
        for alpha, beta, acc, values in emas:
            np.multiply(acc, beta, out=acc)
            np.multiply(values[j : j + full], alpha, out=term)
            np.add(acc, term, out=acc)
        if j >= first_tail and j >= RSI_SHORT_PERIOD - 1:
            rsi7[size - 1 :, j - first_tail] = _rsi_values(g7, l7)
    rsi14[size - 1 :] = _rsi_values(g14, l14)
    return rsi14, rsi7


@dataclass(frozen=True, slots=True)
class FilledRows:
    """A history with its short gaps filled: the rows, and where its candles are among them."""

    ts: Ints
    close: Floats
    volume: Floats
    candle_rows: Ints  # candle i is row candle_rows[i]
    filled: npt.NDArray[np.bool_]  # per row: a filled no-trade minute


def fill_gaps(ts_ms: Ints, close: Floats, volume: Floats, max_filled_gap: int) -> FilledRows:
    """Every gap of at most ``max_filled_gap`` minutes filled with no-trade minutes (the previous
    candle's close, volume 0.0): ``window.fill_rows`` for a whole history at once."""
    n = len(ts_ms)
    missing = np.zeros(n, dtype=np.int64)
    missing[1:] = np.diff(ts_ms) // MINUTE_MS - 1
    extra = np.where((missing > 0) & (missing <= max_filled_gap), missing, 0)
    rows = np.arange(n, dtype=np.int64) + np.cumsum(extra)
    total = n + int(extra.sum())
    filled = np.ones(total, dtype=bool)
    filled[rows] = False
    at = np.flatnonzero(filled)
    owner = np.searchsorted(rows, at, side="right") - 1  # the candle before each filled row
    out_ts = np.empty(total, dtype=np.int64)
    out_close = np.empty(total)
    out_volume = np.zeros(total)
    out_ts[rows], out_close[rows], out_volume[rows] = ts_ms, close, volume
    out_ts[at] = ts_ms[owner] + (at - rows[owner]) * MINUTE_MS
    out_close[at] = close[owner]
    return FilledRows(out_ts, out_close, out_volume, rows, filled)


@dataclass(frozen=True, slots=True)
class MinuteBatch:
    """Regime-independent per-row arrays (NaN = not computable)."""

    ts: Ints
    close: Floats
    rows: Ints
    bars_seen: Ints
    gap_minutes: Ints
    window_has_gap: npt.NDArray[np.bool_]
    rsi_14: Floats
    rsi_7_tail: Floats
    bb_lower: Floats
    bb_mid: Floats
    bb_upper: Floats
    vol_row: Floats
    vol_ratio: Floats
    recent_vol_ratios: Floats
    closes_for_ma: Floats

    def take(self, index: Ints) -> MinuteBatch:
        """The rows at ``index`` (the candles among filled rows)."""
        return MinuteBatch(*(getattr(self, f.name)[index] for f in fields(self)))


def minute_batch(
    ts_ms: Ints, close: Floats, volume: Floats, *, rsi_tail_len: int = 5, size: int = WINDOW
) -> MinuteBatch:
    """Everything about the 1m window that does not depend on the regime's parameters."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    close = np.asarray(close, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    n = len(ts)
    if n and np.any(np.diff(ts) <= 0):
        raise ValueError("candles must be strictly increasing in time")
    index = np.arange(n)
    rows = np.minimum(index + 1, size)
    steps = np.diff(ts)
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = steps // MINUTE_MS - 1
    breaks = np.ones(n, dtype=bool)
    breaks[1:] = steps != MINUTE_MS
    last_break = np.maximum.accumulate(np.where(breaks, index, 0))
    bars = np.minimum(index - last_break + 1, rows)

    d = np.diff(close)
    gain = np.zeros(n)
    loss = np.zeros(n)
    gain[1:] = np.where(d > 0.0, d, 0.0)
    loss[1:] = np.where(d < 0.0, -d, 0.0)
    rsi14, rsi7 = _rsi_windows(gain, loss, size, max(2, rsi_tail_len))

    lower = np.full(n, np.nan)
    mid = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    if n >= BB_PERIOD:
        first = BB_PERIOD - 1
        mean = _rolling_sum(close, BB_PERIOD, first) / BB_PERIOD
        squares = np.zeros(n - first)
        for k in range(BB_PERIOD):
            dev = close[k : k + n - first] - mean
            squares = squares + dev * dev
        std = np.sqrt(squares / (BB_PERIOD - 1))
        mid[first:] = mean
        lower[first:] = mean - BB_WIDTH * std
        upper[first:] = mean + BB_WIDTH * std

    vol_row = np.full(n, np.nan)
    if n > VOLUME_PERIOD:
        count = n - VOLUME_PERIOD
        acc = np.zeros(count)
        for k in range(VOLUME_PERIOD):
            acc = acc + volume[k : k + count]
        mean_v = acc / VOLUME_PERIOD
        v = volume[VOLUME_PERIOD:]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = v / mean_v
        vol_row[VOLUME_PERIOD:] = np.where(mean_v == 0.0, np.where(v > 0.0, np.inf, np.nan), ratio)
    vol_ratio = np.where(np.isfinite(vol_row), vol_row, 0.0)
    vol_ratio[rows < VOLUME_PERIOD + 1] = np.nan
    recent = np.full((n, RECENT_VOLUME_RATIOS), np.nan)
    filled = np.where(np.isnan(vol_row), 0.0, vol_row)
    for k in range(RECENT_VOLUME_RATIOS):
        lag = RECENT_VOLUME_RATIOS - 1 - k
        recent[lag:, k] = filled[: n - lag]
    recent[rows < VOLUME_PERIOD + 1] = np.nan
    return MinuteBatch(
        ts,
        close,
        rows,
        bars,
        gap,
        bars < rows,
        rsi14,
        rsi7,
        lower,
        mid,
        upper,
        vol_row,
        vol_ratio,
        recent,
        close,
    )


@dataclass(frozen=True, slots=True)
class ParamValues:
    """The regime-dependent values for one ``IndicatorParams`` (all candles)."""

    rsi_7_min_lookback: Floats
    ma: Floats
    bb_touch_recovery: npt.NDArray[np.int8]  # -1 not computable, 0 false, 1 true


def param_values(batch: MinuteBatch, params: IndicatorParams) -> ParamValues:
    n = len(batch.ts)
    lookback = params.rsi_lookback
    tail = batch.rsi_7_tail[:, -lookback:]
    with np.errstate(invalid="ignore"):
        rsi_min = np.fmin.reduce(tail, axis=1) if n else np.zeros(0)
    rsi_min[batch.rows < RSI_SHORT_PERIOD + 1] = np.nan

    ma = np.full(n, np.nan)
    period = params.ma_period
    if n >= period:
        ma[period - 1 :] = _rolling_sum(batch.closes_for_ma, period, period - 1) / period

    lb, s = params.touch_lookback, params.sustain
    touch = np.full(n, -1, dtype=np.int8)
    banded = batch.rows - (BB_PERIOD - 1)
    valid = banded >= max(lb, s + 1)
    with np.errstate(invalid="ignore"):
        touched_row = (batch.close <= batch.bb_lower).astype(np.int64)
        above_row = (batch.close > batch.bb_lower).astype(np.int64)
    ct = np.concatenate(([0], np.cumsum(touched_row)))
    ca = np.concatenate(([0], np.cumsum(above_row)))
    idx = np.nonzero(valid)[0]
    if len(idx):
        touched = (ct[idx - s + 1] - ct[idx - lb + 1]) > 0 if lb > s else np.zeros(len(idx), dtype=bool)
        recovered = (ca[idx + 1] - ca[idx - s + 1]) == s
        touch[idx] = (touched & recovered).astype(np.int8)
    return ParamValues(rsi_min, ma, touch)


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """Per-candle indicator columns plus the closed hours and the regime after each of them."""

    batch: MinuteBatch
    params_index: npt.NDArray[np.int64]  # per candle: which entry of ``params`` applies
    params: tuple[IndicatorParams, ...]
    rsi_7_min_lookback: Floats
    ma: Floats
    bb_touch_recovery: npt.NDArray[np.int8]
    regime: tuple[Regime, ...]
    regime_diff_pct: Floats
    hours: tuple[HourBar[float], ...]
    readings: tuple[RegimeReading, ...]
    hour_closed_at: Ints  # candle index whose arrival closed each hour


def _candles_of(by_row: MinuteBatch, filled: FilledRows, size: int) -> MinuteBatch:
    """The candles' rows of a batch over filled rows, with the gaps the feed had: ``gap_minutes``
    is the minutes missing before each candle (filled or not), ``window_has_gap`` also holds when
    the window holds a filled row (as the live window says)."""
    rows = filled.candle_rows
    batch = by_row.take(rows)
    if len(rows) == len(filled.ts):
        return batch
    gap = np.zeros(len(rows), dtype=np.int64)
    gap[1:] = np.diff(batch.ts) // MINUTE_MS - 1
    index = np.arange(len(filled.ts))
    last_filled = np.maximum.accumulate(np.where(filled.filled, index, -1))[rows]
    window_start = np.maximum(rows - size + 1, 0)
    return replace(
        batch, gap_minutes=gap, window_has_gap=batch.window_has_gap | (last_filled >= window_start)
    )


def hours_closed_at(ts: Ints, hours: Sequence[HourBar[float]]) -> Ints:
    """The candle index at which each closed hour closes: its ``:59`` candle, else the next one."""
    ends = np.searchsorted(ts, np.array([h.end_ms for h in hours], dtype=np.int64), side="left") - 1
    out = np.empty(len(hours), dtype=np.int64)
    for k, last in enumerate(ends.tolist()):
        out[k] = last if closes_hour(int(ts[last])) else last + 1
    return out


def compute_history(
    ts_ms: Sequence[int] | Ints,
    open_: Sequence[float] | Floats,
    high: Sequence[float] | Floats,
    low: Sequence[float] | Floats,
    close: Sequence[float] | Floats,
    volume: Sequence[float] | Floats,
    *,
    params: RegimeParams = DEFAULT_REGIME_PARAMS,
    rule: RegimeRule = DEFAULT_REGIME_RULE,
    size: int = WINDOW,
    max_filled_gap: int = 0,
) -> HistoryResult:
    """Indicators and regimes of every candle of a history, as the live path would emit them
    (with a window whose ``max_filled_gap`` is the one given)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    distinct = tuple(dict.fromkeys(params.all()))
    filled = fill_gaps(ts, c, np.asarray(volume, dtype=np.float64), max_filled_gap)
    by_row = minute_batch(
        filled.ts,
        filled.close,
        filled.volume,
        rsi_tail_len=max(p.rsi_lookback for p in distinct),
        size=size,
    )
    batch = _candles_of(by_row, filled, size)

    hours = resample_hourly_arrays(
        ts,
        np.asarray(open_, dtype=np.float64),
        np.asarray(high, dtype=np.float64),
        np.asarray(low, dtype=np.float64),
        c,
        np.asarray(volume, dtype=np.float64),
    )
    closes: list[float] = []
    readings: list[RegimeReading] = []
    for bar in hours:
        closes.append(bar.close)
        readings.append(regime_from_closes(closes[-rule.hours_kept :], rule))
    closed_at = hours_closed_at(ts, hours)
    n = len(ts)
    which = np.searchsorted(closed_at, np.arange(n), side="right") - 1
    # per reading, then gathered per candle; index -1 (no closed hour yet) is the appended UNKNOWN
    regimes_by_reading = [r.regime for r in readings] + [Regime.UNKNOWN]
    regime = tuple(map(regimes_by_reading.__getitem__, which.tolist()))
    diff = np.array([r.diff_pct for r in readings] + [math.nan])[which]

    index_of = {p: i for i, p in enumerate(distinct)}
    chosen_by_reading = np.array([index_of[params.for_regime(r)] for r in regimes_by_reading], dtype=np.int64)
    chosen = chosen_by_reading[which]
    rsi_min = np.full(n, np.nan)
    ma = np.full(n, np.nan)
    touch = np.full(n, -1, dtype=np.int8)
    candle_rows = filled.candle_rows
    for i, p in enumerate(distinct):
        mask = chosen == i
        if not mask.any():
            continue
        values = param_values(by_row, p)  # over the rows: MA and touch-recovery look back across them
        rsi_min[mask] = values.rsi_7_min_lookback[candle_rows][mask]
        ma[mask] = values.ma[candle_rows][mask]
        touch[mask] = values.bb_touch_recovery[candle_rows][mask]
    return HistoryResult(
        batch, chosen, distinct, rsi_min, ma, touch, regime, diff, tuple(hours), tuple(readings), closed_at
    )

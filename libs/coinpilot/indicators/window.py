"""The live path: an immutable window of the last 200 closed 1m candles, pushed one candle at a time.

``push`` costs O(20) (it derives the new row's band and volume ratio); ``values`` costs O(window)
(the RSI recursion restarts at the window's first row, exactly as the original recomputed it on
its 200-row frame). Per-row derived values (gain, loss, bb_lower, volume ratio) depend only on
the row and its predecessors inside the window, so a window rebuilt from stored candles
(``from_rows``, the restart path) yields the same ``values`` as one grown by ``push``.

Missing minutes (an exchange sends no candle for a minute without trades) of a gap of at most
``max_filled_gap`` minutes are rows too: a no-trade minute, flat at the previous close with zero
volume (``fill_rows``, the one definition the batch path applies as well). A longer gap is an
outage: nothing is filled and the run of contiguous minutes (``bars_seen``) starts again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from coinpilot.indicators.kernels import (
    NAN,
    mean_last,
    rsi_min_lookback,
    rsi_tail,
    rsi_tail_and_last,
    sample_std_last,
    volume_ratio_row,
)
from coinpilot.indicators.params import (
    BB_PERIOD,
    BB_WIDTH,
    RECENT_VOLUME_RATIOS,
    RSI_PERIOD,
    RSI_SHORT_PERIOD,
    VOLUME_PERIOD,
    WINDOW,
    IndicatorParams,
)

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class MinuteValues:
    """Every 1m indicator at the newest row; NaN (or ``None`` for the non-floats) = not computable."""

    rsi_14: float
    rsi_7: float
    rsi_7_prev: float
    rsi_7_min_lookback: float
    ma: float
    bb_mid: float
    bb_upper: float
    bb_lower: float
    vol_ratio: float
    recent_vol_ratios: tuple[float, ...] | None
    bb_touch_recovery: bool | None
    rows: int
    bars_seen: int
    gap_minutes: int
    window_has_gap: bool


def filled_gap(step_ms: int, max_filled_gap: int) -> int:
    """Minutes filled between two candles ``step_ms`` apart: the missing ones, if at most the bound."""
    missing = step_ms // MINUTE_MS - 1
    return missing if 0 < missing <= max_filled_gap else 0


def fill_rows(
    ts: Sequence[int], close: Sequence[float], volume: Sequence[float], max_filled_gap: int
) -> tuple[list[int], list[float], list[float], int | None]:
    """The rows with every gap of at most ``max_filled_gap`` minutes filled by no-trade minutes
    (the previous close, volume 0.0), and the open time of the newest filled row (None: none)."""
    out_ts: list[int] = []
    out_close: list[float] = []
    out_volume: list[float] = []
    last_filled: int | None = None
    for i, t in enumerate(ts):
        if i:
            for k in range(1, filled_gap(t - ts[i - 1], max_filled_gap) + 1):
                last_filled = ts[i - 1] + k * MINUTE_MS
                out_ts.append(last_filled)
                out_close.append(close[i - 1])
                out_volume.append(0.0)
        out_ts.append(t)
        out_close.append(close[i])
        out_volume.append(volume[i])
    return out_ts, out_close, out_volume, last_filled


def _band(closes: Sequence[float]) -> tuple[float, float, float]:
    """(lower, mid, upper) of the newest row; NaN while fewer than 20 rows."""
    if len(closes) < BB_PERIOD:
        return NAN, NAN, NAN
    mid, std = sample_std_last(closes, BB_PERIOD)
    return mid - BB_WIDTH * std, mid, mid + BB_WIDTH * std


@dataclass(frozen=True, slots=True)
class MinuteWindow:
    """The last ``size`` rows (candles, and the no-trade minutes filled in short gaps) and their
    per-row derivations."""

    ts: tuple[int, ...] = ()
    close: tuple[float, ...] = ()
    volume: tuple[float, ...] = ()
    gain: tuple[float, ...] = ()
    loss: tuple[float, ...] = ()
    bb_lower: tuple[float, ...] = ()
    vol_row: tuple[float, ...] = ()
    run: int = 0
    gap_minutes: int = 0  # minutes missing before the newest candle, filled or not
    size: int = WINDOW
    max_filled_gap: int = 0
    last_filled: int | None = None  # open time of the newest filled row

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def last_ts(self) -> int | None:
        return self.ts[-1] if self.ts else None

    def push(self, ts_ms: int, close: float, volume: float) -> MinuteWindow:
        """The window after one more closed candle (strictly newer than the last one), the
        no-trade minutes before it first when the gap is at most ``max_filled_gap``."""
        n = len(self.ts)
        if n and ts_ms <= self.ts[-1]:
            raise ValueError(f"candle {ts_ms} is not after the window's last candle {self.ts[-1]}")
        if not n:
            return self._append(ts_ms, close, volume)
        window, last_ts = self, self.ts[-1]
        filled = filled_gap(ts_ms - last_ts, self.max_filled_gap)
        for k in range(1, filled + 1):
            window = window._append(last_ts + k * MINUTE_MS, self.close[-1], 0.0)
        window = window._append(ts_ms, close, volume)
        if not filled:
            return window
        return replace(window, gap_minutes=filled, last_filled=last_ts + filled * MINUTE_MS)

    def _append(self, ts_ms: int, close: float, volume: float) -> MinuteWindow:
        """One more row, its step from the previous row deciding the run of contiguous minutes."""
        n = len(self.ts)
        if n:
            d = close - self.close[-1]
            gain, loss = (d if d > 0.0 else 0.0), (-d if d < 0.0 else 0.0)
            step = ts_ms - self.ts[-1]
            run = self.run + 1 if step == MINUTE_MS else 1
            gap = step // MINUTE_MS - 1
        else:
            gain = loss = 0.0
            run, gap = 1, 0
        k = 1 if n >= self.size else 0
        closes = (*self.close[k:], close)
        volumes = (*self.volume[k:], volume)
        return MinuteWindow(
            ts=(*self.ts[k:], ts_ms),
            close=closes,
            volume=volumes,
            gain=(*self.gain[k:], gain),
            loss=(*self.loss[k:], loss),
            bb_lower=(*self.bb_lower[k:], _band(closes)[0]),
            vol_row=(*self.vol_row[k:], volume_ratio_row(volumes, len(volumes), VOLUME_PERIOD)),
            run=run,
            gap_minutes=gap,
            size=self.size,
            max_filled_gap=self.max_filled_gap,
            last_filled=self.last_filled,
        )

    @classmethod
    def from_rows(
        cls,
        ts: Sequence[int],
        close: Sequence[float],
        volume: Sequence[float],
        size: int = WINDOW,
        max_filled_gap: int = 0,
    ) -> MinuteWindow:
        """Rebuild the window from stored candles (oldest first), e.g. after a restart.

        Short gaps are filled as :meth:`push` fills them; only the last ``size`` rows are kept;
        rows whose derivation needs candles before the window stay NaN, which is never read (see
        README, "restart"). ``size`` stored candles always give ``size`` rows or more.
        """
        if any(b <= a for a, b in pairwise(ts)):
            raise ValueError("rows must be strictly increasing in time")
        last_gap = (ts[-1] - ts[-2]) // MINUTE_MS - 1 if len(ts) >= 2 else 0
        rows_ts, rows_close, rows_volume, last_filled = fill_rows(
            ts[-size:], close[-size:], volume[-size:], max_filled_gap
        )
        ts, close, volume = tuple(rows_ts[-size:]), tuple(rows_close[-size:]), tuple(rows_volume[-size:])
        n = len(ts)
        gains, losses = [0.0], [0.0]
        for i in range(1, n):
            d = close[i] - close[i - 1]
            gains.append(d if d > 0.0 else 0.0)
            losses.append(-d if d < 0.0 else 0.0)
        lower = [_band(close[: i + 1])[0] for i in range(n)]
        vol_row = [volume_ratio_row(volume, i + 1, VOLUME_PERIOD) for i in range(n)]
        run = 0
        for i in range(n - 1, -1, -1):
            run += 1
            if i == 0 or ts[i] - ts[i - 1] != MINUTE_MS:
                break
        return cls(
            ts,
            close,
            volume,
            tuple(gains[:n]),
            tuple(losses[:n]),
            tuple(lower),
            tuple(vol_row),
            run,
            last_gap,
            size,
            max_filled_gap,
            last_filled,
        )

    def values(self, params: IndicatorParams) -> MinuteValues:
        """Every indicator of the newest row for the regime's ``params`` (BEHAVIOUR §2.2-§2.4)."""
        n = len(self.ts)
        if n == 0:
            raise ValueError("empty window")
        lookback = params.rsi_lookback
        short_tail = max(2, lookback)
        if n >= RSI_PERIOD + 1:  # both RSIs in one pass over the window
            short, rsi_14 = rsi_tail_and_last(self.gain, self.loss, RSI_SHORT_PERIOD, short_tail, RSI_PERIOD)
        else:
            short = (
                rsi_tail(self.gain, self.loss, RSI_SHORT_PERIOD, short_tail)
                if n >= RSI_SHORT_PERIOD + 1
                else []
            )
            rsi_14 = NAN
        if short:
            rsi_7, rsi_7_prev, rsi_7_min = short[-1], short[-2], rsi_min_lookback(short, lookback)
        else:
            rsi_7 = rsi_7_prev = rsi_7_min = NAN
        ma = mean_last(self.close, params.ma_period) if n >= params.ma_period else NAN
        lower, mid, upper = _band(self.close[-BB_PERIOD:])
        if n >= VOLUME_PERIOD + 1:
            last = self.vol_row[-1]
            vol_ratio = 0.0 if math.isinf(last) or math.isnan(last) else last
            recent: tuple[float, ...] | None = tuple(
                0.0 if math.isnan(v) else v for v in self.vol_row[-RECENT_VOLUME_RATIOS:]
            )
        else:
            vol_ratio, recent = NAN, None
        touch = self._touch_recovery(params.touch_lookback, params.sustain)
        bars = min(self.run, n)
        return MinuteValues(
            rsi_14=rsi_14,
            rsi_7=rsi_7,
            rsi_7_prev=rsi_7_prev,
            rsi_7_min_lookback=rsi_7_min,
            ma=ma,
            bb_mid=mid,
            bb_upper=upper,
            bb_lower=lower,
            vol_ratio=vol_ratio,
            recent_vol_ratios=recent,
            bb_touch_recovery=touch,
            rows=n,
            bars_seen=bars,
            gap_minutes=self.gap_minutes,
            window_has_gap=bars < n or (self.last_filled is not None and self.last_filled >= self.ts[0]),
        )

    def _touch_recovery(self, lookback: int, sustain: int) -> bool | None:
        """§2.4 on the window's rows that have a band (positions >= 19); None while too few."""
        banded = len(self.ts) - (BB_PERIOD - 1)
        if banded < max(lookback, sustain + 1):
            return None
        closes, lowers = self.close[-lookback:], self.bb_lower[-lookback:]
        split = lookback - sustain
        touched = any(closes[i] <= lowers[i] for i in range(split))
        return touched and all(closes[i] > lowers[i] for i in range(split, lookback))

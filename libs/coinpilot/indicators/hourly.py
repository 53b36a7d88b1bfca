"""Hourly resampling (BEHAVIOUR §2.5) and the regime (§2.6 with the rebuild rules).

Buckets are ``[HH:00, HH+1:00)`` UTC, closed-left and labelled by their start; ``open=first,
high=max, low=min, close=last, volume=sum``; hours without a 1m candle do not exist (no forward
fill). An hour is *closed* once its minute ``:59`` or any later candle has been seen. The
functions are generic over the number type: the live path aggregates ``Decimal`` prices, the
batch path floats; the regime only ever reads the closes, as floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from coinpilot.contracts.enums import Regime
from coinpilot.indicators.kernels import NAN
from coinpilot.indicators.params import DEFAULT_REGIME_RULE, RegimeRule

HOUR_MS = 3_600_000
MINUTE_MS = 60_000

N = TypeVar("N", float, Decimal)


def hour_start(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def closes_hour(ts_ms: int) -> bool:
    """True for the candle of minute ``:59``: its end is its hour's end."""
    return (ts_ms + MINUTE_MS) % HOUR_MS == 0


@dataclass(frozen=True, slots=True)
class HourBar(Generic[N]):
    """One hourly bucket; ``count`` is how many 1m candles it holds (60 unless minutes are missing)."""

    start_ms: int
    open: N
    high: N
    low: N
    close: N
    volume: N
    count: int

    @classmethod
    def first(cls, ts_ms: int, o: N, h: N, lo: N, c: N, v: N) -> HourBar[N]:
        return cls(hour_start(ts_ms), o, h, lo, c, v, 1)

    def add(self, h: N, lo: N, c: N, v: N) -> HourBar[N]:
        """The bucket with one more (later) candle of the same hour."""
        return HourBar(
            self.start_ms,
            self.open,
            h if h > self.high else self.high,
            lo if lo < self.low else self.low,
            c,
            self.volume + v,
            self.count + 1,
        )

    @property
    def end_ms(self) -> int:
        return self.start_ms + HOUR_MS


Row = tuple[int, N, N, N, N, N]


def resample_hourly(
    rows: Iterable[Row[N]], *, include_forming: bool = False, as_of_ms: int | None = None
) -> list[HourBar[N]]:
    """Hourly bars of ``(ts_ms, open, high, low, close, volume)`` rows in time order.

    The live rule keeps closed hours only: the last bucket is dropped unless it holds its ``:59``
    minute or ``as_of_ms`` (an event time) has reached its end. ``include_forming=True`` keeps it
    anyway, reproducing the original's partial last hour for parity tests.
    """
    bars: list[HourBar[N]] = []
    current: HourBar[N] | None = None
    last_ts = -1
    for ts, o, h, lo, c, v in rows:
        if ts <= last_ts:
            raise ValueError(f"rows must be strictly increasing in time ({ts} after {last_ts})")
        last_ts = ts
        if current is not None and hour_start(ts) == current.start_ms:
            current = current.add(h, lo, c, v)
        else:
            if current is not None:
                bars.append(current)
            current = HourBar.first(ts, o, h, lo, c, v)
    if current is not None:
        closed = closes_hour(last_ts) or (as_of_ms is not None and as_of_ms >= current.end_ms)
        if closed or include_forming:
            bars.append(current)
    return bars


def hour_spans(ts_ms: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(first, end)`` candle index of every hourly bucket of strictly increasing ``ts_ms``."""
    if len(ts_ms) and np.any(np.diff(ts_ms) <= 0):
        raise ValueError("rows must be strictly increasing in time")
    hours = ts_ms - ts_ms % HOUR_MS
    first = np.flatnonzero(np.concatenate(([True], hours[1:] != hours[:-1]))) if len(ts_ms) else hours
    end = np.append(first[1:], len(ts_ms)).astype(np.int64)
    return first.astype(np.int64), end


def resample_hourly_arrays(
    ts_ms: npt.NDArray[np.int64],
    open_: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    close: npt.NDArray[np.float64],
    volume: npt.NDArray[np.float64],
) -> list[HourBar[float]]:
    """:func:`resample_hourly` of float columns (closed hours only), vectorised: the same bars.

    High and low are exact whatever the order; the volume is summed oldest first, as ``add`` does.
    """
    first, end = hour_spans(ts_ms)
    if not len(first):
        return []
    highs = np.maximum.reduceat(high, first)  # segment k spans first[k] .. first[k + 1]
    lows = np.minimum.reduceat(low, first)
    if not closes_hour(int(ts_ms[-1])):  # the forming hour is not a bar yet
        first, end = first[:-1], end[:-1]
    volumes = volume.tolist()
    bars = []
    for k, (a, b) in enumerate(zip(first.tolist(), end.tolist(), strict=True)):
        total = volumes[a]
        for v in volumes[a + 1 : b]:
            total += v
        start = int(ts_ms[a])
        bars.append(
            HourBar(
                hour_start(start),
                float(open_[a]),
                float(highs[k]),
                float(lows[k]),
                float(close[b - 1]),
                total,
                b - a,
            )
        )
    return bars


@dataclass(frozen=True, slots=True)
class RegimeReading:
    """The regime computed from closed hourly closes (``hourly_count`` capped at the rule's window)."""

    regime: Regime
    ma50: float
    ma200: float
    diff_pct: float
    hourly_count: int


def classify_regime(
    ma_fast: float | None, ma_slow: float | None, rule: RegimeRule = DEFAULT_REGIME_RULE
) -> Regime:
    """BULL above +2.0 %, BEAR below -2.0 %, SIDEWAYS in between (exactly ±2.0 included), UNKNOWN
    when either average is missing or NaN (§2.6, §13.3 E)."""
    if ma_fast is None or ma_slow is None or math.isnan(ma_fast) or math.isnan(ma_slow):
        return Regime.UNKNOWN
    diff = diff_pct(ma_fast, ma_slow)
    if diff > rule.bull_threshold_pct:
        return Regime.BULL
    if diff < rule.bear_threshold_pct:
        return Regime.BEAR
    return Regime.SIDEWAYS


def diff_pct(ma_fast: float, ma_slow: float) -> float:
    """``(ma50 - ma200) / ma200 × 100``; 0 when ``ma200`` is 0 (§2.6 step 5)."""
    if ma_slow == 0.0:
        return 0.0
    return (ma_fast - ma_slow) / ma_slow * 100.0


def _mean_tail(values: Sequence[float], period: int) -> float:
    total = 0.0
    for i in range(len(values) - period, len(values)):
        total += values[i]
    return total / period


def regime_from_closes(closes: Sequence[float], rule: RegimeRule = DEFAULT_REGIME_RULE) -> RegimeReading:
    """The regime as a pure function of the last ``rule.min_hourly_candles`` closed hourly closes.

    Fewer closed hours than the minimum -> UNKNOWN (the averages that can be computed are still
    reported). Only the last ``min_hourly_candles`` closes are ever read.
    """
    kept = closes[-rule.hours_kept :] if len(closes) > rule.hours_kept else closes
    n = len(kept)
    fast = _mean_tail(kept, rule.ma_fast_period) if n >= rule.ma_fast_period else NAN
    slow = _mean_tail(kept, rule.ma_slow_period) if n >= rule.ma_slow_period else NAN
    if n < rule.min_hourly_candles or math.isnan(fast) or math.isnan(slow):
        diff = diff_pct(fast, slow) if not (math.isnan(fast) or math.isnan(slow)) else NAN
        return RegimeReading(Regime.UNKNOWN, fast, slow, diff, n)
    return RegimeReading(classify_regime(fast, slow, rule), fast, slow, diff_pct(fast, slow), n)

"""The definitions: each indicator as a pure function of one bounded window of floats.

These are the reference semantics (BEHAVIOUR §2.2-§2.4) and the live path calls them directly.
Arithmetic is written as explicit left-to-right loops in float64 on purpose: the vectorised batch
path (``batch.py``) performs the very same IEEE-754 operations in the same order, which is what
makes live, restarted and batch values *bitwise* equal, not merely close. Do not replace a loop
here with ``sum()``/``statistics``/``numpy`` reductions: they round differently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import islice

NAN = math.nan
INF = math.inf


class InsufficientDataError(ValueError):
    """Raised when a window is shorter than an indicator needs (the original's "insufficient data")."""


def price_changes(closes: Sequence[float]) -> tuple[list[float], list[float]]:
    """Per-row gains and losses; row 0 has no change in the window, so both are 0 (§2.2)."""
    gains = [0.0]
    losses = [0.0]
    for i in range(1, len(closes)):
        d = closes[i] - closes[i - 1]
        gains.append(d if d > 0.0 else 0.0)
        losses.append(-d if d < 0.0 else 0.0)
    return gains, losses


def rsi_value(avg_gain: float, avg_loss: float) -> float:
    """``100 - 100/(1 + A/B)``; ``B = 0`` gives 100 when ``A > 0`` and NaN when flat (§2.2)."""
    if avg_loss == 0.0:
        return 100.0 if avg_gain > 0.0 else NAN
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def rsi_tail(gains: Sequence[float], losses: Sequence[float], period: int, tail: int) -> list[float]:
    """The last ``tail`` RSI values of the window whose per-row gains/losses are given.

    Wilder EMA with ``alpha = 1/period`` seeded at the window's first row with ``A_0 = B_0 = 0``
    (``gains[0]``/``losses[0]`` are ignored: the first row has no change inside the window).
    Values at indices ``< period - 1`` are NaN.
    """
    n = len(gains)
    alpha = 1.0 / period
    beta = 1.0 - alpha
    first = max(1, n - tail)
    out: list[float] = [NAN] if n - tail <= 0 < n else []  # row 0: A = B = 0, flat by definition
    a = 0.0
    b = 0.0
    for g, lo in zip(islice(gains, 1, first), islice(losses, 1, first), strict=True):
        a = beta * a + alpha * g
        b = beta * b + alpha * lo
    i = first
    edge = period - 1
    for g, lo in zip(islice(gains, first, n), islice(losses, first, n), strict=True):
        a = beta * a + alpha * g
        b = beta * b + alpha * lo
        out.append(rsi_value(a, b) if i >= edge else NAN)
        i += 1
    return out


def rsi_tail_and_last(
    gains: Sequence[float], losses: Sequence[float], period: int, tail: int, last_period: int
) -> tuple[list[float], float]:
    """``rsi_tail(gains, losses, period, tail)`` and ``rsi_tail(gains, losses, last_period, 1)[-1]``
    in one pass over the window (the live path needs RSI(7)'s tail and RSI(14) every candle).

    Each EMA sees exactly the operations, in the order, of its own ``rsi_tail`` call, so both
    results are bitwise those of the two calls. Needs ``len(gains) >= last_period + 1``.
    """
    n = len(gains)
    if n < last_period + 1:
        raise InsufficientDataError(f"RSI({last_period}) needs {last_period + 1} rows, got {n}")
    alpha, last_alpha = 1.0 / period, 1.0 / last_period
    beta, last_beta = 1.0 - alpha, 1.0 - last_alpha
    first = max(1, n - tail)
    out: list[float] = [NAN] if n - tail <= 0 else []  # row 0: A = B = 0, flat by definition
    a = b = last_a = last_b = 0.0
    for g, lo in zip(islice(gains, 1, first), islice(losses, 1, first), strict=True):
        a = beta * a + alpha * g
        b = beta * b + alpha * lo
        last_a = last_beta * last_a + last_alpha * g
        last_b = last_beta * last_b + last_alpha * lo
    i = first
    edge = period - 1
    for g, lo in zip(islice(gains, first, n), islice(losses, first, n), strict=True):
        a = beta * a + alpha * g
        b = beta * b + alpha * lo
        last_a = last_beta * last_a + last_alpha * g
        last_b = last_beta * last_b + last_alpha * lo
        out.append(rsi_value(a, b) if i >= edge else NAN)
        i += 1
    return out, rsi_value(last_a, last_b)


def rsi_series(closes: Sequence[float], period: int) -> list[float]:
    """RSI of every row of one window (§2.2); raises when fewer than ``period + 1`` closes."""
    if len(closes) < period + 1:
        raise InsufficientDataError(f"RSI({period}) needs {period + 1} closes, got {len(closes)}")
    gains, losses = price_changes(closes)
    return rsi_tail(gains, losses, period, len(closes))


def mean_last(values: Sequence[float], period: int, end: int | None = None) -> float:
    """Mean of ``values[end - period:end]``, summed oldest first from 0.0."""
    stop = len(values) if end is None else end
    if stop < period:
        raise InsufficientDataError(f"mean of {period} needs {period} values, got {stop}")
    total = 0.0
    for i in range(stop - period, stop):
        total += values[i]
    return total / period


def sma(values: Sequence[float], period: int) -> float:
    """SMA(period) at the last row (``ma_trend``); raises when fewer than ``period`` rows."""
    return mean_last(values, period)


def sample_std_last(values: Sequence[float], period: int, end: int | None = None) -> tuple[float, float]:
    """(mean, sample standard deviation ddof=1) of ``values[end - period:end]``, two-pass."""
    stop = len(values) if end is None else end
    mean = mean_last(values, period, stop)
    squares = 0.0
    for i in range(stop - period, stop):
        d = values[i] - mean
        squares += d * d
    return mean, math.sqrt(squares / (period - 1))


def bollinger(closes: Sequence[float], period: int = 20, width: float = 2.0) -> tuple[float, float, float]:
    """(lower, mid, upper) at the last row: ``mid ± width × sample std`` (§2.3)."""
    mid, std = sample_std_last(closes, period)
    return mid - width * std, mid, mid + width * std


def volume_ratio_row(volumes: Sequence[float], end: int, period: int = 20) -> float:
    """Series value at row ``end - 1``: ``v / mean(previous period)``; zero mean gives +inf (or NaN
    when the volume is 0 too); fewer than ``period`` previous rows gives NaN (§2.3)."""
    row = end - 1
    if row < period:
        return NAN
    mean = mean_last(volumes, period, row)
    v = volumes[row]
    if mean == 0.0:
        return INF if v > 0.0 else NAN
    return v / mean


def vol_ratio(volumes: Sequence[float], period: int = 20) -> float:
    """``volume_t / mean(volume_{t-20..t-1})`` at the last row; 0.0 on a zero mean (§2.3)."""
    if len(volumes) < period + 1:
        raise InsufficientDataError(f"vol_ratio needs {period + 1} rows, got {len(volumes)}")
    value = volume_ratio_row(volumes, len(volumes), period)
    return 0.0 if math.isinf(value) or math.isnan(value) else value


def vol_ratio_series(volumes: Sequence[float], period: int = 20) -> list[float]:
    """The per-row volume ratio series (NaN where undefined, +inf on a zero mean)."""
    return [volume_ratio_row(volumes, end, period) for end in range(1, len(volumes) + 1)]


def recent_vol_ratios(volumes: Sequence[float], count: int = 5, period: int = 20) -> list[float]:
    """Last ``count`` values of the ratio series, oldest first, NaN -> 0.0, +inf kept (§2.3)."""
    n = len(volumes)
    out = []
    for end in range(max(1, n - count + 1), n + 1):
        value = volume_ratio_row(volumes, end, period)
        out.append(0.0 if math.isnan(value) else value)
    return out


def rsi_min_lookback(rsi_values: Sequence[float], lookback: int) -> float:
    """Min of the last ``lookback`` RSI values, the current one included, NaNs skipped (§2.3)."""
    best = NAN
    for value in rsi_values[-lookback:]:
        if value == value and (best != best or value < best):
            best = value
    return best


def bb_touch_recovery(
    closes: Sequence[float], bb_lower: Sequence[float], lookback: int, sustain: int
) -> bool:
    """Touched the lower band in the first ``lookback - sustain`` of the last ``lookback`` rows, then
    closed above it for the last ``sustain`` rows; rows without a band are dropped first (§2.4)."""
    pairs = [(c, lo) for c, lo in zip(closes, bb_lower, strict=True) if lo == lo]
    if len(pairs) < max(lookback, sustain + 1):
        return False
    last = pairs[-lookback:]
    touched = any(c <= lo for c, lo in last[: lookback - sustain])
    recovered = all(c > lo for c, lo in last[lookback - sustain :])
    return touched and recovered

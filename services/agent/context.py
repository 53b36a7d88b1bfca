"""Market context the reviewers see (BEHAVIOUR §5.2, §5.3): closed hourly bars and features of them.

Pure: bars in, numbers out. Indicators are floats; rounding follows the spec (4 dp).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise

from coinpilot.clock import ensure_utc, floor_hour
from coinpilot.contracts import HourlyCandle

HOUR = timedelta(hours=1)
CONTEXT_CANDLES = 24
BEAR_WINDOW = max(2, 8)
PATTERN_WINDOW = 6
MIN_RANGE = 1e-9


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed hourly bar covering ``[ts_open, ts_open + 1h)``."""

    ts_open: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def ts_close(self) -> datetime:
        return self.ts_open + HOUR

    @classmethod
    def of(cls, candle: HourlyCandle) -> Bar:
        return cls(
            ts_open=candle.ts_open,
            open=float(candle.open),
            high=float(candle.high),
            low=float(candle.low),
            close=float(candle.close),
            volume=float(candle.volume),
        )

    def as_context(self) -> dict[str, str | float]:
        """The §5.2 element: ISO bucket start and float OHLCV."""
        return {
            "timestamp": ensure_utc(self.ts_open).isoformat(),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }

    def as_ohlc(self) -> dict[str, str | float]:
        """The Analyst's sanitized element: volume removed so the model cannot re-judge it."""
        element = self.as_context()
        del element["volume"]
        return element


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """A 1m row as stored in market_data, used to warm the context by resampling (§2.5)."""

    ts_open: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


def resample_hourly(rows: Iterable[MinuteRow], *, closed_before: datetime | None = None) -> list[Bar]:
    """Group 1m rows by UTC hour (closed-left, labelled left); keep only hours that ended by
    ``closed_before`` when given, so a warm start never includes the still-forming hour."""
    bars: list[Bar] = []
    bucket: list[MinuteRow] = []

    def flush() -> None:
        if bucket:
            bars.append(
                Bar(
                    ts_open=floor_hour(bucket[0].ts_open),
                    open=bucket[0].open,
                    high=max(r.high for r in bucket),
                    low=min(r.low for r in bucket),
                    close=bucket[-1].close,
                    volume=sum(r.volume for r in bucket),
                )
            )

    for row in sorted(rows, key=lambda r: r.ts_open):
        if bucket and floor_hour(row.ts_open) != floor_hour(bucket[0].ts_open):
            flush()
            bucket = []
        bucket.append(row)
    flush()
    if closed_before is not None:
        bars = [b for b in bars if b.ts_close <= closed_before]
    return bars


def market_context(bars: Sequence[Bar], limit: int = CONTEXT_CANDLES) -> tuple[dict[str, str | float], ...]:
    return tuple(b.as_context() for b in bars[-limit:])


@dataclass(frozen=True, slots=True)
class BearFeatures:
    downtrend_ratio_8h: float = 0.0
    rebound_from_recent_low_pct_8h: float = 0.0
    volume_recovery_ratio_8h: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {
            "bear_downtrend_ratio_8h": self.downtrend_ratio_8h,
            "bear_rebound_from_recent_low_pct_8h": self.rebound_from_recent_low_pct_8h,
            "bear_volume_recovery_ratio_8h": self.volume_recovery_ratio_8h,
        }


def bear_features(bars: Sequence[Bar], window: int = BEAR_WINDOW) -> BearFeatures:
    """Share of falling closes, rebound from the low and volume recovery over the last ``window`` bars."""
    recent = bars[-window:]
    if len(recent) < 2:
        return BearFeatures()
    closes = [b.close for b in recent]
    diffs = [b - a for a, b in pairwise(closes)]
    downtrend = round(sum(1 for d in diffs if d < 0) / len(diffs), 4)
    low = min(closes)
    rebound = round((closes[-1] - low) / low * 100, 4) if low > 0 else 0.0
    previous = [b.volume for b in recent[:-1]]
    mean_previous = sum(previous) / len(previous)
    recovery = round(recent[-1].volume / mean_previous, 4) if mean_previous > 0 else 1.0
    return BearFeatures(downtrend, rebound, recovery)


class Direction(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    FLAT = "FLAT"


@dataclass(frozen=True, slots=True)
class PatternFeatures:
    """Candle-pattern features of the last six bars (§5.3)."""

    pattern_direction: Direction = Direction.FLAT
    net_change_pct_6h: float = 0.0
    bearish_streak_6h: int = 0
    bullish_streak_6h: int = 0
    last_body_to_range_ratio: float = 0.0
    last_upper_wick_ratio: float = 0.0
    last_lower_wick_ratio: float = 0.0
    range_expansion_ratio_6h: float = 1.0

    def as_dict(self) -> dict[str, str | float | int]:
        return {
            "pattern_direction": str(self.pattern_direction),
            "net_change_pct_6h": self.net_change_pct_6h,
            "bearish_streak_6h": self.bearish_streak_6h,
            "bullish_streak_6h": self.bullish_streak_6h,
            "last_body_to_range_ratio": self.last_body_to_range_ratio,
            "last_upper_wick_ratio": self.last_upper_wick_ratio,
            "last_lower_wick_ratio": self.last_lower_wick_ratio,
            "range_expansion_ratio_6h": self.range_expansion_ratio_6h,
        }


def _is_number(value: float) -> bool:
    return isinstance(value, int | float) and value == value and value not in (float("inf"), float("-inf"))


def _streaks(bars: Sequence[Bar]) -> tuple[int, int]:
    """Walk back from the newest bar: count its colour, stop on a doji or once the colour flips.

    The flipping bar is counted before the walk stops, exactly as the original does.
    """
    bearish = bullish = 0
    for bar in reversed(bars):
        if bar.close < bar.open:
            bearish += 1
            if bullish > 0:
                break
        elif bar.close > bar.open:
            bullish += 1
            if bearish > 0:
                break
        else:
            break
    return bearish, bullish


def pattern_features(bars: Sequence[Bar], window: int = PATTERN_WINDOW) -> PatternFeatures:
    usable = [b for b in bars[-window:] if all(_is_number(v) for v in (b.open, b.high, b.low, b.close))]
    if len(usable) < 2:
        return PatternFeatures()
    first, last = usable[0].close, usable[-1].close
    net = round((last - first) / first * 100, 4) if first > 0 else 0.0
    direction = Direction.UP if net > 0.2 else Direction.DOWN if net < -0.2 else Direction.FLAT
    bearish, bullish = _streaks(usable)
    tip = usable[-1]
    span = max(tip.high - tip.low, MIN_RANGE)
    ranges = [max(b.high - b.low, MIN_RANGE) for b in usable]
    earlier = ranges[:-1]
    return PatternFeatures(
        pattern_direction=direction,
        net_change_pct_6h=net,
        bearish_streak_6h=bearish,
        bullish_streak_6h=bullish,
        last_body_to_range_ratio=round(abs(tip.close - tip.open) / span, 4),
        last_upper_wick_ratio=round(max(0.0, (tip.high - max(tip.open, tip.close)) / span), 4),
        last_lower_wick_ratio=round(max(0.0, (min(tip.open, tip.close) - tip.low) / span), 4),
        range_expansion_ratio_6h=round(ranges[-1] / (sum(earlier) / len(earlier)), 4),
    )

"""Market data messages: closed candles, indicator snapshots and the regime."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import Field, WithJsonSchema, model_validator

from coinpilot.contracts.base import Contract, Money, Symbol, UtcDatetime, minute_key
from coinpilot.contracts.enums import Regime

# A ratio that may be +inf (zero mean volume, §2.3); JSON carries it as the string "Infinity".
VolumeRatio = Annotated[float, WithJsonSchema({"anyOf": [{"type": "number"}, {"const": "Infinity"}]})]


class _Candle(Contract):
    INTERVAL: ClassVar[timedelta]

    symbol: Symbol
    ts_open: UtcDatetime = Field(description="Candle start; the candle covers [ts_open, ts_event)")
    open: Money
    high: Money
    low: Money
    close: Money
    volume: Money = Field(description="Base-asset volume (e.g. BTC), not quote value")

    @model_validator(mode="after")
    def _check_shape(self) -> _Candle:
        if self.ts_event != self.ts_open + self.INTERVAL:
            raise ValueError(f"ts_event must be ts_open + {self.INTERVAL} (a closed candle)")
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError("OHLC out of order: need low <= open, close <= high")
        if self.volume < 0:
            raise ValueError("volume must be >= 0")
        return self


class MinuteCandle(_Candle):
    """A closed 1-minute candle. Published by the collector (and by replay), recorded by the recorder."""

    SUBJECT: ClassVar[str] = "candles.1m.{symbol}"
    INTERVAL: ClassVar[timedelta] = timedelta(minutes=1)

    def msg_id(self) -> str:
        return f"candle:1m:{self.symbol}:{minute_key(self.ts_open)}"


class HourlyCandle(_Candle):
    """A closed hourly candle built from 1-minute candles [HH:00, HH+1:00), labelled by its start."""

    SUBJECT: ClassVar[str] = "candles.1h.{symbol}"
    INTERVAL: ClassVar[timedelta] = timedelta(hours=1)

    minute_count: int = Field(ge=1, le=60, description="How many 1m candles the hour was built from")

    def msg_id(self) -> str:
        return f"candle:1h:{self.symbol}:{minute_key(self.ts_open)}"


class IndicatorSnapshot(Contract):
    """Indicators after one closed 1m candle. A value that cannot be computed yet is ``None`` and
    named in ``missing``; nothing is ever made up."""

    SUBJECT: ClassVar[str] = "indicators.1m.{symbol}"

    symbol: Symbol
    candle: MinuteCandle
    regime: Regime = Field(description="Regime in force for this candle (UNKNOWN until 200 closed hours)")
    regime_diff_pct: float | None = Field(default=None, description="(MA50-MA200)/MA200*100 of that regime")
    rsi_14: float | None = None
    rsi_7: float | None = None
    rsi_7_prev: float | None = None
    rsi_7_min_lookback: float | None = Field(default=None, description="min of the last L RSI(7) incl. now")
    rsi_7_recovery_lookback: int = 5
    ma_20: float | None = Field(default=None, description="SMA(ma_period) of closes")
    ma_period: int = 20
    bb_mid: float | None = None
    bb_upper: float | None = None
    bb_lower: float | None = None
    vol_ratio: float | None = Field(
        default=None, description="volume / mean(previous 20 volumes); 0 if mean 0"
    )
    recent_vol_ratios: tuple[VolumeRatio, ...] = Field(
        default=(), description="Last 5 per-row volume ratios, oldest first; a zero mean gives +inf"
    )
    bb_touch_recovery: bool | None = None
    bb_touch_lookback: int = 30
    bb_recovery_sustain_candles: int = 1
    bars_seen: int = Field(
        ge=0,
        description="Contiguous minutes of history in the window, this one included: candles and the "
        "no-trade minutes filled in short gaps; an outage (a longer gap) starts it again",
    )
    gap_minutes: int = Field(
        default=0, ge=0, description="Minutes missing from the feed right before this candle, filled or not"
    )
    window_has_gap: bool = Field(
        default=False, description="The indicator window holds a filled no-trade minute or spans an outage"
    )
    missing: tuple[str, ...] = Field(default=(), description="Names of indicator values not computable yet")

    def msg_id(self) -> str:
        return f"indicators:1m:{self.symbol}:{minute_key(self.candle.ts_open)}"


class RegimeUpdate(Contract):
    """The regime after a closed hourly candle (BEHAVIOUR §2.6, rebuild rules)."""

    SUBJECT: ClassVar[str] = "regime.{symbol}"

    symbol: Symbol
    regime: Regime
    ma50: float | None = None
    ma200: float | None = None
    diff_pct: float | None = None
    hourly_count: int = Field(ge=0, description="Closed hourly candles available when computed")
    as_of: UtcDatetime = Field(description="Start of the last closed hour used")

    def msg_id(self) -> str:
        return f"regime:{self.symbol}:{minute_key(self.as_of)}"


CandleInterval = Literal["1m", "1h"]

"""The strategy file (``strategy_v3.yaml``) as frozen, validated models (BEHAVIOUR §0).

Every trading value lives in that one YAML; services build their frozen core parameters from the
:class:`StrategyConfig` returned by :func:`load_strategy_config`. An invalid file never starts a
service: the loader raises :class:`~coinpilot.errors.ConfigError` naming the bad key path, e.g.
``regimes.BULL.exit.stop_loss_pct: Input should be greater than 0``.

Units are not uniform (kept from the original file so old configs still load); each field's
description states its unit. In short: exit ``*_pct`` keys are **fractions** (0.03 = 3 %),
``bull/bear_threshold_pct`` and ``ai_prefilter_min_rebound_pct`` are **percent** numbers
(2.0 = 2 %), ``min_rsi_7_bounce_pct`` is **RSI points**, ``ma_proximity_pct`` is a **multiplier**
of MA20 (0.985 = 98.5 % of it). ``volume_ratio`` and ``volume_min_ratio`` are **minimums** (the
original YAML comment calling ``volume_ratio`` an upper bound was wrong; the code always treated it
as ``vol_ratio >= volume_ratio``).

Public API: :func:`load_strategy_config`, :func:`parse_strategy_config`, :data:`SHIPPED_CONFIG`
and the models below (read them as documentation of the file).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coinpilot.contracts.enums import Regime
from coinpilot.errors import ConfigError
from coinpilot.symbols import DEFAULT_SYMBOLS, is_market

__all__ = [
    "SHIPPED_CONFIG",
    "TRADED_REGIMES",
    "DataConfig",
    "EntryConfig",
    "ExitConfig",
    "RegimeConfig",
    "RegimeDetectionConfig",
    "RegimesConfig",
    "RiskConfig",
    "StrategyConfig",
    "VolatilityConfig",
    "load_strategy_config",
    "parse_strategy_config",
]

#: The strategy file shipped inside the package (used when no path is given).
SHIPPED_CONFIG = Path(__file__).with_name("strategy_v3.yaml")

TRADED_REGIMES: tuple[Regime, ...] = (Regime.BULL, Regime.SIDEWAYS, Regime.BEAR)
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _utc_time(value: object) -> object:
    """Parse ``"HH:MM"``; an unquoted YAML ``00:05`` is read as the integer 5, so insist on text."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not _HH_MM.match(value):
        raise ValueError(f'must be a quoted "HH:MM" UTC time, got {value!r}')
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


class DataConfig(_Frozen):
    source_timeframe: Literal["1m"] = Field(default="1m", description="Candle interval traded on")
    indicator_timeframe: Literal["1h"] = Field(default="1h", description="Interval of the regime MAs")
    min_hourly_candles_for_regime: int = Field(
        default=200, ge=1, description="Closed hourly candles needed before a regime is known (count)"
    )
    max_filled_gap_minutes: int = Field(
        default=15,  # coinpilot.indicators.MAX_FILLED_GAP; why 15: services/indicator/README.md
        ge=0,
        le=199,
        description="MINUTES: a gap of at most this many missing 1m candles is filled with no-trade "
        "minutes (flat at the previous close, volume 0); a longer one is an outage and restarts the "
        "warm-up. 0 fills nothing",
    )


class RegimeDetectionConfig(_Frozen):
    ma_fast_period: int = Field(default=50, ge=1, description="Fast SMA of hourly closes (candles)")
    ma_slow_period: int = Field(default=200, ge=2, description="Slow SMA of hourly closes (candles)")
    bull_threshold_pct: float = Field(
        default=2.0, description="PERCENT: (MA50-MA200)/MA200*100 above this is BULL (strict >)"
    )
    bear_threshold_pct: float = Field(
        default=-2.0, description="PERCENT: (MA50-MA200)/MA200*100 below this is BEAR (strict <)"
    )
    check_interval_hours: int = Field(default=1, ge=1, description="Hours between regime updates")
    unknown_fallback: Literal[Regime.BULL, Regime.SIDEWAYS, Regime.BEAR] = Field(
        default=Regime.SIDEWAYS,
        description="Regime whose EXIT block applies while the regime is UNKNOWN (entries stay blocked)",
    )
    redis_ttl_seconds: int = Field(default=7200, ge=1, description="TTL of market:regime:<SYM> (seconds)")

    @model_validator(mode="after")
    def _ordered(self) -> RegimeDetectionConfig:
        if self.ma_fast_period >= self.ma_slow_period:
            raise ValueError("ma_fast_period must be smaller than ma_slow_period")
        if self.bear_threshold_pct > self.bull_threshold_pct:
            raise ValueError("bear_threshold_pct must not exceed bull_threshold_pct")
        return self


class EntryConfig(_Frozen):
    """Entry rules of one regime (BEHAVIOUR §3.2), plus the agent's ``ai_*`` keys (§5)."""

    rsi_14_max: float = Field(ge=0, le=100, description="RSI POINTS: entry needs RSI(14) <= this")
    rsi_7_trigger: float = Field(
        ge=0, le=100, description="RSI POINTS: min RSI(7) of the lookback must be < this"
    )
    rsi_7_recover: float = Field(ge=0, le=100, description="RSI POINTS: RSI(7) now must be >= this")
    rsi_7_recovery_lookback: int = Field(default=5, ge=1, description="CANDLES searched for the RSI(7) low")
    min_rsi_7_bounce_pct: float | None = Field(
        default=None, ge=0, description="RSI POINTS (not percent): RSI(7) now minus the low must be >= this"
    )
    ma_condition: Literal["crossover", "proximity", "proximity_or_above", "none"] = Field(
        default="none",
        description="crossover: close > MA; proximity/proximity_or_above (identical): close >= MA*pct",
    )
    ma_period: int = Field(default=20, ge=1, description="SMA period of 1m closes (candles)")
    ma_proximity_pct: float | None = Field(
        default=None, gt=0, description="MULTIPLIER of the MA (0.985 = 98.5 % of MA20); absent = 0.97"
    )
    bb_enabled: bool = Field(default=False, description="SIDEWAYS only: require a BB lower touch-recovery")
    bb_period: int = Field(default=20, ge=2, description="Bollinger period (candles); shipped value 20")
    bb_std: float = Field(default=2.0, gt=0, description="Bollinger width (standard deviations); shipped 2.0")
    bb_touch_lookback: int = Field(default=30, ge=1, description="CANDLES searched for a close <= BB lower")
    bb_recovery_sustain_candles: int = Field(
        default=1, ge=1, description="CANDLES that must close above BB lower after the touch"
    )
    require_price_above_bb_lower: bool = Field(default=False, description="Reject when close < BB lower")
    volume_ratio: float | None = Field(
        default=None, ge=0, description="MINIMUM volume ratio (vol_ratio >= this); null = no check"
    )
    volume_min_ratio: float | None = Field(
        default=None, ge=0, description="MINIMUM volume ratio (vol_ratio >= this); null = no check"
    )
    volume_surge_check: bool = Field(default=False, description="Reject panic volume in the last 3 candles")
    volume_surge_ratio: float = Field(
        default=2.0, gt=0, description="RATIO: any of the last 3 volume ratios >= this is a surge"
    )
    ai_prefilter_enabled: bool = True
    ai_prefilter_min_context_candles: int = Field(default=12, ge=0, description="Hourly candles (count)")
    ai_prefilter_max_downtrend_ratio: float | None = Field(default=None, ge=0, le=1, description="FRACTION")
    ai_prefilter_min_rebound_pct: float | None = Field(default=None, description="PERCENT (0.4 = 0.4 %)")
    ai_prefilter_min_volume_recovery_ratio: float | None = Field(default=None, ge=0, description="RATIO")
    ai_reject_cooldown_min_1: int = Field(default=5, ge=0, description="MINUTES after the 1st AI reject")
    ai_reject_cooldown_min_2: int = Field(default=10, ge=0, description="MINUTES after the 2nd AI reject")
    ai_reject_cooldown_min_3: int = Field(default=15, ge=0, description="MINUTES after the 3rd+ AI reject")
    ai_reject_cooldown_window_min: int = Field(default=30, ge=0, description="MINUTES a reject is remembered")
    ai_max_calls_per_hour: int = Field(default=20, ge=0)
    ai_max_calls_per_day: int = Field(default=120, ge=0)
    ai_credit_block_minutes: int = Field(default=60, ge=0, description="MINUTES")
    ai_error_streak_threshold: int = Field(default=5, ge=1, description="Consecutive AI errors (count)")
    ai_error_block_minutes: int = Field(default=30, ge=0, description="MINUTES")

    @model_validator(mode="after")
    def _recover_reachable(self) -> EntryConfig:
        if self.rsi_7_recovery_lookback < 2:
            raise ValueError("rsi_7_recovery_lookback must be >= 2 (the low and the current value)")
        return self


class ExitConfig(_Frozen):
    """Exit rules of one regime (BEHAVIOUR §3.4). Every ``*_pct`` here is a FRACTION."""

    take_profit_pct: float = Field(gt=0, lt=10, description="FRACTION: exit when pnl >= this (0.05 = 5 %)")
    stop_loss_pct: float = Field(gt=0, lt=1, description="FRACTION: exit when pnl <= -this (0.03 = 3 %)")
    trailing_stop_pct: float = Field(gt=0, lt=1, description="FRACTION below the high-water mark")
    trailing_stop_activation_pct: float = Field(
        ge=0, lt=10, description="FRACTION: trailing arms once the HWM is this far above entry"
    )
    rsi_overbought: float = Field(ge=0, le=100, description="RSI POINTS: RSI(14) > this may exit")
    rsi_exit_min_profit_pct: float = Field(
        ge=0, lt=10, description="FRACTION: minimum pnl for the RSI-overbought exit"
    )
    time_limit_hours: float = Field(gt=0, description="HOURS held before a time exit (strict >)")

    @property
    def time_limit(self) -> timedelta:
        return timedelta(hours=self.time_limit_hours)


class RegimeConfig(_Frozen):
    entry: EntryConfig
    exit: ExitConfig
    position_size_ratio: float = Field(
        ge=0, le=1, description="FRACTION of max_position_size used as the target in this regime"
    )


class RegimesConfig(_Frozen):
    """One block per tradable regime. UNKNOWN has none: no entry, and exits use ``unknown_fallback``."""

    BULL: RegimeConfig
    SIDEWAYS: RegimeConfig
    BEAR: RegimeConfig

    def for_regime(self, regime: Regime) -> RegimeConfig | None:
        """The block of ``regime``; ``None`` for UNKNOWN."""
        if regime is Regime.UNKNOWN:
            return None
        block: RegimeConfig = getattr(self, regime.value)
        return block


class VolatilityConfig(_Frozen):
    """GARCH(1,1) on hourly log returns per symbol (BEHAVIOUR §4.9, rebuild)."""

    vol_threshold_hourly_pct: float = Field(
        default=1.5,
        gt=0,
        description="PERCENT per HOUR: forecast sigma of hourly returns > this is high volatility",
    )
    window_hours: int = Field(
        default=2160, ge=2, description="Hourly returns used for a fit (count, 90 days)"
    )
    min_returns: int = Field(default=500, ge=10, description="Fewer hourly returns than this: no fit")
    stale_after_hours: float = Field(
        default=36, gt=0, description="HOURS after which a fit is ignored (multiplier 1.0)"
    )
    refit_at_utc: time = Field(
        default=time(0, 5), description='"HH:MM" UTC: refit on the first hourly candle at/after it, daily'
    )
    high_volatility_multiplier: float = Field(
        default=0.5, gt=0, le=1, description="MULTIPLIER of the order size while volatility is high"
    )

    _parse_refit = field_validator("refit_at_utc", mode="before")(_utc_time)

    @model_validator(mode="after")
    def _window_fits(self) -> VolatilityConfig:
        if self.min_returns > self.window_hours:
            raise ValueError("min_returns must not exceed window_hours")
        return self

    @property
    def stale_after(self) -> timedelta:
        return timedelta(hours=self.stale_after_hours)


class RiskConfig(_Frozen):
    """Risk limits (BEHAVIOUR §4). FRACTIONS are of the reference equity."""

    max_position_size: float = Field(default=0.20, gt=0, le=1, description="FRACTION of equity per order")
    max_total_exposure: float = Field(default=1.00, gt=0, description="FRACTION of equity in all positions")
    max_concurrent_positions: int = Field(default=5, ge=1, description="Open positions (count)")
    allow_same_coin_duplicate: bool = Field(default=False, description="Allow a BUY on a held symbol")
    max_daily_loss: float = Field(
        default=0.03, gt=0, lt=1, description="FRACTION of equity: realised loss that halts the day"
    )
    max_daily_trades: int = Field(default=6, ge=0, description="BUYs per trading day (count)")
    cooldown_after_consecutive_losses: int = Field(
        default=3, ge=1, description="Consecutive losing SELLs that start a cooldown (count)"
    )
    cooldown_hours: float = Field(default=2, ge=0, description="HOURS of cooldown")
    trading_day_boundary_utc: time = Field(
        default=time(0, 0), description='"HH:MM" UTC when the trading day (daily limits) starts'
    )
    volatility: VolatilityConfig = Field(default_factory=VolatilityConfig)

    _parse_boundary = field_validator("trading_day_boundary_utc", mode="before")(_utc_time)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)


class StrategyConfig(_Frozen):
    version: Literal[3] = 3
    symbols: tuple[str, ...] = Field(default=DEFAULT_SYMBOLS, min_length=1, description="Upbit markets")
    data: DataConfig = Field(default_factory=DataConfig)
    regime_detection: RegimeDetectionConfig = Field(default_factory=RegimeDetectionConfig)
    regimes: RegimesConfig
    risk_management: RiskConfig = Field(default_factory=RiskConfig)

    @field_validator("symbols")
    @classmethod
    def _markets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not is_market(s)]
        if bad:
            raise ValueError(f"not Upbit market codes like KRW-BTC: {bad}")
        if len(set(value)) != len(value):
            raise ValueError("duplicate symbols")
        return value

    def regime(self, regime: Regime) -> RegimeConfig | None:
        """The block of ``regime``; ``None`` for UNKNOWN (no entries in an unknown regime)."""
        return self.regimes.for_regime(regime)

    def exit_block(self, regime: Regime) -> ExitConfig:
        """The exit rules for ``regime``; UNKNOWN maps to ``regime_detection.unknown_fallback``."""
        block = self.regimes.for_regime(regime)
        if block is None:
            block = self.regimes.for_regime(self.regime_detection.unknown_fallback)
        assert block is not None
        return block.exit


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_strategy_config(data: Mapping[str, Any], *, source: str = "<mapping>") -> StrategyConfig:
    """Validate an already-parsed mapping; raises ConfigError naming each bad key path."""
    try:
        return StrategyConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_error_text(exc)}") from exc


def load_strategy_config(path: Path | None = None) -> StrategyConfig:
    """Load and validate the strategy YAML (``None``: the shipped ``strategy_v3.yaml``).

    Fails fast: a missing, empty, unparsable or invalid file raises ConfigError; nothing falls
    back silently to defaults.
    """
    path = SHIPPED_CONFIG if path is None else Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read strategy config: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the strategy config must be a mapping, got {type(raw).__name__}")
    return parse_strategy_config(raw, source=str(path))

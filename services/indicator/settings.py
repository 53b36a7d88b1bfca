"""Indicator settings (env prefix ``COINPILOT_INDICATOR_``) and the core's frozen config from the YAML."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.indicators import IndicatorParams, RegimeParams, RegimeRule
from coinpilot.strategy_config import TRADED_REGIMES, StrategyConfig, load_strategy_config
from services.indicator.core import IndicatorConfig


class IndicatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_INDICATOR_", extra="ignore", frozen=True)

    recent_outputs_per_symbol: int = Field(
        default=240,
        ge=1,
        description="Candles whose outputs are kept to re-publish on a late redelivery (per run and symbol)",
    )


def config_from_strategy(strategy: StrategyConfig) -> IndicatorConfig:
    """The lookbacks of each regime's entry block, the ``regime_detection`` rule (§0.2, §0.3) and
    the longest gap filled with no-trade minutes (``data.max_filled_gap_minutes``)."""
    by_regime = {}
    for regime in TRADED_REGIMES:
        block = strategy.regimes.for_regime(regime)
        if block is None:
            continue
        entry = block.entry
        by_regime[regime] = IndicatorParams(
            ma_period=entry.ma_period,
            rsi_7_recovery_lookback=entry.rsi_7_recovery_lookback,
            bb_touch_lookback=entry.bb_touch_lookback,
            bb_recovery_sustain_candles=entry.bb_recovery_sustain_candles,
        )
    detection = strategy.regime_detection
    rule = RegimeRule(
        ma_fast_period=detection.ma_fast_period,
        ma_slow_period=detection.ma_slow_period,
        bull_threshold_pct=detection.bull_threshold_pct,
        bear_threshold_pct=detection.bear_threshold_pct,
        min_hourly_candles=strategy.data.min_hourly_candles_for_regime,
    )
    return IndicatorConfig(
        regimes=RegimeParams(by_regime=by_regime),
        rule=rule,
        max_filled_gap=strategy.data.max_filled_gap_minutes,
    )


def load_config(path: Path | None) -> tuple[IndicatorConfig, int]:
    """(core config, Redis TTL of ``market:regime:<SYM>`` in seconds) from the strategy YAML."""
    strategy = load_strategy_config(path)
    return config_from_strategy(strategy), strategy.regime_detection.redis_ttl_seconds

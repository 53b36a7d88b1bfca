"""Strategy settings (env prefix ``COINPILOT_STRATEGY_``); the trading values come from the YAML."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.strategy_config import load_strategy_config
from services.strategy.params import StrategyParams


class StrategySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_STRATEGY_", extra="ignore", frozen=True)

    pending_timeout_minutes: float = Field(
        default=10.0,
        gt=0,
        description="Event-time minutes after which an unanswered signal stops blocking its symbol",
    )
    warmup_bars: int = Field(
        default=40, ge=1, description="Contiguous 1m candles before entries are evaluated"
    )
    cache_retry_seconds: float = Field(
        default=10.0, ge=0, description="After a Redis failure, skip status/HWM cache writes this long"
    )

    def params(self, strategy_config: Path | None) -> StrategyParams:
        """The frozen core parameters: the strategy YAML (``None``: the shipped one) plus these knobs."""
        return StrategyParams.from_config(
            load_strategy_config(strategy_config),
            warmup_bars=self.warmup_bars,
            pending_timeout=timedelta(minutes=self.pending_timeout_minutes),
        )

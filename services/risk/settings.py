"""Risk settings (env prefix ``COINPILOT_RISK_``; the §0.5 names are accepted too).

Limits and sizing come from the strategy YAML; only deployment facts live here: a fixed
reference equity, the cash fee buffer and the paper account's starting cash.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.strategy_config import StrategyConfig, load_strategy_config
from services.risk.params import DEFAULT_AVERAGE_BAND, DEFAULT_FEE_BUFFER, DEFAULT_PRICE_BAND, RiskParams


class RiskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_RISK_", extra="ignore", frozen=True)

    reference_equity: Decimal | None = Field(
        default=None,
        validation_alias=AliasChoices("COINPILOT_RISK_REFERENCE_EQUITY", "REFERENCE_EQUITY"),
        description="Fixed reference equity (quote currency); unset or <= 0: a daily snapshot",
    )
    order_fee_buffer_pct: Decimal = Field(
        default=DEFAULT_FEE_BUFFER,
        validation_alias=AliasChoices("COINPILOT_RISK_ORDER_FEE_BUFFER_PCT", "ORDER_FEE_BUFFER_PCT"),
        description="FRACTION of cash kept back for fees; invalid or outside [0, 1) means 0.002",
    )
    paper_initial_balance: Decimal | None = Field(
        default=Decimal(10_000_000),
        validation_alias=AliasChoices(
            "COINPILOT_RISK_PAPER_INITIAL_BALANCE", "COINPILOT_EXECUTOR_INITIAL_BALANCE", "PAPER_BALANCE"
        ),
        description=(
            "Cash assumed for an account the executor has not created yet (it creates it on the first "
            "order with the same setting); empty: a missing account rejects ACCOUNT_MISSING"
        ),
    )
    pending_timeout_minutes: float = Field(
        default=10.0, gt=0, description="Event-time minutes a proposed BUY blocks its symbol at most"
    )
    price_band_pct: Decimal = Field(
        default=DEFAULT_PRICE_BAND * 100,
        gt=0,
        description="Percent an entry signal's price may differ from the recorded close of its minute",
    )
    average_band_pct: Decimal = Field(
        default=DEFAULT_AVERAGE_BAND * 100,
        gt=0,
        description="Percent an entry signal's price may differ from its snapshot's MA(20)",
    )
    cache_retry_seconds: float = Field(default=10.0, ge=0, description="Skip Redis this long after a failure")

    @field_validator("reference_equity", "paper_initial_balance", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("order_fee_buffer_pct", mode="before")
    @classmethod
    def _fee_buffer(cls, value: object) -> Decimal:
        """§0.5: an unparsable value or one outside [0, 1) falls back to 0.002, as the original did."""
        try:
            parsed = Decimal(str(value))
        except (InvalidOperation, ValueError):
            return DEFAULT_FEE_BUFFER
        return parsed if parsed.is_finite() and 0 <= parsed < 1 else DEFAULT_FEE_BUFFER

    def strategy(self, path: Path | None) -> StrategyConfig:
        return load_strategy_config(path)

    def params(self, config: StrategyConfig) -> RiskParams:
        return RiskParams.from_config(
            config,
            fee_buffer=self.order_fee_buffer_pct,
            reference_equity=self.reference_equity,
            pending_timeout=timedelta(minutes=self.pending_timeout_minutes),
            price_band=self.price_band_pct / 100,
            average_band=self.average_band_pct / 100,
        )

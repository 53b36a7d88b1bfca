"""Executor settings (env prefix ``COINPILOT_EXECUTOR_``); ``params()`` is all the core sees."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.executor.core import (
    DEFAULT_INITIAL_BALANCE,
    DEFAULT_PRICE_BAND,
    UPBIT_KRW_FEE_RATE,
    FillParams,
)


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COINPILOT_EXECUTOR_", extra="ignore", frozen=True)

    fee_rate: Decimal = Field(
        default=UPBIT_KRW_FEE_RATE,
        ge=0,
        lt=1,
        description="Fee per side as a fraction (0.0005 = Upbit KRW 0.05 %); 0 = the original, fee-free",
    )
    slippage_bps: Decimal = Field(
        default=Decimal(0), ge=0, lt=10_000, description="Paper slippage against us, basis points"
    )
    price_band: Decimal = Field(
        default=DEFAULT_PRICE_BAND,
        gt=0,
        description="How far (a fraction; 0.02 = 2 %) the venue's quote may be from the order's "
        "reference price before the order is rejected PRICE_OUT_OF_BAND",
    )
    initial_balance: Decimal = Field(
        default=DEFAULT_INITIAL_BALANCE, gt=0, description="Cash of a new account, in its quote currency"
    )

    def params(self) -> FillParams:
        return FillParams(fee_rate=self.fee_rate, slippage_bps=self.slippage_bps, price_band=self.price_band)

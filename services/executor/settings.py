"""Executor settings (env prefix ``COINPILOT_EXECUTOR_``); ``params()`` is all the core sees.

``LiveSettings.venue`` is ``paper`` unless set to ``upbit``, and live trading is refused at start-up
(``require_live``) unless ``COINPILOT_LIVE_TRADING=true`` *and* both Upbit keys are set. The keys
are ``SecretStr``: their repr, str and any log show ``**********``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from coinpilot.errors import ConfigError
from coinpilot.symbols import quote_currency
from services.executor.core import (
    DEFAULT_INITIAL_BALANCE,
    DEFAULT_PRICE_BAND,
    UPBIT_KRW_FEE_RATE,
    FillParams,
)

LIVE_QUOTE = "KRW"
"""Live trading on Upbit is the KRW market: the ledger's cash is one KRW account."""


def non_krw_markets(symbols: Iterable[str]) -> list[str]:
    """The markets live trading refuses (quoted in anything but KRW)."""
    return [s for s in symbols if quote_currency(s) != LIVE_QUOTE]


def require_krw_markets(symbols: Iterable[str]) -> None:
    """``ConfigError`` when a configured symbol is not a KRW market (live refuses to start)."""
    bad = non_krw_markets(symbols)
    if bad:
        raise ConfigError(
            f"live trading on Upbit is KRW markets only; COINPILOT_SYMBOLS has {', '.join(bad)}"
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


class LiveSettings(BaseSettings):
    """Where orders go (same prefix, ``COINPILOT_EXECUTOR_``): the service reads these, a backtest
    never does (it always fills on paper)."""

    model_config = SettingsConfigDict(env_prefix="COINPILOT_EXECUTOR_", extra="ignore", frozen=True)

    venue: Literal["paper", "upbit"] = Field(
        default="paper", description="Where orders go: the paper ledger, or Upbit (real money)"
    )
    live_trading: bool = Field(
        default=False,
        validation_alias=AliasChoices("COINPILOT_LIVE_TRADING", "COINPILOT_EXECUTOR_LIVE_TRADING"),
        description="The explicit switch without which venue=upbit refuses to start",
    )
    # the names `coinpilot reconcile` reads are taken too, so one pair of keys serves both
    upbit_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY", "COINPILOT_UPBIT_ACCESS_KEY"),
        description="Upbit API access key (secret)",
    )
    upbit_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("COINPILOT_EXECUTOR_UPBIT_SECRET_KEY", "COINPILOT_UPBIT_SECRET_KEY"),
        description="Upbit API secret key (secret)",
    )
    upbit_base_url: str = Field(
        default="https://api.upbit.com",
        validation_alias=AliasChoices("COINPILOT_EXECUTOR_UPBIT_BASE_URL", "COINPILOT_UPBIT_BASE_URL"),
        description="Upbit's REST API",
    )
    upbit_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Read timeout of one Upbit request; an order unanswered by then is looked up",
    )
    max_order_krw: Decimal = Field(
        default=Decimal(100_000), gt=0, description="Live: most one BUY may spend (quote currency)"
    )
    max_daily_krw: Decimal = Field(
        default=Decimal(500_000), gt=0, description="Live: most all BUYs of one UTC day may spend"
    )
    poll_interval_seconds: float = Field(
        default=0.5, gt=0, description="Live: between reads of an open order"
    )
    poll_attempts: int = Field(default=20, ge=1, description="Live: reads of an order per attempt")
    not_found_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Live: how long after sending, an order the exchange does not know is 'not yet' "
        "rather than 'never placed'",
    )

    def require_live(self) -> tuple[SecretStr, SecretStr]:
        """The key pair for ``venue=upbit``; ``ConfigError`` unless live trading is explicitly
        enabled and both keys are set (the message never contains a key)."""
        if not self.live_trading:
            raise ConfigError(
                "COINPILOT_EXECUTOR_VENUE=upbit trades real money: it needs COINPILOT_LIVE_TRADING=true"
            )
        access, secret = self.upbit_access_key, self.upbit_secret_key
        if access is None or secret is None or not access.get_secret_value() or not secret.get_secret_value():
            raise ConfigError(
                "COINPILOT_EXECUTOR_VENUE=upbit needs both COINPILOT_EXECUTOR_UPBIT_ACCESS_KEY and "
                "COINPILOT_EXECUTOR_UPBIT_SECRET_KEY"
            )
        return access, secret

    def not_found_grace(self) -> timedelta:
        return timedelta(seconds=self.not_found_grace_seconds)

"""The frozen parameters the risk core decides with, built from the strategy YAML and two settings.

Fractions of the YAML become exact ``Decimal`` through their written form (``0.2`` ->
``Decimal("0.2")``), so "20 % of 10,000,000" is exactly 2,000,000.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from decimal import Decimal
from types import MappingProxyType

from coinpilot.contracts import Regime
from coinpilot.strategy_config import TRADED_REGIMES, StrategyConfig

DEFAULT_FEE_BUFFER = Decimal("0.002")
# An entry signal's price is implausible beyond these fractions of the recorded close of its minute
# (which it should equal) and of its snapshot's MA(20) (the real files peak at 10.6 %, DOGE 2023).
DEFAULT_PRICE_BAND = Decimal("0.01")
DEFAULT_AVERAGE_BAND = Decimal("0.25")


def dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


@dataclass(frozen=True, slots=True)
class RiskParams:
    """Everything the risk core reads (BEHAVIOUR §4). Fractions are of the reference equity.

    ``reference_equity``: a fixed equity (the original ``REFERENCE_EQUITY``); ``None`` takes a
    snapshot of balance + exposure once per trading day. ``pending_timeout``: a proposed BUY blocks
    further BUYs of its symbol until its fill or rejection, or until this much event time passed.
    ``price_band`` / ``average_band``: how far (fractions) an entry signal's price may be from the
    recorded close of its minute / its snapshot's moving average before it is implausible.
    """

    max_position_size: Decimal = Decimal("0.20")
    max_total_exposure: Decimal = Decimal("1.00")
    max_concurrent_positions: int = 5
    allow_same_coin_duplicate: bool = False
    max_daily_loss: Decimal = Decimal("0.03")
    max_daily_trades: int = 6
    cooldown_after_losses: int = 3
    cooldown: timedelta = timedelta(hours=2)
    day_boundary: time = time(0, 0)
    size_ratio: Mapping[Regime, Decimal] = field(
        default_factory=lambda: MappingProxyType(
            {Regime.BULL: Decimal("1.0"), Regime.SIDEWAYS: Decimal("0.9"), Regime.BEAR: Decimal("0.7")}
        )
    )
    fee_buffer: Decimal = DEFAULT_FEE_BUFFER
    reference_equity: Decimal | None = None
    high_volatility_multiplier: Decimal = Decimal("0.5")
    volatility_stale_after: timedelta = timedelta(hours=36)
    pending_timeout: timedelta = timedelta(minutes=10)
    price_band: Decimal = DEFAULT_PRICE_BAND
    average_band: Decimal = DEFAULT_AVERAGE_BAND

    @classmethod
    def from_config(
        cls,
        config: StrategyConfig,
        *,
        fee_buffer: Decimal = DEFAULT_FEE_BUFFER,
        reference_equity: Decimal | None = None,
        pending_timeout: timedelta = timedelta(minutes=10),
        price_band: Decimal = DEFAULT_PRICE_BAND,
        average_band: Decimal = DEFAULT_AVERAGE_BAND,
    ) -> RiskParams:
        risk = config.risk_management
        ratios = {r: dec(getattr(config.regimes, r.value).position_size_ratio) for r in TRADED_REGIMES}
        return cls(
            max_position_size=dec(risk.max_position_size),
            max_total_exposure=dec(risk.max_total_exposure),
            max_concurrent_positions=risk.max_concurrent_positions,
            allow_same_coin_duplicate=risk.allow_same_coin_duplicate,
            max_daily_loss=dec(risk.max_daily_loss),
            max_daily_trades=risk.max_daily_trades,
            cooldown_after_losses=risk.cooldown_after_consecutive_losses,
            cooldown=risk.cooldown,
            day_boundary=risk.trading_day_boundary_utc,
            size_ratio=MappingProxyType(ratios),
            fee_buffer=fee_buffer,
            reference_equity=reference_equity if reference_equity and reference_equity > 0 else None,
            high_volatility_multiplier=dec(risk.volatility.high_volatility_multiplier),
            volatility_stale_after=risk.volatility.stale_after,
            pending_timeout=pending_timeout,
            price_band=price_band,
            average_band=average_band,
        )

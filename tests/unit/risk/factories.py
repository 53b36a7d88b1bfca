"""Signals, fills and params for the risk tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

from coinpilot.contracts import EntrySignal, ExitReason, ExitSignal, Regime
from coinpilot.strategy_config import load_strategy_config
from services.risk.checks import OrderCheck
from services.risk.params import RiskParams
from tests.unit.strategy.factories import fill, snap

__all__ = ["CODE_DEFAULTS", "T0", "YAML", "check", "entry", "exit_signal", "fill"]

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
YAML = RiskParams.from_config(load_strategy_config())
# The original unit tests built the risk manager from code defaults, not from the YAML (§0.4).
CODE_DEFAULTS = RiskParams(
    max_position_size=Decimal("0.05"),
    max_total_exposure=Decimal("0.20"),
    max_concurrent_positions=3,
    max_daily_loss=Decimal("0.05"),
    max_daily_trades=10,
    size_ratio=MappingProxyType(
        {Regime.BULL: Decimal("1.0"), Regime.SIDEWAYS: Decimal("0.8"), Regime.BEAR: Decimal("0.5")}
    ),
)


def entry(
    symbol: str = "KRW-BTC", at: datetime = T0, price: str = "100", regime: Regime = Regime.BULL
) -> EntrySignal:
    s = snap(symbol=symbol, at=at, close=price, regime=regime, ma=float(price))
    return EntrySignal(ts_event=at, symbol=symbol, price=Decimal(price), regime=regime, snapshot=s)


def exit_signal(symbol: str = "KRW-BTC", at: datetime = T0, price: str = "95") -> ExitSignal:
    s = snap(symbol=symbol, at=at, close=price)
    return ExitSignal(
        ts_event=at,
        symbol=symbol,
        price=Decimal(price),
        exit_reason=ExitReason.STOP_LOSS,
        entry_regime=Regime.BULL,
        regime=Regime.BULL,
        avg_price=Decimal(100),
        quantity=Decimal(2),
        high_water_mark=Decimal(100),
        opened_at=at - timedelta(hours=1),
        position_id=f"{symbol}:2026-03-02T11:00Z:buy",
        snapshot=s,
    )


def check(amount: str = "40000", **changes: object) -> OrderCheck:
    """An order check against balance 1,000,000, no positions, reference equity 1,000,000."""
    base: dict[str, object] = {
        "symbol": "KRW-BTC",
        "amount": Decimal(amount),
        "now": T0,
        "reference_equity": Decimal(1_000_000),
        "balance": Decimal(1_000_000),
        "exposure": Decimal(0),
        "held_symbols": frozenset(),
    }
    return OrderCheck(**{**base, **changes})  # type: ignore[arg-type]

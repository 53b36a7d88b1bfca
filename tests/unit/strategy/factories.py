"""Snapshots, fills and params for the strategy tables: only the fields a case sets differ."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from coinpilot.contracts import Fill, IndicatorSnapshot, MinuteCandle, Regime, Side
from coinpilot.fill_ledger import PREFIX
from coinpilot.strategy_config import load_strategy_config
from services.strategy.params import StrategyParams

PARAMS = StrategyParams.from_config(load_strategy_config())
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SYMBOL = "KRW-BTC"


def snap(
    *,
    regime: Regime = Regime.BULL,
    close: str | float = "1005",
    at: datetime = T0,
    rsi: float | None = 40,
    rsi7: float | None = 43,
    rsi7_prev: float | None = 41,
    low: float | None = 39,
    ma: float | None = 1000,
    vol: float | None = 1.5,
    bb_lower: float | None = None,
    bb_touch_recovery: bool | None = None,
    recent: tuple[float, ...] = (),
    bars: int = 200,
    symbol: str = SYMBOL,
) -> IndicatorSnapshot:
    """A snapshot whose candle closes at ``at`` (its ts_event) with price ``close``."""
    price = Decimal(str(close))
    candle = MinuteCandle(
        symbol=symbol,
        ts_open=at - timedelta(minutes=1),
        ts_event=at,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(1),
    )
    return IndicatorSnapshot(
        ts_event=at,
        symbol=symbol,
        candle=candle,
        regime=regime,
        rsi_14=rsi,
        rsi_7=rsi7,
        rsi_7_prev=rsi7_prev,
        rsi_7_min_lookback=low,
        ma_20=ma,
        bb_lower=bb_lower,
        vol_ratio=vol,
        recent_vol_ratios=recent,
        bb_touch_recovery=bb_touch_recovery,
        bars_seen=bars,
    )


def fill(
    side: Side,
    *,
    order_id: str,
    price: str = "100",
    quantity: str = "1",
    regime: Regime = Regime.BULL,
    at: datetime = T0,
    opened_at: datetime | None = None,
    realized_pnl: str | None = None,
    symbol: str = SYMBOL,
) -> Fill:
    """A fill as the executor publishes it (BUY opens ``quantity`` at ``price``; SELL closes all)."""
    p, q = Decimal(price), Decimal(quantity)
    buy = side is Side.BUY
    return Fill(
        ts_event=at,
        order_id=order_id,
        symbol=symbol,
        side=side,
        currency="KRW",
        decision_price=p,
        fill_price=p,
        quantity=q,
        amount=p * q,
        fee=Decimal(0),
        balance_after=Decimal(1_000_000),
        position_quantity_after=q if buy else Decimal(0),
        position_avg_price_after=p if buy else Decimal(0),
        realized_pnl=None if realized_pnl is None else Decimal(realized_pnl),
        realized_pnl_gross=None if realized_pnl is None else Decimal(realized_pnl),
        regime=regime,
        high_water_mark=p,
        opened_at=opened_at or at,
    )


def row_of(f: Fill, position_id: str | None = None) -> dict[str, Any]:
    """The row a ``RECORD_COLUMNS`` select returns for the trading_history row of ``f`` (numbers
    as the driver returns NUMERIC, ledger figures as the JSON text the executor stores)."""

    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    values = {
        "order_id": f.order_id,
        "symbol": f.symbol,
        "side": str(f.side),
        "currency": f.currency,
        "executed_at": f.ts_event,
        "decision_price": f.decision_price,
        "price": f.fill_price,
        "quantity": f.quantity,
        "amount": f.amount,
        "fee": f.fee,
        "realized_pnl": f.realized_pnl,
        "entry_avg_price": f.entry_avg_price,
        "regime": str(f.regime),
        "exit_reason": None if f.exit_reason is None else str(f.exit_reason),
        "high_water_mark": f.high_water_mark,
        "balance_after": text(f.balance_after),
        "position_quantity_after": text(f.position_quantity_after),
        "position_avg_price_after": text(f.position_avg_price_after),
        "realized_pnl_gross": text(f.realized_pnl_gross),
        "opened_at": f.opened_at.isoformat(),
        "position_id": position_id,
    }
    return {PREFIX + name: value for name, value in values.items()}

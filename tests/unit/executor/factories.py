"""Valid approved orders for executor tests (unit and integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from coinpilot.clock import iso_minute
from coinpilot.contracts import (
    EntrySignal,
    ExitReason,
    ExitSignal,
    IndicatorSnapshot,
    MinuteCandle,
    OrderApproved,
    Regime,
    RejectStage,
    Side,
)
from services.executor.core import FillOutcome, FillParams, Ledger, Rejection, fill_order

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def snapshot(symbol: str, ts_event: datetime, close: Decimal, regime: Regime) -> IndicatorSnapshot:
    candle = MinuteCandle(
        symbol=symbol,
        ts_open=ts_event - timedelta(minutes=1),
        ts_event=ts_event,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=Decimal("1.5"),
    )
    return IndicatorSnapshot(
        symbol=symbol,
        ts_event=ts_event,
        candle=candle,
        regime=regime,
        rsi_14=38.5,
        rsi_7=44.0,
        ma_20=float(close),
        vol_ratio=1.2,
        bars_seen=200,
    )


def buy_order(
    price: str,
    amount: str,
    *,
    symbol: str = "KRW-BTC",
    at: datetime = T0,
    regime: Regime = Regime.BULL,
) -> OrderApproved:
    reference = Decimal(price)
    signal = EntrySignal(
        ts_event=at,
        symbol=symbol,
        price=reference,
        regime=regime,
        snapshot=snapshot(symbol, at, reference, regime),
    )
    return OrderApproved(
        ts_event=at,
        order_id=f"{symbol}:{iso_minute(at)}:buy",
        symbol=symbol,
        side=Side.BUY,
        reference_price=reference,
        amount=Decimal(amount),
        regime=regime,
        approved_by=RejectStage.AGENT,
        signal=signal,
    )


def sell_order(
    price: str,
    *,
    opened_by: str,
    quantity: str,
    avg_price: str,
    high_water_mark: str,
    symbol: str = "KRW-BTC",
    at: datetime = T0 + timedelta(hours=5),
    opened_at: datetime = T0,
    exit_reason: ExitReason = ExitReason.TAKE_PROFIT,
    entry_regime: Regime = Regime.BULL,
    regime: Regime = Regime.SIDEWAYS,
) -> OrderApproved:
    reference = Decimal(price)
    signal = ExitSignal(
        ts_event=at,
        symbol=symbol,
        price=reference,
        exit_reason=exit_reason,
        entry_regime=entry_regime,
        regime=regime,
        avg_price=Decimal(avg_price),
        quantity=Decimal(quantity),
        high_water_mark=Decimal(high_water_mark),
        opened_at=opened_at,
        position_id=opened_by,
        snapshot=snapshot(symbol, at, reference, regime),
    )
    return OrderApproved(
        ts_event=at,
        order_id=f"{symbol}:{iso_minute(at)}:sell",
        symbol=symbol,
        side=Side.SELL,
        reference_price=reference,
        quantity=Decimal(quantity),
        regime=regime,
        approved_by=RejectStage.RISK,
        signal=signal,
    )


def paper_fill(ledger: Ledger, order: OrderApproved, params: FillParams) -> FillOutcome | Rejection:
    """The paper executor quoting the close of the order's decision minute, as recorded."""
    return fill_order(ledger, order, params, order.signal.snapshot.candle.close)

"""The executor's start-up rehearsal: every statement of an order, on a throwaway run, rolled back.

Why: the first order of a fresh process took 12-14 ms where the next took 4-5 (whole-day bench),
the first order on a new connection 6-9 ms where a warm one takes under 2 (in process): each
statement's first parse and plan, the backend's catalog lookups, asyncpg's statement cache and the
first run of the Python path. Booking a BUY, its SELL, a rejection and a stored answer at start-up
(``booking.book_order``, the consumer's own path) in a transaction that is rolled back pays that
before the first real order. Nothing is kept and no metric moves.

The orders are genuine in that transaction: their approvals (``order_proposals``), the agent's
CONFIRM and the candles they are quoted from (``market_data``, in 2000) are written first, and
rolled back with the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import asyncpg

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
from coinpilot.db import Database, rehearsal_run_id
from services.executor.booking import Booked, book_order
from services.executor.core import Position, decision_minute
from services.executor.state import PgExecutorTx
from services.executor.venue import PaperVenue

SYMBOL = "KRW-BTC"
PRICE = Decimal(100_000_000)
OPENED_AT = datetime(2000, 1, 3, tzinfo=UTC)

_APPROVE = """
INSERT INTO order_proposals
    (run_id, order_id, symbol, side, amount, reference_price, needs_confirmation, ts_event)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_CONFIRM = """
INSERT INTO agent_decisions (run_id, order_id, symbol, decision, ts_event)
VALUES ($1, $2, $3, 'CONFIRM', $4)
"""
_CANDLE = """
INSERT INTO market_data
    (symbol, interval, open_price, high_price, low_price, close_price, volume, timestamp)
VALUES ($1, '1m', $2, $2, $2, $2, 1, $3)
ON CONFLICT (symbol, interval, timestamp) DO NOTHING
"""


def _snapshot(at: datetime) -> IndicatorSnapshot:
    candle = MinuteCandle(
        symbol=SYMBOL,
        ts_open=at - timedelta(minutes=1),
        ts_event=at,
        open=PRICE,
        high=PRICE,
        low=PRICE,
        close=PRICE,
        volume=Decimal(1),
    )
    return IndicatorSnapshot(symbol=SYMBOL, ts_event=at, candle=candle, regime=Regime.BULL, bars_seen=1)


def buy(amount: Decimal) -> OrderApproved:
    signal = EntrySignal(
        ts_event=OPENED_AT, symbol=SYMBOL, price=PRICE, regime=Regime.BULL, snapshot=_snapshot(OPENED_AT)
    )
    return OrderApproved(
        ts_event=OPENED_AT,
        order_id="rehearsal:buy",
        symbol=SYMBOL,
        side=Side.BUY,
        reference_price=PRICE,
        amount=amount,
        regime=Regime.BULL,
        approved_by=RejectStage.AGENT,
        signal=signal,
    )


def sell(position: Position) -> OrderApproved:
    at = position.opened_at + timedelta(hours=1)
    signal = ExitSignal(
        ts_event=at,
        symbol=SYMBOL,
        price=PRICE,
        exit_reason=ExitReason.TIME_LIMIT,
        entry_regime=position.regime,
        regime=Regime.BULL,
        avg_price=position.avg_price,
        quantity=position.quantity,
        high_water_mark=position.high_water_mark,
        opened_at=position.opened_at,
        position_id=position.opened_by,
        snapshot=_snapshot(at),
    )
    return OrderApproved(
        ts_event=at,
        order_id="rehearsal:sell",
        symbol=SYMBOL,
        side=Side.SELL,
        reference_price=PRICE,
        quantity=position.quantity,
        regime=Regime.BULL,
        approved_by=RejectStage.RISK,
        signal=signal,
    )


async def approve(conn: asyncpg.Connection, run_id: str, order: OrderApproved) -> None:
    """What risk, the agent and the recorder write before a genuine order reaches the executor."""
    is_buy = order.side is Side.BUY
    await conn.execute(
        _APPROVE,
        run_id,
        order.order_id,
        order.symbol,
        str(order.side),
        order.amount,
        order.reference_price,
        is_buy,
        order.ts_event,
    )
    if is_buy:
        await conn.execute(_CONFIRM, run_id, order.order_id, order.symbol, order.ts_event)
    await conn.execute(_CANDLE, order.symbol, order.reference_price, decision_minute(order))


async def rehearse_orders(db: Database, venue: PaperVenue, initial_balance: Decimal) -> None:
    """Through ``book_order`` for a throwaway run, in one transaction rolled back: a BUY, its SELL,
    the SELL again with nothing left to sell (a rejection) and the BUY again (its stored answer)."""
    run_id = rehearsal_run_id()
    order = buy(initial_balance / 10)
    async with db.rolled_back() as conn:
        book = partial(
            book_order,
            PgExecutorTx(conn),
            venue,
            run_id=run_id,
            trace_id=None,
            initial_balance=initial_balance,
        )
        await approve(conn, run_id, order)
        bought = await book(order)
        if not isinstance(bought, Booked) or bought.outcome.ledger.position is None:
            raise RuntimeError(f"the rehearsal's BUY was not filled: {bought}")
        exit_order = sell(bought.outcome.ledger.position)
        again = exit_order.model_copy(update={"order_id": "rehearsal:sell-again"})
        for o in (exit_order, again):
            await approve(conn, run_id, o)
        for o in (exit_order, again, order):
            await book(o)

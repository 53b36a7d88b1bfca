"""The executor's only SQL: the ledger of one order, loaded and saved in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.clock import ensure_utc
from coinpilot.contracts import Fill, OrderApproved, OrderRejected, Regime, RejectReason, RejectStage
from coinpilot.db import AccountState, InboxEntry, TradingHistory, claim
from coinpilot.db import Position as PositionRow
from coinpilot.symbols import quote_currency
from services.executor import records
from services.executor.core import Ledger, Position, Rejection

CONSUMER = "executor-orders"
REJECTED_MARK = "|rejected:"


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What an already-handled order was answered with: its fill, or its rejection."""

    message: Fill | OrderRejected


async def lock_ledger(session: AsyncSession, run_id: str, symbol: str, initial_balance: Decimal) -> Ledger:
    """Lock the account row (creating it on first use) and read the symbol's position.

    Every order of the account waits here for the one before it, so a duplicate delivered
    concurrently finds the first one's committed row once it gets the lock.
    """
    currency = quote_currency(symbol)
    await session.execute(
        insert(AccountState)
        .values(run_id=run_id, currency=currency, balance=initial_balance, initial_balance=initial_balance)
        .on_conflict_do_nothing(index_elements=["run_id", "currency"])
    )
    balance = (
        await session.execute(
            select(AccountState.balance)
            .where(AccountState.run_id == run_id, AccountState.currency == currency)
            .with_for_update()
        )
    ).scalar_one()
    row = (
        await session.execute(
            select(PositionRow).where(PositionRow.run_id == run_id, PositionRow.symbol == symbol)
        )
    ).scalar_one_or_none()
    position = None
    if row is not None:
        position = Position(
            symbol=row.symbol,
            quantity=row.quantity,
            avg_price=row.avg_price,
            regime=Regime(row.regime or Regime.UNKNOWN),
            high_water_mark=row.high_water_mark if row.high_water_mark is not None else row.avg_price,
            opened_at=ensure_utc(row.opened_at),
            opened_by=row.position_id,
        )
    return Ledger(currency, balance, position)


def _rejection_key(order: OrderApproved, reason: RejectReason) -> str:
    return f"{order.msg_id()}{REJECTED_MARK}{reason}"


async def stored_answer(session: AsyncSession, run_id: str, order: OrderApproved) -> StoredAnswer | None:
    """The answer given to this order before, if any (call after ``lock_ledger``)."""
    row = (
        (
            await session.execute(
                select(TradingHistory.__table__).where(
                    TradingHistory.run_id == run_id, TradingHistory.order_id == order.order_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is not None:
        return StoredAnswer(records.fill_from_row(row))
    key = (
        await session.execute(
            select(InboxEntry.msg_id).where(
                InboxEntry.run_id == run_id,
                InboxEntry.consumer == CONSUMER,
                InboxEntry.msg_id.startswith(order.msg_id() + REJECTED_MARK, autoescape=True),
            )
        )
    ).scalar_one_or_none()
    if key is None:
        return None
    reason = RejectReason(key.rpartition(REJECTED_MARK)[2])
    return StoredAnswer(
        OrderRejected(
            ts_event=order.ts_event,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            stage=RejectStage.EXECUTOR,
            reason=reason,
            message=f"already rejected: {reason}",
        )
    )


async def save_fill(
    session: AsyncSession, run_id: str, order: OrderApproved, fill: Fill, after: Ledger, trace_id: str | None
) -> None:
    """Cash, position and the trading_history row of one fill (same transaction as the lock)."""
    now = fill.ts_event
    await session.execute(
        AccountState.__table__.update()
        .where(AccountState.run_id == run_id, AccountState.currency == after.currency)
        .values(balance=after.balance, updated_at=now)
    )
    position = after.position
    if position is None:
        await session.execute(
            delete(PositionRow).where(PositionRow.run_id == run_id, PositionRow.symbol == fill.symbol)
        )
    else:
        values = {
            "quantity": position.quantity,
            "avg_price": position.avg_price,
            "regime": str(position.regime),
            "high_water_mark": position.high_water_mark,
            "updated_at": now,
        }
        await session.execute(
            insert(PositionRow)
            .values(
                run_id=run_id,
                symbol=fill.symbol,
                opened_at=position.opened_at,
                position_id=position.opened_by or fill.order_id,
                currency=after.currency,
                **values,
            )
            .on_conflict_do_update(index_elements=["run_id", "symbol"], set_=values)
        )
    await session.execute(insert(TradingHistory).values(**records.row_values(order, fill, run_id, trace_id)))


async def save_rejection(session: AsyncSession, run_id: str, rejection: Rejection) -> None:
    """Remember the answer, so a redelivery gets the same rejection and never a late fill."""
    await claim(session, CONSUMER, _rejection_key(rejection.order, rejection.reason), run_id)


async def open_positions(session: AsyncSession, run_id: str) -> int:
    return (
        await session.execute(
            select(func.count()).select_from(PositionRow).where(PositionRow.run_id == run_id)
        )
    ).scalar_one()


async def krw_equity(session: AsyncSession, run_id: str) -> Decimal | None:
    """KRW cash plus KRW positions at their average price (the executor knows no later price)."""
    cash = (
        await session.execute(
            select(AccountState.balance).where(AccountState.run_id == run_id, AccountState.currency == "KRW")
        )
    ).scalar_one_or_none()
    if cash is None:
        return None
    held = (
        await session.execute(
            select(func.coalesce(func.sum(PositionRow.quantity * PositionRow.avg_price), 0)).where(
                PositionRow.run_id == run_id, PositionRow.currency == "KRW"
            )
        )
    ).scalar_one()
    return cash + Decimal(held)

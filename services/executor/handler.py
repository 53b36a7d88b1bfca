"""The executor's handler, written once: the service runs it on PostgreSQL (``app.py``), the
backtest on memory (``memory_book``). Imports no store client, so the backtest loads none."""

from __future__ import annotations

from decimal import Decimal

from coinpilot.contracts import Fill, OrderApproved, OrderRejected
from services.executor import core, metrics
from services.executor.booking import ExecutorBook, book_order
from services.executor.ledger import StoredAnswer
from services.executor.provenance import Refusal
from services.executor.venue import FillVenue


async def execute(
    book: ExecutorBook,
    venue: FillVenue,
    order: OrderApproved,
    *,
    run_id: str,
    trace_id: str | None,
    initial_balance: Decimal,
) -> Fill | OrderRejected:
    """Fill or reject one order in one transaction; a handled order gets its stored answer again.
    The executor's handler, written once: the service runs it on PostgreSQL, the backtest on memory.

    Raises ``RefusedMessage`` (nothing written) for an order risk did not record as approved, or
    not as it stands: the ladder dead-letters it and publishes its CRITICAL alert, and no
    ``orders.rejected`` tells strategy and risk to free the symbol (see ``provenance``).
    """
    async with book.transaction() as tx:
        booking = await book_order(
            tx, venue, order, run_id=run_id, trace_id=trace_id, initial_balance=initial_balance
        )
        if isinstance(booking, Refusal):
            metrics.REFUSALS.labels(order.symbol, booking.rule).inc()
            raise booking.error()  # inside: rolled back, not even the account a first order opens
    if isinstance(booking, StoredAnswer):
        metrics.REPLAYED_FILLS.labels(order.symbol).inc()
        return booking.message
    if isinstance(booking, core.Rejection):
        metrics.REJECTIONS.labels(order.symbol, booking.reason).inc()
        return booking.message_out()
    fill, gauges = booking.outcome.fill, booking.gauges
    metrics.FILLS.labels(fill.symbol, fill.side).inc()
    metrics.TRADE_COUNT.inc()
    metrics.FEES.labels(fill.currency).inc(float(fill.fee))
    metrics.ACTIVE_POSITIONS.set(gauges.open_positions)
    if gauges.krw_equity is not None:
        metrics.EQUITY_KRW.set(float(gauges.krw_equity))
    return fill

"""Composition root of the executor: settings, venue, and the one consumer."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from coinpilot.contracts import Contract, Fill, OrderApproved, OrderRejected
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.executor import core, metrics, rehearsal, state
from services.executor.booking import ExecutorBook, book_order
from services.executor.provenance import Refusal
from services.executor.settings import ExecutorSettings
from services.executor.venue import FillVenue, PaperVenue

SUBJECT = "orders.approved.*"
DURABLE = "executor-orders"


async def execute_order(
    db: Database,
    venue: FillVenue,
    order: OrderApproved,
    *,
    run_id: str,
    trace_id: str | None,
    initial_balance: Decimal,
) -> Fill | OrderRejected:
    """:func:`execute` on the PostgreSQL ledger."""
    return await execute(
        state.pg_executor_book(db),
        venue,
        order,
        run_id=run_id,
        trace_id=trace_id,
        initial_balance=initial_balance,
    )


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
    if isinstance(booking, state.StoredAnswer):
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


def build(rt: Runtime) -> ServiceDefinition:
    if rt.db is None:
        raise ConfigError("the executor needs PostgreSQL (COINPILOT_DATABASE_URL)")
    db = rt.db
    settings = ExecutorSettings()
    venue = PaperVenue(settings.params())

    async def on_order(d: Delivery[OrderApproved]) -> Sequence[Contract]:
        answer = await execute_order(
            db,
            venue,
            d.message,
            run_id=d.run_id,
            trace_id=d.trace_id,
            initial_balance=settings.initial_balance,
        )
        if isinstance(answer, OrderRejected):
            rt.log.warning("order %s rejected: %s %s", answer.order_id, answer.reason, answer.message)
        return [answer]

    async def rehearse(rt: Runtime) -> None:
        """Warm the order path before the first order (see ``rehearsal``); a failure only costs that."""
        try:
            await rehearsal.rehearse_orders(db, venue, settings.initial_balance)
        except Exception as exc:
            rt.log.warning("order rehearsal failed, the first order pays the warm-up: %r", exc)

    return ServiceDefinition(
        name="executor",
        consumers=[
            Consumer(subject=SUBJECT, durable=DURABLE, handler=on_order, parse=parser_for(OrderApproved))
        ],
        on_start=rehearse,
    )

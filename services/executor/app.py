"""Composition root of the executor: settings, venue, and the one consumer."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from coinpilot.contracts import Contract, Fill, OrderApproved, OrderRejected
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.executor import core, metrics, rehearsal, state
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
    """Fill or refuse one order in one transaction; a handled order gets its stored answer again."""
    async with db.transaction() as conn:
        locked = await state.lock_ledger(conn, run_id, order, initial_balance)
        if locked.stored is not None:
            metrics.REPLAYED_FILLS.labels(order.symbol).inc()
            return locked.stored.message
        ledger = locked.ledger
        execution = await venue.execute(order, ledger)
        outcome = (
            execution
            if isinstance(execution, core.Rejection)
            else core.apply_execution(ledger, order, execution)
        )
        if isinstance(outcome, core.Rejection):
            await state.save_rejection(conn, run_id, outcome)
        else:
            gauges = await state.save_fill(conn, run_id, order, outcome.fill, outcome.ledger, trace_id)
    if isinstance(outcome, core.Rejection):
        metrics.REJECTIONS.labels(order.symbol, outcome.reason).inc()
        return outcome.message_out()
    fill = outcome.fill
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

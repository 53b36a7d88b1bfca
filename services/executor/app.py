"""Composition root of the executor: settings, venue, and the one consumer."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from coinpilot.contracts import Contract, Fill, OrderApproved, OrderRejected
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.executor import rehearsal, state
from services.executor.handler import execute
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

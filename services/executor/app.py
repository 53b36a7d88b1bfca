"""Composition root of the executor: settings, venue, and the one consumer."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import httpx

from coinpilot.contracts import Contract, Fill, OrderApproved, OrderRejected, RiskAlert
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.executor import rehearsal, state
from services.executor.handler import execute
from services.executor.live.checks import Caps
from services.executor.live.venue import LiveParams, UpbitVenue
from services.executor.settings import ExecutorSettings
from services.executor.upbit import Credentials, UpbitClient
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
    paper = PaperVenue(settings.params())
    venue: FillVenue = paper
    client: UpbitClient | None = None
    if settings.venue == "upbit":
        access, secret = settings.require_live()  # ConfigError: the process does not start

        async def publish_alert(alert: RiskAlert, run_id: str) -> None:
            await rt.bus.publish(alert, run_id=run_id)

        client = UpbitClient(
            Credentials(access, secret),
            base_url=settings.upbit_base_url,
            timeout=httpx.Timeout(settings.upbit_timeout_seconds, connect=5.0),
        )
        venue = UpbitVenue(
            db,
            client,
            LiveParams(
                caps=Caps(per_order=settings.max_order_krw, per_day=settings.max_daily_krw),
                poll_interval=settings.poll_interval_seconds,
                poll_attempts=settings.poll_attempts,
                not_found_grace=settings.not_found_grace(),
            ),
            alerts=publish_alert,
        )
        rt.log.warning(
            "LIVE TRADING on Upbit (%s): caps %s per order, %s per day",
            settings.upbit_base_url,
            settings.max_order_krw,
            settings.max_daily_krw,
        )

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
            # always the paper venue: a rehearsal must never send an order to an exchange
            await rehearsal.rehearse_orders(db, paper, settings.initial_balance)
        except Exception as exc:
            rt.log.warning("order rehearsal failed, the first order pays the warm-up: %r", exc)

    async def close_client(rt: Runtime) -> None:
        if client is not None:
            await client.aclose()

    return ServiceDefinition(
        name="executor",
        consumers=[
            Consumer(subject=SUBJECT, durable=DURABLE, handler=on_order, parse=parser_for(OrderApproved))
        ],
        on_start=rehearse,
        on_stop=close_client,
    )

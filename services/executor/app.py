"""Composition root of the executor: settings, venue, and the one consumer."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import httpx

from coinpilot.contracts import Contract, Fill, OrderApproved, OrderRejected, RiskAlert
from coinpilot.db import Database
from coinpilot.errors import ConfigError
from coinpilot.runtime import Consumer, Delivery, Runtime, ServiceDefinition, parser_for
from services.executor import reconcile, rehearsal, state
from services.executor.handler import execute
from services.executor.live import store
from services.executor.live.checks import Caps
from services.executor.live.venue import LiveParams, UpbitVenue
from services.executor.settings import LIVE_QUOTE, ExecutorSettings, LiveSettings, require_krw_markets
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
    live = LiveSettings()
    paper = PaperVenue(settings.params())
    venue: FillVenue = paper
    client: UpbitClient | None = None
    reconcile_settings = reconcile.ReconcileSettings()
    if live.venue == "upbit":
        client, venue = upbit_venue(rt, db, live, settings.price_band)

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

    async def start(rt: Runtime) -> None:
        """Warm the order path before the first order (see ``rehearsal``; a failure only costs
        that); live, reconcile the ledger with the exchange once before it (guarded)."""
        try:
            # always the paper venue: a rehearsal must never send an order to an exchange
            await rehearsal.rehearse_orders(db, paper, settings.initial_balance)
        except Exception as exc:
            rt.log.warning("order rehearsal failed, the first order pays the warm-up: %r", exc)
        if client is not None:
            # the ledger's KRW account opens with INITIAL_BALANCE (live: the account's KRW) before
            # the first reconciliation, not at the first order, so the two can be compared at once
            async with db.transaction() as conn:
                await state.lock_account(conn, rt.settings.run_id, LIVE_QUOTE, settings.initial_balance)
            await reconcile.periodic(
                db,
                client,
                rt.bus,
                reconcile_settings,
                run_id=rt.settings.run_id,
                rounds=1,
                defer=in_flight,
                symbols=rt.settings.symbols,
            )

    async def in_flight() -> str | None:
        count = await store.unsettled(db, rt.settings.run_id)
        return f"{count} live order(s) not settled in the ledger yet" if count else None

    async def reconcile_periodically(rt: Runtime) -> None:
        assert client is not None
        await reconcile.periodic(
            db,
            client,
            rt.bus,
            reconcile_settings,
            run_id=rt.settings.run_id,
            start_now=False,
            defer=in_flight,
            symbols=rt.settings.symbols,
        )

    async def close_client(rt: Runtime) -> None:
        if client is not None:
            await client.aclose()

    return ServiceDefinition(
        name="executor",
        consumers=[
            Consumer(subject=SUBJECT, durable=DURABLE, handler=on_order, parse=parser_for(OrderApproved))
        ],
        on_start=start,
        tasks=[reconcile_periodically] if client is not None else [],
        on_stop=close_client,
    )


def upbit_venue(
    rt: Runtime, db: Database, live: LiveSettings, price_band: Decimal
) -> tuple[UpbitClient, UpbitVenue]:
    """The live venue and its client; ``ConfigError`` (the process does not start) unless live
    trading is explicitly enabled with both keys and every configured symbol is a KRW market.
    ``price_band`` is the paper venue's ``PRICE_BAND``, checked against the book before each order."""
    access, secret = live.require_live()
    require_krw_markets(rt.settings.symbols)

    async def publish_alert(alert: RiskAlert, run_id: str) -> None:
        await rt.bus.publish(alert, run_id=run_id)

    client = UpbitClient(
        Credentials(access, secret),
        base_url=live.upbit_base_url,
        timeout=httpx.Timeout(live.upbit_timeout_seconds, connect=5.0),
    )
    params = LiveParams(
        caps=Caps(per_order=live.max_order_krw, per_day=live.max_daily_krw),
        poll_interval=live.poll_interval_seconds,
        poll_attempts=live.poll_attempts,
        not_found_grace=live.not_found_grace(),
        price_band=price_band,
    )
    rt.log.warning(
        "LIVE TRADING on Upbit (%s): caps %s per order, %s per day, price band %s",
        live.upbit_base_url,
        live.max_order_krw,
        live.max_daily_krw,
        price_band,
    )
    return client, UpbitVenue(db, client, params, alerts=publish_alert)

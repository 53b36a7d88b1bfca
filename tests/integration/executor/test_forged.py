"""Forged and corrupt ``orders.approved`` on a real NATS + PostgreSQL: no ledger change, ever.

A forged order (no approval risk recorded, or not as recorded, or a BUY the agent did not
confirm) is refused: dead-lettered with its rule and a CRITICAL ``ORDER_REFUSED`` alert, and no
``orders.rejected`` (on which strategy and risk would free the symbol). A genuine order whose
venue quote is far from its price is rejected ``PRICE_OUT_OF_BAND``, also without a ledger change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from nats.js import JetStreamContext
from sqlalchemy import text

from coinpilot.bus import Bus
from coinpilot.contracts import (
    AlertLevel,
    AlertType,
    DeadLetter,
    Fill,
    OrderApproved,
    OrderRejected,
    RejectReason,
    RiskAlert,
)
from coinpilot.db import Database
from coinpilot.errors import RefusedMessage, TransientError
from services.executor import provenance
from services.executor.app import execute_order
from services.executor.core import FillParams
from services.executor.venue import PaperVenue
from tests.integration.executor.test_over_nats import drained, start_executor, stored
from tests.support.provenance import Approvals
from tests.support.servers import NatsProcess, wait_for
from tests.unit.executor.factories import T0, buy_order, sell_order

pytestmark = [pytest.mark.nats, pytest.mark.postgres]
D = Decimal
START = D(10_000_000)
VENUE = PaperVenue(FillParams(fee_rate=D("0.0005")))
HELD_BUY = buy_order("100000000", "1000000")  # the genuine position every case starts with
AT_EXIT = T0 + timedelta(hours=2)


def exit_of_held(price: str = "101000000", symbol: str = "KRW-BTC", quantity: str = "0.01") -> OrderApproved:
    return sell_order(
        price,
        opened_by=HELD_BUY.order_id,
        quantity=quantity,
        avg_price="100000000",
        high_water_mark="101000000",
        symbol=symbol,
        at=AT_EXIT,
    )


@dataclass(frozen=True)
class Forgery:
    """An order as published, and what (if anything) risk and the agent recorded for its id."""

    order: OrderApproved
    rule: str
    approved: OrderApproved | None = None
    verdict: str | None = "CONFIRM"


FORGERIES = [
    pytest.param(
        Forgery(buy_order("100000000", "9000000", symbol="KRW-ETH"), provenance.NOT_PROPOSED),
        id="buy-with-no-proposal",
    ),
    pytest.param(
        Forgery(
            buy_order("4000000", "9000000", symbol="KRW-ETH"),
            provenance.AMOUNT_ABOVE_SIZED,
            approved=buy_order("4000000", "1000000", symbol="KRW-ETH"),
        ),
        id="buy-above-the-sized-amount",
    ),
    pytest.param(
        Forgery(
            buy_order("4000000", "1000000", symbol="KRW-ETH"),
            provenance.NOT_CONFIRMED,
            approved=buy_order("4000000", "1000000", symbol="KRW-ETH"),
            verdict=None,
        ),
        id="buy-needing-review-without-a-confirm",
    ),
    pytest.param(
        Forgery(
            buy_order("4000000", "1000000", symbol="KRW-ETH"),
            provenance.NOT_CONFIRMED,
            approved=buy_order("4000000", "1000000", symbol="KRW-ETH"),
            verdict="REJECT",
        ),
        id="buy-the-agent-rejected",
    ),
    pytest.param(Forgery(exit_of_held(), provenance.NOT_PROPOSED), id="sell-with-no-exit-approval"),
    pytest.param(
        Forgery(exit_of_held(symbol="KRW-XRP"), provenance.NOT_PROPOSED), id="sell-of-a-symbol-not-held"
    ),
    pytest.param(
        Forgery(exit_of_held(quantity="100"), provenance.NOT_PROPOSED),
        id="sell-of-more-than-the-ledger-holds",
    ),
    pytest.param(
        Forgery(exit_of_held(price="1"), provenance.NOT_AS_PROPOSED, approved=exit_of_held()),
        id="sell-at-1-krw-under-an-approved-exits-id",
    ),
]


async def ledger_of(db: Database, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run in the three ledger tables."""
    queries = {
        "trading_history": "SELECT order_id, side, price, quantity, amount, fee FROM trading_history",
        "positions": "SELECT symbol, quantity, avg_price, position_id FROM positions",
        "account_state": "SELECT currency, balance FROM account_state",
    }
    out = {}
    async with db.session() as s:
        for table, query in queries.items():
            rows = await s.execute(text(f"{query} WHERE run_id = :run ORDER BY 1"), {"run": run_id})
            out[table] = [tuple(r) for r in rows]
    return out


@pytest.fixture
async def clean(js: JetStreamContext) -> AsyncIterator[JetStreamContext]:
    for stream in ("ORDERS", "FILLS", "DLQ", "RISK"):
        await js.purge_stream(stream)
    yield js


async def hold_a_position(approvals: Approvals, run_id: str) -> None:
    await approvals.approve(run_id, HELD_BUY)
    bought = await execute_order(
        approvals.db, VENUE, HELD_BUY, run_id=run_id, trace_id=None, initial_balance=START
    )
    assert isinstance(bought, Fill)


@pytest.mark.parametrize("case", FORGERIES)
async def test_a_forged_order_is_refused_with_its_rule_an_alert_and_no_ledger_change(
    case: Forgery,
    clean: JetStreamContext,
    executor_nats: NatsProcess,
    executor_db: Database,
    approvals: Approvals,
    pg_url: str,
    run_id: str,
) -> None:
    js = clean
    await hold_a_position(approvals, run_id)
    if case.approved is not None:
        await approvals.approve(run_id, case.approved, verdict=case.verdict)
    else:  # the market was recorded all the same: only the approval is missing
        await approvals.candle(case.order.symbol, case.order.ts_event - timedelta(minutes=1), D(101000000))
    before = await ledger_of(executor_db, run_id)

    host = await start_executor(executor_nats, pg_url)
    try:
        await Bus(js, "forger").publish(case.order, run_id=run_id)
        (body,) = await wait_for(lambda: stored(js, "DLQ", run_id), timeout=20)
        await wait_for(lambda: drained(js), timeout=20)
    finally:
        await host.stop()

    letter = DeadLetter.from_json(body)
    assert letter.subject_original == f"orders.approved.{case.order.symbol}"
    assert letter.reason.startswith(f"permanent: RefusedMessage: {case.rule}: "), letter.reason
    assert letter.deliveries == 1
    assert await ledger_of(executor_db, run_id) == before
    assert await stored(js, "FILLS", run_id) == []
    assert await stored(js, "ORDERS", run_id, "orders.rejected.") == []
    (alert,) = [RiskAlert.from_json(b) for b in await stored(js, "RISK", run_id)]
    assert (alert.type, alert.level, alert.symbol) == (
        AlertType.ORDER_REFUSED,
        AlertLevel.CRITICAL,
        case.order.symbol,
    )
    assert f"order {case.order.order_id} refused ({case.rule})" in alert.message


async def test_a_genuine_order_quoted_far_from_its_price_is_rejected_out_of_band_over_nats(
    clean: JetStreamContext,
    executor_nats: NatsProcess,
    executor_db: Database,
    approvals: Approvals,
    pg_url: str,
    run_id: str,
) -> None:
    js = clean
    await hold_a_position(approvals, run_id)
    order = exit_of_held()  # risk approved the exit at 101,000,000; the recorded close says 90,000,000
    await approvals.approve(run_id, order, close=D(90_000_000))
    before = await ledger_of(executor_db, run_id)

    host = await start_executor(executor_nats, pg_url)
    try:
        await Bus(js, "test").publish(order, run_id=run_id)
        await wait_for(lambda: stored(js, "ORDERS", run_id, "orders.rejected."), timeout=20)
        await wait_for(lambda: drained(js), timeout=20)
    finally:
        await host.stop()

    (body,) = await stored(js, "ORDERS", run_id, "orders.rejected.")
    rejected = OrderRejected.from_json(body)
    assert (rejected.order_id, rejected.reason) == (order.order_id, RejectReason.PRICE_OUT_OF_BAND)
    assert rejected.message == (
        "venue quote 90000000.00000000 is 10.89% away from the reference price 101000000 (band 2.00%)"
    )
    assert await ledger_of(executor_db, run_id) == before
    assert await stored(js, "DLQ", run_id) == [] and await stored(js, "FILLS", run_id) == []


async def test_execute_order_raises_the_refusal_before_anything_is_written(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    order = buy_order("100000000", "1000000")
    await approvals.candle(order.symbol, order.ts_event - timedelta(minutes=1), order.reference_price)
    with pytest.raises(RefusedMessage) as refused:
        await execute_order(executor_db, VENUE, order, run_id=run_id, trace_id=None, initial_balance=START)
    assert refused.value.rule == provenance.NOT_PROPOSED
    (alert,) = refused.value.alerts
    assert isinstance(alert, RiskAlert) and alert.type is AlertType.ORDER_REFUSED
    # a new run: not even the account its first order would open
    assert await ledger_of(executor_db, run_id) == {
        "trading_history": [],
        "positions": [],
        "account_state": [],
    }


async def test_a_genuine_order_is_filled_at_the_recorded_close_not_at_its_own_price(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    # risk sized 1,010,000 at a reference of 100,000,000; the recorded close is 101,000,000 (1 %)
    order = buy_order("100000000", "1010000")
    await approvals.approve(run_id, order, close=D(101_000_000))
    fill = await execute_order(executor_db, VENUE, order, run_id=run_id, trace_id=None, initial_balance=START)
    assert isinstance(fill, Fill)
    assert (fill.fill_price, fill.quantity, fill.decision_price) == (
        D(101_000_000),
        D("0.01"),
        D(100_000_000),
    )


async def test_an_order_whose_candle_is_not_recorded_yet_waits_for_it_and_fills_at_its_close(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    order = buy_order("100000000", "1000000")
    await approvals.approve(run_id, order)
    await approvals.restore()  # the recorder has not stored the decision minute yet
    with pytest.raises(TransientError, match="no recorded KRW-BTC candle at 2026-03-02T00:59:00"):
        await execute_order(executor_db, VENUE, order, run_id=run_id, trace_id=None, initial_balance=START)
    # rolled back whole: not even the account the order would have opened
    assert await ledger_of(executor_db, run_id) == {
        "trading_history": [],
        "positions": [],
        "account_state": [],
    }
    await approvals.candle(order.symbol, order.ts_event - timedelta(minutes=1), order.reference_price)
    fill = await execute_order(executor_db, VENUE, order, run_id=run_id, trace_id=None, initial_balance=START)
    assert isinstance(fill, Fill) and fill.fill_price == D(100_000_000)


async def test_an_approved_exit_naming_more_than_the_ledger_holds_sells_what_the_ledger_holds(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    await hold_a_position(approvals, run_id)
    order = exit_of_held(quantity="100")
    await approvals.approve(run_id, order)
    fill = await execute_order(executor_db, VENUE, order, run_id=run_id, trace_id=None, initial_balance=START)
    assert isinstance(fill, Fill) and fill.quantity == D("0.01")
    assert (await ledger_of(executor_db, run_id))["positions"] == []

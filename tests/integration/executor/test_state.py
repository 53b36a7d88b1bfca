"""The executor's plain SQL on real PostgreSQL: the lock, the stored answers, the booked fill, the gauges."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from coinpilot.contracts import Fill, OrderApproved, OrderRejected, RejectReason
from coinpilot.db import AccountState, Database, Position
from services.executor import metrics
from services.executor.app import execute_order
from services.executor.core import FillParams
from services.executor.venue import PaperVenue
from tests.support.provenance import Approvals
from tests.unit.executor.factories import T0, buy_order, sell_order

pytestmark = pytest.mark.postgres

D = Decimal
START = D("10000000")
VENUE = PaperVenue(FillParams(fee_rate=D("0.0005"), slippage_bps=D(10)))


async def run(approvals: Approvals, order: OrderApproved, run_id: str) -> Fill | OrderRejected:
    """A genuine order: approved by risk and the agent, quoted at its decision close, executed."""
    await approvals.approve(run_id, order)
    return await execute_order(
        approvals.db, VENUE, order, run_id=run_id, trace_id="trace-1", initial_balance=START
    )


def sell_of(buy: OrderApproved, price: str, minutes: int) -> OrderApproved:
    return sell_order(
        price,
        opened_by=buy.order_id,
        quantity="1",
        avg_price="1",
        high_water_mark=price,
        symbol=buy.symbol,
        at=buy.ts_event + timedelta(minutes=minutes),
        opened_at=buy.ts_event,
    )


async def balance_of(db: Database, run_id: str) -> Decimal:
    async with db.session() as s:
        account = (AccountState.run_id == run_id) & (AccountState.currency == "KRW")
        query = select(AccountState.balance).where(account)
        return (await s.execute(query)).scalar_one()


async def gauges_from_the_tables(db: Database, run_id: str) -> tuple[int, float | None]:
    """What the two gauges must show, computed by plain ORM queries over the committed tables."""
    async with db.session() as s:
        count = (
            await s.execute(select(func.count()).select_from(Position).where(Position.run_id == run_id))
        ).scalar_one()
        cash = (
            await s.execute(
                select(AccountState.balance).where(
                    AccountState.run_id == run_id, AccountState.currency == "KRW"
                )
            )
        ).scalar_one_or_none()
        held = (
            await s.execute(
                select(func.coalesce(func.sum(Position.quantity * Position.avg_price), 0)).where(
                    Position.run_id == run_id, Position.currency == "KRW"
                )
            )
        ).scalar_one()
    return count, None if cash is None else float(cash + D(held))


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_the_gauges_after_each_fill_are_the_whole_runs_positions_and_krw_equity(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    usdt = buy_order("60000", "100", symbol="USDT-BTC")
    btc = buy_order("100000000", "1000000", at=T0 + timedelta(minutes=1))
    eth = buy_order("4000000", "500000", symbol="KRW-ETH", at=T0 + timedelta(minutes=2))
    orders = [
        usdt,
        btc,
        eth,
        sell_of(btc, "103000000", 10),
        sell_of(usdt, "61000", 11),
        sell_of(eth, "3900000", 12),
    ]
    metrics.EQUITY_KRW.set(-1)
    for n, order in enumerate(orders):
        assert isinstance(await run(approvals, order, run_id), Fill)
        positions, equity = await gauges_from_the_tables(executor_db, run_id)
        assert gauge("coinpilot_active_positions") == positions
        if n == 0:  # only a USDT account so far: no KRW equity to show, the gauge is left alone
            assert equity is None and gauge("coinpilot_equity_krw") == -1
        else:
            assert gauge("coinpilot_equity_krw") == equity
    assert positions == 0  # everything sold: the equity is the KRW cash alone
    assert equity == float((await run(approvals, orders[-1], run_id)).balance_after)


async def test_a_second_buy_for_a_held_symbol_is_refused_and_the_position_keeps_its_opening(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    first = buy_order("100000000", "1000000")
    second = buy_order("110000000", "1000000", at=T0 + timedelta(minutes=11))
    one = await run(approvals, first, run_id)
    balance = await balance_of(executor_db, run_id)
    two = await run(approvals, second, run_id)
    assert isinstance(one, Fill) and isinstance(two, OrderRejected)
    assert two.reason is RejectReason.DUPLICATE_POSITION and two.order_id == second.order_id
    async with executor_db.session() as s:
        row = (
            await s.execute(select(Position).where(Position.run_id == run_id, Position.symbol == "KRW-BTC"))
        ).scalar_one()
    assert (row.quantity, row.avg_price, row.position_id) == (one.quantity, one.fill_price, first.order_id)
    assert await balance_of(executor_db, run_id) == balance  # nothing booked
    again = await run(approvals, second, run_id)  # a redelivery gets the stored answer
    assert isinstance(again, OrderRejected) and again.message == "already rejected: DUPLICATE_POSITION"
    closed = await run(approvals, sell_of(first, "120000000", 10), run_id)
    assert isinstance(closed, Fill) and closed.quantity == one.quantity
    assert (await gauges_from_the_tables(executor_db, run_id))[0] == 0


@pytest.mark.parametrize(("rejected_id", "new_id"), [("ord-1", "ord_1"), ("ord-1-x", "ord%")])
async def test_like_wildcards_in_an_order_id_never_find_another_orders_rejection(
    executor_db: Database, approvals: Approvals, run_id: str, rejected_id: str, new_id: str
) -> None:
    # the stored rejection key starts with "order:approved:<rejected_id>|rejected:"; an unescaped
    # pattern for <new_id> ("_" any character, "%" anything) would match it
    nothing_to_sell = sell_of(buy_order("1", "1"), "100", 5).model_copy(update={"order_id": rejected_id})
    assert (await run(approvals, nothing_to_sell, run_id)).reason is RejectReason.NO_POSITION
    fresh = buy_order("100000000", "1000000").model_copy(update={"order_id": new_id})
    assert isinstance(await run(approvals, fresh, run_id), Fill)
    again = await run(approvals, nothing_to_sell, run_id)
    assert isinstance(again, OrderRejected) and again.message == "already rejected: NO_POSITION"


async def test_the_first_orders_of_a_new_account_delivered_concurrently_open_it_once(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    symbols = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL")
    orders = [
        buy_order("50000", "100000", symbol=s, at=T0 + timedelta(minutes=i)) for i, s in enumerate(symbols)
    ]
    fills = await asyncio.gather(*(run(approvals, o, run_id) for o in orders))
    assert all(isinstance(f, Fill) for f in fills)
    async with executor_db.session() as s:
        accounts = (
            (await s.execute(select(AccountState).where(AccountState.run_id == run_id))).scalars().all()
        )
    assert [(a.currency, a.initial_balance) for a in accounts] == [("KRW", START)]
    assert accounts[0].balance == START - sum(f.amount + f.fee for f in fills)
    assert sorted(f.balance_after for f in fills)[0] == accounts[0].balance  # each saw the one before


async def test_a_rejected_order_delivered_concurrently_is_rejected_once_and_then_answered_from_the_inbox(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    # the answer is read after the lock, so a delivery that waited sees the first one's claim
    order = sell_of(buy_order("100000000", "1000000"), "103000000", 5)
    answers = await asyncio.gather(*(run(approvals, order, run_id) for _ in range(5)))
    assert all(isinstance(a, OrderRejected) and a.reason is RejectReason.NO_POSITION for a in answers)
    messages = sorted(a.message for a in answers)
    assert messages == ["already rejected: NO_POSITION"] * 4 + ["no KRW-BTC position to sell"]

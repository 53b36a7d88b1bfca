"""The paper ledger on real PostgreSQL: exact arithmetic, one fill per order, stored answers."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from coinpilot.contracts import ExitReason, Fill, OrderRejected, RejectReason
from coinpilot.db import AccountState, Database, Position, TradingHistory
from services.executor.app import execute_order
from services.executor.core import FillParams
from services.executor.venue import PaperVenue
from tests.support.provenance import Approvals
from tests.unit.executor.factories import T0, buy_order, sell_order

pytestmark = pytest.mark.postgres

D = Decimal
START = D("10000000")
UPBIT_10BPS = PaperVenue(FillParams(fee_rate=D("0.0005"), slippage_bps=D(10)))
BTC_BUY = "KRW-BTC:2026-03-02T01:00Z:buy"
ETH_BUY = "KRW-ETH:2026-03-02T01:05Z:buy"


async def run(
    approvals: Approvals, order, run_id: str, venue: PaperVenue = UPBIT_10BPS
) -> Fill | OrderRejected:
    """A genuine order: approved by risk and the agent, quoted at its decision close, executed."""
    await approvals.approve(run_id, order)
    return await execute_order(
        approvals.db, venue, order, run_id=run_id, trace_id="trace-1", initial_balance=START
    )


async def balance(db: Database, run_id: str, currency: str = "KRW") -> Decimal:
    async with db.session() as s:
        return (
            await s.execute(
                select(AccountState.balance).where(
                    AccountState.run_id == run_id, AccountState.currency == currency
                )
            )
        ).scalar_one()


async def trade_rows(db: Database, run_id: str) -> int:
    async with db.session() as s:
        return (
            await s.execute(
                select(func.count()).select_from(TradingHistory).where(TradingHistory.run_id == run_id)
            )
        ).scalar_one()


def btc_sell(price: str = "103000000", reason: ExitReason = ExitReason.TRAILING_STOP):
    return sell_order(
        price,
        opened_by=BTC_BUY,
        quantity="0.00999",
        avg_price="100100000",
        high_water_mark="104200000",
        exit_reason=reason,
    )


async def test_a_known_sequence_of_orders_books_to_the_last_decimal(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    # 1. BUY BTC at 100,000,000 +10 bps = 100,100,000; 1,000,000 / 100,100,000 -> 0.00999;
    #    amount 999,999; fee 499.9995; cash 10,000,000 - 1,000,498.9995 = 8,999,501.0005
    buy_btc = await run(approvals, buy_order("100000000", "1000000"), run_id)
    assert isinstance(buy_btc, Fill)
    assert (buy_btc.quantity, buy_btc.amount, buy_btc.fee) == (D("0.00999"), D("999999"), D("499.9995"))
    assert await balance(executor_db, run_id) == D("8999501.0005")

    # 2. BUY ETH at 4,000,000 +10 bps = 4,004,000; 2,000,000 / 4,004,000 = 0.4995004995.. -> 0.49950049;
    #    amount 4,004,000 x 0.49950049 = 1,999,999.96196; fee 999.99998098;
    #    cash 8,999,501.0005 - 1,999,999.96196 - 999.99998098 = 6,998,501.03855902
    eth = buy_order("4000000", "2000000", symbol="KRW-ETH", at=T0 + timedelta(minutes=5))
    buy_eth = await run(approvals, eth, run_id)
    assert isinstance(buy_eth, Fill)
    assert (buy_eth.quantity, buy_eth.amount, buy_eth.fee) == (
        D("0.49950049"),
        D("1999999.96196"),
        D("999.99998098"),
    )
    assert await balance(executor_db, run_id) == D("6998501.03855902")

    # 3. SELL BTC at 103,000,000 -10 bps = 102,897,000; amount 1,027,941.03; fee 513.970515;
    #    gross (102,897,000 - 100,100,000) x 0.00999 = 27,942.03; net 27,428.059485;
    #    cash 6,998,501.03855902 + 1,027,427.059485 = 8,025,928.09804402
    sell_btc = await run(approvals, btc_sell(), run_id)
    assert isinstance(sell_btc, Fill)
    assert (sell_btc.amount, sell_btc.fee, sell_btc.realized_pnl_gross, sell_btc.realized_pnl) == (
        D("1027941.03"),
        D("513.970515"),
        D("27942.03"),
        D("27428.059485"),
    )
    assert await balance(executor_db, run_id) == D("8025928.09804402")

    # 4. SELL ETH at 3,900,000 -10 bps = 3,896,100; amount 3,896,100 x 0.49950049 = 1,946,103.859089;
    #    fee 973.0519295445 -> up 973.05192955; gross -107,900 x 0.49950049 = -53,896.102871;
    #    net -54,869.15480055; cash 8,025,928.09804402 + 1,946,103.859089 - 973.05192955 = 9,971,058.90520347
    eth_sell = sell_order(
        "3900000",
        opened_by=ETH_BUY,
        quantity="0.49950049",
        avg_price="4004000",
        high_water_mark="4010000",
        symbol="KRW-ETH",
        exit_reason=ExitReason.STOP_LOSS,
        at=T0 + timedelta(hours=6),
    )
    sell_eth = await run(approvals, eth_sell, run_id)
    assert isinstance(sell_eth, Fill)
    assert (sell_eth.amount, sell_eth.fee, sell_eth.realized_pnl) == (
        D("1946103.859089"),
        D("973.05192955"),
        D("-54869.15480055"),
    )
    assert sell_eth.high_water_mark == D("4010000")  # the real HWM, even for STOP_LOSS
    assert await balance(executor_db, run_id) == D("9971058.90520347")
    # the whole round: cash moved by both net pnls minus both BUY fees
    assert D("9971058.90520347") - START == (
        sell_btc.realized_pnl + sell_eth.realized_pnl - buy_btc.fee - buy_eth.fee
    )

    async with executor_db.session() as s:
        assert (
            await s.execute(select(func.count()).select_from(Position).where(Position.run_id == run_id))
        ).scalar_one() == 0
        rows = (
            await s.execute(
                select(
                    TradingHistory.order_id,
                    TradingHistory.fee,
                    TradingHistory.high_water_mark,
                    TradingHistory.trace_id,
                )
                .where(TradingHistory.run_id == run_id)
                .order_by(TradingHistory.executed_at)
            )
        ).all()
    assert [(r.order_id, r.fee, r.high_water_mark, r.trace_id) for r in rows] == [
        (BTC_BUY, D("499.9995"), D("100100000"), "trace-1"),
        (ETH_BUY, D("999.99998098"), D("4004000"), "trace-1"),
        ("KRW-BTC:2026-03-02T06:00Z:sell", D("513.970515"), D("104200000"), "trace-1"),
        ("KRW-ETH:2026-03-02T07:00Z:sell", D("973.05192955"), D("4010000"), "trace-1"),
    ]


async def test_an_order_delivered_three_times_fills_once_and_answers_the_same_fill(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    order = buy_order("100000000", "1000000")
    answers = [await run(approvals, order, run_id) for _ in range(3)]
    assert answers[0].to_json() == answers[1].to_json() == answers[2].to_json()
    assert await trade_rows(executor_db, run_id) == 1
    assert await balance(executor_db, run_id) == D("8999501.0005")


async def test_the_same_order_delivered_concurrently_fills_once(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    # an existing account, so only the row lock (not the first insert) serialises the deliveries
    await run(approvals, buy_order("50000", "1000", symbol="KRW-XRP"), run_id, PaperVenue(FillParams(D(0))))
    order = buy_order("100000000", "1000000")
    answers = await asyncio.gather(*(run(approvals, order, run_id) for _ in range(6)))
    assert len({a.to_json() for a in answers}) == 1 and isinstance(answers[0], Fill)
    assert await trade_rows(executor_db, run_id) == 2
    assert await balance(executor_db, run_id) == D("8999501.0005") - D("1000")


async def test_a_fill_rebuilt_from_its_row_is_byte_identical_for_buy_and_sell(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    for order in (buy_order("100000000", "1000000"), btc_sell("96000000", ExitReason.STOP_LOSS)):
        first = await run(approvals, order, run_id)
        assert (await run(approvals, order, run_id)).to_json() == first.to_json()


async def test_insufficient_balance_is_rejected_with_a_reason_and_nothing_is_written(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    # 100,100,000 after slippage; 10,000,000 / 100,100,000 -> 0.09990009; amount 9,999,999.009;
    # fee 4,999.9995045; 10,004,999.0085045 > 10,000,000
    answer = await run(approvals, buy_order("100000000", "10000000"), run_id)
    assert isinstance(answer, OrderRejected)
    assert (answer.reason, answer.stage) == (RejectReason.INSUFFICIENT_BALANCE, "executor")
    assert answer.message == (
        "needs 10004999.00850450 KRW (amount 9999999.00900000 + fee 4999.99950450), has 10000000.00000000"
    )
    assert await trade_rows(executor_db, run_id) == 0
    assert await balance(executor_db, run_id) == START


async def test_a_rejected_order_keeps_its_rejection_even_after_cash_arrives(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    sell = btc_sell()
    assert (await run(approvals, sell, run_id)).reason is RejectReason.NO_POSITION
    await run(approvals, buy_order("100000000", "1000000"), run_id)  # now a position exists
    again = await run(approvals, sell, run_id)
    assert isinstance(again, OrderRejected) and again.reason is RejectReason.NO_POSITION
    assert await trade_rows(executor_db, run_id) == 1


async def test_accounts_follow_the_quote_currency(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    fill = await run(approvals, buy_order("60000", "1000", symbol="USDT-BTC"), run_id)
    assert isinstance(fill, Fill) and fill.currency == "USDT"
    assert await balance(executor_db, run_id, "USDT") == START - fill.amount - fill.fee
    async with executor_db.session() as s:
        krw = (
            await s.execute(
                select(AccountState).where(AccountState.run_id == run_id, AccountState.currency == "KRW")
            )
        ).scalar_one_or_none()
    assert krw is None


async def test_zero_fee_reproduces_the_original(
    executor_db: Database, approvals: Approvals, run_id: str
) -> None:
    fill = await run(
        approvals, buy_order("100000000", "1000000"), run_id, PaperVenue(FillParams(fee_rate=D(0)))
    )
    assert isinstance(fill, Fill) and fill.fee == 0
    assert await balance(executor_db, run_id) == D("9000000")

"""The executor's own handler (``handler.execute``) over its memory ledger, as the backtest runs it:
a forged order is refused with nothing written, a redelivery gets its stored answer, and the
ledger is the executor's, as over PostgreSQL (``tests/integration/executor``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coinpilot.contracts import AiVerdict, Fill, OrderApproved, OrderProposed, OrderRejected, RejectReason
from coinpilot.errors import RefusedMessage
from services.executor.core import FillParams, decision_minute
from services.executor.handler import execute
from services.executor.memory_book import MemoryExecutorBook
from services.executor.provenance import NOT_CONFIRMED, NOT_PROPOSED, Provenance, proposal_of
from services.executor.venue import PaperVenue
from tests.unit.executor.factories import buy_order, sell_order

RUN = "backtest"
START = Decimal(10_000_000)
VENUE = PaperVenue(FillParams(fee_rate=Decimal("0.0005")))


def book(approved: dict[str, Provenance], closes: dict[str, Decimal]) -> MemoryExecutorBook:
    return MemoryExecutorBook(
        provenance=lambda run_id, order_id: approved.get(order_id, Provenance()),
        close_at=lambda symbol, minute: closes.get(f"{symbol}@{minute.isoformat()}"),
    )


def quoted(order: OrderApproved, close: str) -> dict[str, Decimal]:
    return {f"{order.symbol}@{decision_minute(order).isoformat()}": Decimal(close)}


async def run(ledger: MemoryExecutorBook, order: OrderApproved) -> Fill | OrderRejected:
    return await execute(ledger, VENUE, order, run_id=RUN, trace_id=None, initial_balance=START)


async def test_a_buy_risk_approved_fills_at_the_recorded_close_and_a_redelivery_gets_the_same_fill() -> None:
    order = buy_order("100", "1000000")
    ledger = book({order.order_id: Provenance(proposal_of(order))}, quoted(order, "100.5"))
    fill = await run(ledger, order)
    assert isinstance(fill, Fill) and fill.fill_price == Decimal("100.5")
    assert ledger.balances(RUN) == {"KRW": fill.balance_after}
    assert ledger.open_positions(RUN)["KRW-BTC"].opened_by == order.order_id
    assert await run(ledger, order) == fill  # stored answer; nothing booked twice
    assert ledger.balances(RUN) == {"KRW": fill.balance_after}


async def test_a_forged_order_is_refused_and_nothing_is_written_not_even_the_account() -> None:
    order = buy_order("100", "1000000")
    ledger = book({}, quoted(order, "100"))
    with pytest.raises(RefusedMessage) as refused:
        await run(ledger, order)
    assert NOT_PROPOSED in str(refused.value)
    assert ledger.accounts == {} and ledger.fills == {} and ledger.positions == {}


def proposed(order: OrderApproved) -> OrderProposed:
    """The BUY as risk proposed it to the agent (recorded as needing the agent's CONFIRM)."""
    return OrderProposed(
        ts_event=order.ts_event,
        order_id=order.order_id,
        symbol=order.symbol,
        reference_price=order.reference_price,
        amount=order.amount,
        regime=order.regime,
        vol_multiplier=Decimal(1),
        signal=order.signal,
    )


@pytest.mark.parametrize("verdict", [AiVerdict.REJECT, None])
async def test_a_buy_the_agent_did_not_confirm_is_refused(verdict: AiVerdict | None) -> None:
    order = buy_order("100", "1000000")
    ledger = book({order.order_id: Provenance(proposal_of(proposed(order)), verdict)}, quoted(order, "100"))
    with pytest.raises(RefusedMessage, match=NOT_CONFIRMED):
        await run(ledger, order)
    confirmed = book(
        {order.order_id: Provenance(proposal_of(proposed(order)), AiVerdict.CONFIRM)}, quoted(order, "100")
    )
    assert isinstance(await run(confirmed, order), Fill)


async def test_a_sell_of_nothing_held_is_rejected_and_the_rejection_is_remembered() -> None:
    order = sell_order("110", opened_by="x", quantity="1", avg_price="100", high_water_mark="110")
    ledger = book({order.order_id: Provenance(proposal_of(order))}, quoted(order, "110"))
    rejected = await run(ledger, order)
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.NO_POSITION
    again = await run(ledger, order)
    assert isinstance(again, OrderRejected) and again.reason is RejectReason.NO_POSITION
    assert again.message == f"already rejected: {RejectReason.NO_POSITION}"

"""Risk's own handlers over its memory stores (what the backtest runs): a transaction is all or
nothing, a message is decided once, and a refused fill changes nothing, as over PostgreSQL."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.contracts import OrderProposed, Side, order_id_for
from coinpilot.errors import RefusedMessage
from coinpilot.fill_ledger import RecordedFill
from coinpilot.strategy_config import load_strategy_config
from services.risk.core import AuditEntry, LedgerRows
from services.risk.handlers import RiskHandlers
from services.risk.stores import MemoryRiskBook, MemoryRiskCache
from tests.unit.risk.factories import T0, YAML, entry, fill

RUN = "backtest"
BALANCE = Decimal(10_000_000)


def handlers(recorded: dict[str, RecordedFill] | None = None) -> RiskHandlers:
    known = recorded if recorded is not None else {}

    async def no_fit(symbol: str, closes: list[Decimal], now: object) -> VolatilityState:
        raise AssertionError("no refit in these tests")

    return RiskHandlers(
        params=YAML,
        volatility=load_strategy_config().risk_management.volatility,
        initial_balance=BALANCE,
        cache=MemoryRiskCache(),
        book=MemoryRiskBook(
            ledger=lambda run_id, currency: LedgerRows(BALANCE, [], {}),
            close_at=lambda symbol, minute: None,
            recorded_fill=lambda run_id, order_id: known.get(order_id),
        ),
        fit=no_fit,
        log=logging.getLogger("test"),
    )


async def test_an_entry_is_proposed_once_and_recorded_as_proposed() -> None:
    risk = handlers()
    signal = entry()
    first = await risk.on_signal(RUN, signal)
    proposal = next(m for m in first if isinstance(m, OrderProposed))
    assert proposal.order_id == order_id_for(signal.symbol, signal.ts_event, Side.BUY)
    book = risk.book
    assert isinstance(book, MemoryRiskBook)
    assert book.proposals[(RUN, proposal.order_id)] == proposal
    assert book.states[RUN].pending_orders == {signal.symbol: proposal.order_id}
    # a redelivery of the same signal while the BUY is pending proposes the same order again
    again = await risk.on_signal(RUN, signal)
    assert [m for m in again if isinstance(m, OrderProposed)] == [proposal]


async def test_the_days_reference_equity_is_taken_by_the_first_entry_and_kept() -> None:
    risk = handlers()
    await risk.on_signal(RUN, entry())
    cache = risk.cache
    assert await cache.reference_equity(RUN, T0.date()) == BALANCE


async def test_a_fill_the_ledger_did_not_record_is_refused_and_changes_nothing() -> None:

    risk = handlers()
    await risk.on_signal(RUN, entry())
    book = risk.book
    assert isinstance(book, MemoryRiskBook)
    before = (dict(book.states), set(book.claims))
    with pytest.raises(RefusedMessage, match="no trading_history row"):
        await risk.on_fill(RUN, fill(Side.BUY, order_id=order_id_for("KRW-BTC", T0, Side.BUY)))
    assert (dict(book.states), set(book.claims)) == before  # rolled back: not even the claim
    assert await risk.cache.prices(RUN, ["KRW-BTC"]) == {"KRW-BTC": entry().price}  # price not noted


async def test_a_raising_transaction_leaves_the_book_as_it_was() -> None:
    book = MemoryRiskBook(lambda r, c: LedgerRows(None, [], {}), lambda s, m: None, lambda r, o: None)
    audit = AuditEntry("DAILY_LIMIT", "x", "KRW-BTC", "KRW-BTC:2026-03-02T12:00Z:buy", T0)
    with pytest.raises(RuntimeError):
        async with book.transaction() as tx:
            assert await tx.claim("risk-signals", "m1", RUN)
            await tx.write_audits(RUN, [audit])
            raise RuntimeError("crash mid-handler")
    assert book.claims == set() and book.audits == []
    async with book.transaction() as tx:
        assert await tx.claim("risk-signals", "m1", RUN)
        assert not await tx.claim("risk-signals", "m1", RUN)
        await tx.write_audits(RUN, [audit, audit])
    async with book.transaction() as tx:
        assert not await tx.claim("risk-signals", "m1", RUN)
        await tx.write_audits(RUN, [audit])
    assert book.audits == [(RUN, audit)]  # unique on (run, order, violation), as risk_audit is

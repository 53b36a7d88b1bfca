"""The strategy's own handlers over its memory book (what the backtest runs): a fill the ledger did
not record is refused with nothing changed, a recorded one opens the position, and an in-memory
ledger's record of a fill is the one its PostgreSQL row gives."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from coinpilot.contracts import (
    EntrySignal,
    ExitSignal,
    OrderRejected,
    RejectReason,
    RejectStage,
    Side,
    order_id_for,
)
from coinpilot.errors import RefusedMessage
from coinpilot.fill_ledger import RecordedFill, recorded_from_fill, recorded_from_row
from services.strategy import metrics
from services.strategy.core import Position
from services.strategy.handlers import StrategyHandlers
from services.strategy.memory_book import MemoryStrategyBook, NoMirror
from tests.unit.strategy.factories import PARAMS, SYMBOL, T0, fill, row_of, snap

RUN = "backtest"


def handlers(recorded: dict[str, RecordedFill]) -> StrategyHandlers:
    book = MemoryStrategyBook(lambda run_id, order_id: recorded.get(order_id))
    return StrategyHandlers(PARAMS, book, NoMirror(), logging.getLogger("test"))


async def test_an_entry_then_its_recorded_fill_opens_the_position() -> None:
    recorded: dict[str, RecordedFill] = {}
    strategy = handlers(recorded)
    [signals] = await strategy.on_snapshots([(RUN, snap())])
    assert len(signals) == 1 and isinstance(signals[0], EntrySignal)
    book = strategy.book
    assert isinstance(book, MemoryStrategyBook)
    pending = book.state(RUN, SYMBOL).pending_order_id
    assert pending is not None
    bought = fill(Side.BUY, order_id=pending, price="1005")
    with pytest.raises(RefusedMessage, match="no trading_history row"):
        await strategy.on_fill(RUN, bought)
    assert book.state(RUN, SYMBOL).position is None and book.state(RUN, SYMBOL).pending_order_id == pending
    recorded[pending] = recorded_from_fill(bought)
    await strategy.on_fill(RUN, bought)
    position = book.state(RUN, SYMBOL).position
    assert position is not None and position.position_id == pending
    assert book.state(RUN, SYMBOL).pending_order_id is None


def test_a_memory_ledgers_record_of_a_fill_equals_its_database_rows() -> None:
    bought = fill(Side.BUY, order_id=f"{SYMBOL}:2026-03-02T12:00Z:buy", at=T0)
    assert recorded_from_fill(bought) == recorded_from_row(row_of(bought))


async def test_the_memory_book_gives_states_back_as_numeric_20_8_does() -> None:
    """What PostgreSQL's NUMERIC(20,8) gives back (28016.64000000 for 28016.64), so a run in memory
    emits the same bytes as a distributed one."""
    recorded: dict[str, RecordedFill] = {}
    strategy = handlers(recorded)
    await strategy.on_snapshots([(RUN, snap())])
    book = strategy.book
    assert isinstance(book, MemoryStrategyBook)
    pending = book.state(RUN, SYMBOL).pending_order_id
    assert pending is not None
    bought = fill(Side.BUY, order_id=pending, price="1005.5")
    recorded[pending] = recorded_from_fill(bought)
    await strategy.on_fill(RUN, bought)
    position = book.state(RUN, SYMBOL).position
    assert position is not None
    assert str(position.avg_price) == "1005.50000000" and str(position.high_water_mark).endswith(".50000000")


class HwmMirror(NoMirror):
    def __init__(self) -> None:
        self.hwm_writes: list[tuple[str, object]] = []

    async def hwm(self, run_id: str, symbol: str, position: Position | None) -> None:
        self.hwm_writes.append((symbol, position))


async def test_an_exit_refused_as_dust_closes_the_position_its_gauge_and_its_hwm_key() -> None:
    recorded: dict[str, RecordedFill] = {}
    mirror = HwmMirror()
    strategy = StrategyHandlers(
        PARAMS,
        MemoryStrategyBook(lambda run_id, order_id: recorded.get(order_id)),
        mirror,
        logging.getLogger("t"),
    )
    [[entry]] = await strategy.on_snapshots([(RUN, snap())])
    bought = fill(Side.BUY, order_id=order_id_for(SYMBOL, entry.ts_event, Side.BUY), price="1005")
    recorded[bought.order_id] = recorded_from_fill(bought)
    await strategy.on_fill(RUN, bought)
    [[exit_signal]] = await strategy.on_snapshots([(RUN, snap(at=T0 + timedelta(minutes=1), close="900"))])
    assert isinstance(exit_signal, ExitSignal)

    await strategy.on_rejection(RUN, OrderRejected(
        ts_event=exit_signal.ts_event, order_id=order_id_for(SYMBOL, exit_signal.ts_event, Side.SELL),
        symbol=SYMBOL, side=Side.SELL, stage=RejectStage.EXECUTOR, reason=RejectReason.BELOW_EXCHANGE_MINIMUM,
    ))  # fmt: skip

    book = strategy.book
    assert isinstance(book, MemoryStrategyBook) and book.state(RUN, SYMBOL).position is None
    assert metrics.OPEN_POSITIONS.labels(SYMBOL)._value.get() == 0
    assert mirror.hwm_writes[-1] == (SYMBOL, None)

"""The executor's ledger in memory (the backtest's): ``booking.ExecutorBook`` over dictionaries.

Accounts, positions, fills and rejections keyed by run, as ``accounts``, ``positions``,
``trading_history`` and the rejection claims hold them in PostgreSQL. A transaction applies its
writes when the handler returns and drops them when it raises, as a rollback would. Who stands
behind an order (risk's record, the agent's verdict) and the recorded candle of its decision
minute are read through the callables the run gives: they are risk's, the agent's and the
recorder's stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from coinpilot.contracts import Fill, OrderApproved, RejectReason
from coinpilot.symbols import quote_currency
from services.executor.core import Ledger, Position, Rejection, already_rejected, decision_minute
from services.executor.ledger import Gauges, LockedOrder, StoredAnswer
from services.executor.provenance import Provenance
from services.executor.venue import RecordedMarket

#: ``(run_id, order_id) -> Provenance``: risk's record of the order and the agent's verdict.
ProvenanceReader = Callable[[str, str], Provenance]
#: ``(symbol, minute open) -> close`` of the recorded candle, if any.
CloseReader = Callable[[str, datetime], Decimal | None]
Key = tuple[str, str]  # (run_id, currency | symbol | order_id)


@dataclass
class MemoryExecutorBook:
    provenance: ProvenanceReader
    close_at: CloseReader
    accounts: dict[Key, Decimal] = field(default_factory=dict)
    positions: dict[Key, Position] = field(default_factory=dict)
    fills: dict[Key, Fill] = field(default_factory=dict)
    rejections: dict[Key, RejectReason] = field(default_factory=dict)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryExecutorTx]:
        tx = MemoryExecutorTx(self)
        yield tx
        tx.commit()

    def balances(self, run_id: str) -> dict[str, Decimal]:
        return {currency: b for (r, currency), b in self.accounts.items() if r == run_id}

    def open_positions(self, run_id: str) -> dict[str, Position]:
        return {symbol: p for (r, symbol), p in self.positions.items() if r == run_id}


class MemoryExecutorTx:
    """``booking.ExecutorTx`` in memory; the writes wait in the transaction until :meth:`commit`."""

    def __init__(self, book: MemoryExecutorBook) -> None:
        self.book = book
        self._accounts: dict[Key, Decimal] = {}
        self._positions: dict[Key, Position | None] = {}
        self._fills: dict[Key, Fill] = {}
        self._rejections: dict[Key, RejectReason] = {}

    async def lock_ledger(self, run_id: str, order: OrderApproved, initial_balance: Decimal) -> LockedOrder:
        currency = quote_currency(order.symbol)
        account = (run_id, currency)
        balance = self._accounts.get(account, self.book.accounts.get(account))
        if balance is None:  # the account opens with the initial balance on first use
            balance = self._accounts[account] = initial_balance
        key = (run_id, order.order_id)
        stored = None
        if key in self.book.fills:
            stored = StoredAnswer(self.book.fills[key])
        elif key in self.book.rejections:
            stored = StoredAnswer(already_rejected(order, self.book.rejections[key]))
        minute = decision_minute(order)
        return LockedOrder(
            Ledger(currency, balance, self.book.positions.get((run_id, order.symbol))),
            stored,
            self.book.provenance(run_id, order.order_id),
            RecordedMarket(minute, self.book.close_at(order.symbol, minute)),
        )

    async def save_fill(
        self, run_id: str, order: OrderApproved, fill: Fill, after: Ledger, trace_id: str | None
    ) -> Gauges:
        self._accounts[(run_id, after.currency)] = after.balance
        position = after.position
        if position is not None and position.quantity > 0:
            if position.opened_by is None:
                position = replace(position, opened_by=fill.order_id)
            self._positions[(run_id, fill.symbol)] = position
        else:
            self._positions[(run_id, fill.symbol)] = None
        self._fills[(run_id, order.order_id)] = fill
        return self._gauges(run_id)

    async def save_rejection(self, run_id: str, rejection: Rejection) -> None:
        self._rejections[(run_id, rejection.order.order_id)] = rejection.reason

    async def mark_dust(self, run_id: str, position: Position, at: datetime) -> None:
        self._positions[(run_id, position.symbol)] = position

    def _gauges(self, run_id: str) -> Gauges:
        """Open positions of the run and KRW cash plus KRW positions at cost, after the writes."""
        positions = {k: p for k, p in {**self.book.positions, **self._positions}.items() if k[0] == run_id}
        held = [p for p in positions.values() if p is not None and not p.is_dust]
        cash = self._accounts.get((run_id, "KRW"), self.book.accounts.get((run_id, "KRW")))
        krw_held = sum(
            (p.quantity * p.avg_price for p in held if quote_currency(p.symbol) == "KRW"), Decimal(0)
        )
        return Gauges(len(held), None if cash is None else cash + krw_held)

    def commit(self) -> None:
        self.book.accounts.update(self._accounts)
        for key, position in self._positions.items():
            if position is None:
                self.book.positions.pop(key, None)
            else:
                self.book.positions[key] = position
        self.book.fills.update(self._fills)
        self.book.rejections.update(self._rejections)

"""Risk's stores in memory (the backtest's), and its cache as an interface.

:class:`MemoryRiskBook` is ``handlers.RiskBook`` (risk's state, inbox, audits and proposals, and
its read of the executor's ledger) in memory, with the transaction's all-or-nothing: what a
handler wrote is applied when it returns, dropped when it raises, as a rollback would.

:class:`RiskCacheStore` is every cache read and write a risk decision makes: the latest price of
each symbol (§4.4), each trading day's reference equity (§4.3), and the GARCH state and hourly
window of each symbol (§4.9). ``state.RiskCache`` implements it on Redis (with its outage
mirror); :class:`MemoryRiskCache` in plain dictionaries, for a run in one process. Both keep the
same semantics, pinned by one contract test run against each (``tests/integration/risk/
test_cache_stores.py``): the latest price wins (:class:`PriceMemory`, shared by both), an hour
already in the window is replaced and only the last ``keep`` hours are kept
(``refit.window_with``), a failed fit leaves no state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from coinpilot.analytics.volatility import VolatilityState
from coinpilot.contracts import Contract, OrderApproved, OrderProposed
from coinpilot.fill_ledger import RecordedFill
from services.risk.core import AuditEntry, LedgerRows, RiskState, VolatilityReading, initial_state
from services.risk.params import RiskParams
from services.risk.refit import VolatilityStore, Window, window_with, windows_with


class PriceMemory:
    """The latest price seen per symbol (§4.4): never overwritten by an older one."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[Decimal, datetime]] = {}

    def note(self, symbol: str, price: Decimal, at: datetime) -> bool:
        """Remember ``price`` as of ``at`` unless a later price is known; True when it was kept."""
        known = self.known.get(symbol)
        if known is not None and known[1] > at:
            return False
        self.known[symbol] = (price, at)
        return True

    def price(self, symbol: str) -> Decimal | None:
        known = self.known.get(symbol)
        return None if known is None else known[0]


class RiskCacheStore(VolatilityStore, Protocol):
    """Every cache read and write of a risk decision."""

    async def note_price_and_read_volatility(
        self, run_id: str, symbol: str, price: Decimal, at: datetime
    ) -> VolatilityReading: ...

    async def prices(self, run_id: str, symbols: Iterable[str]) -> dict[str, Decimal]: ...

    async def reference_equity(self, run_id: str, day: date) -> Decimal | None: ...

    async def keep_reference_equity(self, run_id: str, day: date, value: Decimal, ttl: int) -> None: ...


class MemoryRiskCache:
    """:class:`RiskCacheStore` in memory: one process, no outage, nothing expires (a run's days
    are keyed by date, so an expiry would change nothing)."""

    def __init__(self) -> None:
        self._prices: dict[str, PriceMemory] = {}
        self._reference: dict[tuple[str, date], Decimal] = {}
        self._volatility: dict[tuple[str, str], VolatilityState] = {}
        self._windows: dict[tuple[str, str], Window] = {}

    def price_memory(self, run_id: str) -> PriceMemory:
        return self._prices.setdefault(run_id, PriceMemory())

    async def note_price(self, run_id: str, symbol: str, price: Decimal, at: datetime) -> None:
        self.price_memory(run_id).note(symbol, price, at)

    async def note_price_and_read_volatility(
        self, run_id: str, symbol: str, price: Decimal, at: datetime
    ) -> VolatilityReading:
        self.price_memory(run_id).note(symbol, price, at)
        return VolatilityReading(self._volatility.get((run_id, symbol)))

    async def prices(self, run_id: str, symbols: Iterable[str]) -> dict[str, Decimal]:
        memory = self.price_memory(run_id)
        return {s: p for s in symbols if (p := memory.price(s)) is not None}

    async def reference_equity(self, run_id: str, day: date) -> Decimal | None:
        return self._reference.get((run_id, day))

    async def keep_reference_equity(self, run_id: str, day: date, value: Decimal, ttl: int) -> None:
        self._reference[(run_id, day)] = value

    async def volatility(self, run_id: str, symbol: str) -> VolatilityReading:
        return VolatilityReading(self._volatility.get((run_id, symbol)))

    async def keep_volatility(self, run_id: str, state: VolatilityState) -> bool:
        self._volatility[(run_id, state.symbol)] = state
        return True

    async def drop_volatility(self, run_id: str, symbol: str) -> None:
        self._volatility.pop((run_id, symbol), None)

    async def add_hourly_close(
        self, run_id: str, symbol: str, ts_open: datetime, close: Decimal, keep: int
    ) -> bool:
        key = (run_id, symbol)
        self._windows[key] = window_with(self._windows.get(key, []), ts_open, close, keep)
        return True

    async def add_hourly_closes(self, run_id: str, symbol: str, hours: Window, keep: int) -> bool:
        key = (run_id, symbol)
        self._windows[key] = windows_with(self._windows.get(key, []), hours, keep)
        return True

    async def hourly_closes(self, run_id: str, symbol: str) -> Window | None:
        return list(self._windows.get((run_id, symbol), []))

    # -- what a run leaves (the backtest's report and its equivalence tests read these) ---------
    def volatility_states(self, run_id: str) -> dict[str, VolatilityState]:
        return {s: v for (r, s), v in self._volatility.items() if r == run_id}

    def windows(self, run_id: str) -> dict[str, Window]:
        return {s: list(w) for (r, s), w in self._windows.items() if r == run_id}


#: The executor's ledger of a run as risk reads it: ``(run_id, currency) -> LedgerRows`` (cash and positions).
LedgerReader = Callable[[str, str], LedgerRows]
#: The recorded close of ``(symbol, minute open)`` (what ``market_data`` holds), if any.
CloseReader = Callable[[str, datetime], Decimal | None]
#: The ledger's record of ``(run_id, order_id)``, if any (what ``trading_history`` holds).
FillReader = Callable[[str, str], RecordedFill | None]


@dataclass
class MemoryRiskBook:
    """``handlers.RiskBook`` over dictionaries; the executor's ledger and the recorded candles are
    read through the callables the run gives (they are the executor's and the recorder's)."""

    ledger: LedgerReader
    close_at: CloseReader
    recorded_fill: FillReader
    states: dict[str, RiskState] = field(default_factory=dict)
    claims: set[tuple[str, str, str]] = field(default_factory=set)
    audits: list[tuple[str, AuditEntry]] = field(default_factory=list)
    proposals: dict[tuple[str, str], OrderProposed | OrderApproved] = field(default_factory=dict)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryRiskTx]:
        tx = MemoryRiskTx(self)
        yield tx
        tx.commit()


class MemoryRiskTx:
    def __init__(self, book: MemoryRiskBook) -> None:
        self.book = book
        self._claims: list[tuple[str, str, str]] = []
        self._states: dict[str, RiskState] = {}
        self._audits: list[tuple[str, AuditEntry]] = []
        self._proposals: dict[tuple[str, str], OrderProposed | OrderApproved] = {}

    async def claim(self, durable: str, msg_id: str, run_id: str) -> bool:
        key = (durable, msg_id, run_id)
        if key in self.book.claims or key in self._claims:
            return False
        self._claims.append(key)
        return True

    async def load_state(self, run_id: str, now: datetime, params: RiskParams) -> RiskState:
        state = self._states.get(run_id) or self.book.states.get(run_id)
        return state if state is not None else initial_state(now, params)

    async def load_state_with_fill(
        self, run_id: str, order_id: str, now: datetime, params: RiskParams
    ) -> tuple[RiskState, RecordedFill | None]:
        return await self.load_state(run_id, now, params), self.book.recorded_fill(run_id, order_id)

    async def read_ledger(self, run_id: str, currency: str, symbol: str, minute: datetime) -> LedgerRows:
        rows = self.book.ledger(run_id, currency)
        return LedgerRows(rows.balance, rows.held_symbols, rows.positions, self.book.close_at(symbol, minute))

    async def save_state(self, run_id: str, state: RiskState, approved: Sequence[Contract] = ()) -> None:
        self._states[run_id] = state
        for message in approved:
            if isinstance(message, OrderProposed | OrderApproved):
                self._proposals[(run_id, message.order_id)] = message

    async def write_audits(self, run_id: str, audits: Sequence[AuditEntry]) -> None:
        self._audits.extend((run_id, a) for a in audits)

    def commit(self) -> None:
        self.book.claims.update(self._claims)
        self.book.states.update(self._states)
        self.book.proposals.update(self._proposals)
        known = {(r, a.order_id, a.violation_type) for r, a in self.book.audits}
        for run_id, audit in self._audits:  # unique on (run, order, violation), as risk_audit is
            if (run_id, audit.order_id, audit.violation_type) not in known:
                known.add((run_id, audit.order_id, audit.violation_type))
                self.book.audits.append((run_id, audit))

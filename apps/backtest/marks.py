"""Hourly equity marks rebuilt from a run's ledger and its recorded candles (pure).

The backtest marks equity as it runs (``Engine._mark_equity``): after the first candle of every
new hour of event time, in (open time, symbol) order, and once more after the last candle, each
mark being cash plus every open position at its symbol's last close. A distributed or replayed run
has no engine to ask, but it has the same facts: its fills (``trading_history``: cash and position
after each) and the candles it traded on (``market_data``). :func:`ledger_marks` walks those
candles in the same order, applying each fill at the candle that caused it (a fill carries its
decision candle's event time and symbol), and marks at the same points with the same
:func:`~apps.backtest.report.equity_point`. A lockstep run's marks are therefore the
backtest's, and so is every figure of its report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from apps.backtest.report import EquityPoint, equity_point
from coinpilot.clock import floor_hour
from coinpilot.contracts import Fill

ONE_MINUTE = timedelta(minutes=1)


class MinuteClose(NamedTuple):
    """What a mark needs of one recorded minute candle."""

    ts_open: datetime
    symbol: str
    close: Decimal

    @property
    def ts_event(self) -> datetime:
        return self.ts_open + ONE_MINUTE


@dataclass(frozen=True, slots=True)
class Holding:
    """An open position as the ledger last left it."""

    quantity: Decimal
    avg_price: Decimal


@dataclass
class Marks:
    """The marks of a run and the book as its last fill left it."""

    equity: list[EquityPoint] = field(default_factory=list)
    currency: str = "KRW"
    cash: Decimal = Decimal(0)
    positions: dict[str, Holding] = field(default_factory=dict)
    closes: dict[str, Decimal] = field(default_factory=dict)  # each symbol's last close seen

    @property
    def final_equity(self) -> Decimal:
        return self.equity[-1].equity if self.equity else self.cash


def ledger_marks(
    fills: Sequence[Fill], closes: Iterable[MinuteClose], initial_balance: Decimal, currency: str = "KRW"
) -> Marks:
    """The engine's hourly marks, from the run's fills and candles (both in any order).

    ``initial_balance`` is the cash before the first fill (``account_state.initial_balance``);
    ``currency`` the report's until a fill names one (the engine's default). Fills after the last
    candle are applied before the final mark, so it always states the ledger's end.
    """
    pending = sorted(fills, key=lambda f: (f.ts_event, f.symbol))  # stable: ledger order on a tie
    balances: dict[str, Decimal] = {}
    marks = Marks(currency=currency)

    def apply(fill: Fill) -> None:
        balances[fill.currency] = fill.balance_after
        marks.currency = fill.currency
        if fill.position_quantity_after > 0:
            marks.positions[fill.symbol] = Holding(
                fill.position_quantity_after, fill.position_avg_price_after
            )
        else:
            marks.positions.pop(fill.symbol, None)

    def mark(ts: datetime) -> None:
        cash = balances.get(marks.currency, initial_balance)
        marks.equity.append(equity_point(ts, cash, marks.positions, marks.closes))

    k, last_hour, last_ts = 0, None, None
    for candle in sorted(closes, key=lambda c: (c.ts_open, c.symbol)):
        ts = candle.ts_event
        while k < len(pending) and (pending[k].ts_event, pending[k].symbol) <= (ts, candle.symbol):
            apply(pending[k])
            k += 1
        marks.closes[candle.symbol] = candle.close
        hour = floor_hour(ts)
        if hour != last_hour:
            mark(ts)
            last_hour = hour
        last_ts = ts
    for fill in pending[k:]:
        apply(fill)
    if last_ts is not None:
        mark(last_ts)
    marks.cash = balances.get(marks.currency, initial_balance)
    return marks


def open_positions(fills: Sequence[Fill]) -> dict[str, Holding]:
    """What the ledger still holds after ``fills`` (each symbol's last fill says), by symbol."""
    return ledger_marks(fills, (), Decimal(0)).positions

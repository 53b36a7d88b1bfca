"""The report of a distributed or replayed run, from the database: its ledger and recorded candles.

A run booked by the services has no engine to ask for its equity curve, so it is rebuilt
(``backtest.marks``) from what the run left in PostgreSQL: its fills (``trading_history``), its
account's starting cash (``account_state``) and the candles of its window (``market_data``).
The figures then come from the same ``build_report`` as the backtest's, so a lockstep run's
report equals ``coinpilot backtest``'s over the same window, figure for figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text

from apps.backtest.marks import Marks, MinuteClose, ledger_marks
from apps.backtest.report import BacktestReport, build_report
from coinpilot.contracts import Fill
from coinpilot.db import Database

_FILLS = text("SELECT * FROM trading_history WHERE run_id = :r ORDER BY executed_at, created_at")
_ACCOUNTS = text("SELECT currency, initial_balance FROM account_state WHERE run_id = :r")
_CLOSES = """
SELECT timestamp, symbol, close_price FROM market_data
WHERE interval = '1m' AND timestamp >= :start AND timestamp <= :end{symbols}
"""


@dataclass(frozen=True, slots=True)
class RunLedger:
    """What a run left in the database: its fills, starting cash and window's candles."""

    run_id: str
    fills: list[Fill]
    initial_balances: dict[str, Decimal]  # per currency, from account_state
    closes: list[MinuteClose]


async def load_run(
    db: Database, run_id: str, start: datetime, end: datetime, symbols: Sequence[str] | None = None
) -> RunLedger:
    """The run's fills in ledger order and the 1m candles recorded with open time in [start, end]
    (of ``symbols``; all recorded symbols when None)."""
    from services.executor.records import fill_from_row

    clause = " AND symbol = ANY(:symbols)" if symbols is not None else ""
    params: dict[str, object] = {"start": start, "end": end}
    if symbols is not None:
        params["symbols"] = list(symbols)
    async with db.session() as s:
        rows = (await s.execute(_FILLS, {"r": run_id})).mappings().all()
        accounts = (await s.execute(_ACCOUNTS, {"r": run_id})).all()
        candles = (await s.execute(text(_CLOSES.format(symbols=clause)), params)).all()
    return RunLedger(
        run_id,
        [fill_from_row(r) for r in rows],
        {currency: Decimal(balance) for currency, balance in accounts},
        [MinuteClose(ts, symbol, Decimal(close)) for ts, symbol, close in candles],
    )


def run_report(run: RunLedger, label: str, default_balance: Decimal) -> tuple[BacktestReport, Marks]:
    """The run's report and marks; ``default_balance`` is the starting cash of a run that never
    opened an account (no fill: the executor's ``initial_balance``)."""
    currency = run.fills[-1].currency if run.fills else "KRW"
    initial = run.initial_balances.get(currency, default_balance)
    marks = ledger_marks(run.fills, run.closes, initial, currency)
    report = build_report(
        label,
        run.fills,
        marks.equity,
        initial_equity=initial,
        currency=marks.currency,
        candles=len(run.closes),
    )
    return report, marks

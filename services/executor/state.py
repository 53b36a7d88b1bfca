"""The executor's only SQL: the ledger of one order, loaded and saved in one transaction.

Plain SQL on the driver's connection (``Database.transaction()``), three statements per fill
between BEGIN and COMMIT:

1. ``_LOCK_ACCOUNT``: lock the account row (``_OPEN_ACCOUNT`` creates it first, on first use);
2. ``_READ_ORDER``: the symbol's position, any earlier answer to the order, who stands behind it
   (risk's ``order_proposals`` row and the agent's ``agent_decisions`` verdict, see
   ``provenance``) and the recorded candle of its decision minute (``market_data``, the paper
   venue's quote). A statement of its own, after the lock: under READ COMMITTED a statement sees
   what was committed when it started, so only a statement that starts once the lock is held sees
   the fill of a duplicate that held it before;
3. ``_BOOK_FILL``: cash, position and the ``trading_history`` row in one statement, which also
   returns the gauges (open positions, KRW equity) as they are after the fill.

A rejection replaces 3 with the inbox claim (``claim_on``); a refused (forged) order writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from coinpilot.clock import ensure_utc
from coinpilot.contracts import Fill, OrderApproved, Regime, RejectReason, Side
from coinpilot.db import Database, TransactionBook, claim_on
from coinpilot.symbols import quote_currency
from services.executor import records
from services.executor.core import Ledger, Position, Rejection, already_rejected, decision_minute
from services.executor.ledger import Gauges, LockedOrder, StoredAnswer
from services.executor.provenance import Proposal, Provenance
from services.executor.venue import RecordedMarket

CONSUMER = "executor-orders"
REJECTED_MARK = "|rejected:"

_LOCK_ACCOUNT = """
SELECT balance FROM account_state
WHERE run_id = $1 AND currency = $2
FOR UPDATE
"""

_OPEN_ACCOUNT = """
INSERT INTO account_state (run_id, currency, balance, initial_balance)
VALUES ($1, $2, $3, $3)
ON CONFLICT (run_id, currency) DO NOTHING
"""

# The trading_history columns ``records.fill_from_row`` rebuilds a Fill from.
_STORED_FILL_COLUMNS = (
    "executed_at",
    "order_id",
    "symbol",
    "side",
    "currency",
    "decision_price",
    "price",
    "quantity",
    "amount",
    "fee",
    "signal_info",
    "realized_pnl",
    "entry_avg_price",
    "regime",
    "exit_reason",
    "high_water_mark",
)

# One row whatever exists: the position's columns, the stored fill's (``fill_*``), the key of a
# stored rejection, risk's record of the order (``proposed_*``), the agent's verdict and the close
# of the candle starting at $6 (the decision minute), each NULL when there is none. $4 is a LIKE
# pattern (escape character '/').
_READ_ORDER = f"""
SELECT
    position.quantity, position.avg_price, position.regime, position.high_water_mark,
    position.opened_at, position.position_id, position.is_dust,
    {", ".join(f"fill.{c} AS fill_{c}" for c in _STORED_FILL_COLUMNS)},
    (SELECT msg_id FROM inbox
     WHERE run_id = $1 AND consumer = $5 AND msg_id LIKE $4 ESCAPE '/') AS rejected_as,
    proposal.symbol AS proposed_symbol, proposal.side AS proposed_side,
    proposal.amount AS proposed_amount, proposal.reference_price AS proposed_price,
    proposal.needs_confirmation AS proposed_needs_confirmation, proposal.ts_event AS proposed_at,
    (SELECT decision FROM agent_decisions WHERE run_id = $1 AND order_id = $3) AS agent_decision,
    (SELECT close_price FROM market_data
     WHERE symbol = $2 AND interval = '1m' AND timestamp = $6) AS decision_close
FROM (VALUES (true)) AS one
LEFT JOIN positions AS position ON position.run_id = $1 AND position.symbol = $2
LEFT JOIN trading_history AS fill ON fill.run_id = $1 AND fill.order_id = $3
LEFT JOIN order_proposals AS proposal ON proposal.run_id = $1 AND proposal.order_id = $3
"""

# The trading_history row of a fill: ``records.row_values`` in these columns, from $12 on.
_HISTORY_COLUMNS = (
    "run_id",
    "order_id",
    "symbol",
    "side",
    "order_type",
    "price",
    "decision_price",
    "quantity",
    "amount",
    "fee",
    "currency",
    "status",
    "strategy_name",
    "signal_info",
    "executed_at",
    "regime",
    "high_water_mark",
    "exit_reason",
    "realized_pnl",
    "entry_avg_price",
    "trace_id",
)
_HISTORY_PARAMS = ", ".join(f"${n}" for n in range(12, 12 + len(_HISTORY_COLUMNS)))

# One fill: cash ($3 at $4), the position (upserted from $6..$11, or deleted when $6 is NULL), the
# trading_history row, and the gauges. The final SELECT sees the tables as they were before this
# statement, so it counts the other symbols' positions from the table and this one from ``held``.
# A fill's position is never dust: a BUY into dust takes it over (opened by the BUY), a partial SELL
# keeps its id and opening time. Dust is not an open position of the gauges.
_BOOK_FILL = f"""
WITH account AS (
    UPDATE account_state SET balance = $3, updated_at = $4
    WHERE run_id = $1 AND currency = $2
    RETURNING balance
),
closed AS (
    DELETE FROM positions
    WHERE run_id = $1 AND symbol = $5 AND $6::numeric IS NULL
),
held AS (
    INSERT INTO positions (run_id, symbol, quantity, avg_price, regime, high_water_mark,
                           opened_at, position_id, currency, updated_at)
    SELECT $1, $5, $6::numeric, $7::numeric, $8::varchar, $9::numeric,
           $10::timestamptz, $11::varchar, $2, $4
    WHERE $6::numeric IS NOT NULL
    ON CONFLICT (run_id, symbol) DO UPDATE SET
        quantity = EXCLUDED.quantity,
        avg_price = EXCLUDED.avg_price,
        regime = EXCLUDED.regime,
        high_water_mark = EXCLUDED.high_water_mark,
        opened_at = EXCLUDED.opened_at,
        position_id = EXCLUDED.position_id,
        is_dust = false,
        updated_at = EXCLUDED.updated_at
    RETURNING currency, quantity * avg_price AS value
),
fill AS (
    INSERT INTO trading_history ({", ".join(_HISTORY_COLUMNS)})
    VALUES ({_HISTORY_PARAMS})
)
SELECT
    (SELECT count(*) FROM positions WHERE run_id = $1 AND symbol <> $5 AND NOT is_dust)
        + (SELECT count(*) FROM held) AS open_positions,
    CASE WHEN $2 = 'KRW' THEN (SELECT balance FROM account)
         ELSE (SELECT balance FROM account_state WHERE run_id = $1 AND currency = 'KRW')
    END AS krw_cash,
    (SELECT coalesce(sum(quantity * avg_price), 0) FROM positions
     WHERE run_id = $1 AND currency = 'KRW' AND symbol <> $5)
        + (SELECT coalesce(sum(value), 0) FROM held WHERE currency = 'KRW') AS krw_held
"""


def _rejection_key(order: OrderApproved, reason: RejectReason) -> str:
    return f"{order.msg_id()}{REJECTED_MARK}{reason}"


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (escape character '/')."""
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


async def lock_account(
    conn: asyncpg.Connection, run_id: str, currency: str, initial_balance: Decimal
) -> Decimal:
    """Lock the account row, creating it with the initial balance on first use; its balance.

    Every order of the account waits here for the one before it, so a duplicate delivered
    concurrently finds the first one's committed row once it gets the lock.
    """
    balance = await conn.fetchval(_LOCK_ACCOUNT, run_id, currency)
    if balance is None:
        await conn.execute(_OPEN_ACCOUNT, run_id, currency, initial_balance)
        balance = await conn.fetchval(_LOCK_ACCOUNT, run_id, currency)
    return balance


async def lock_existing_account(conn: asyncpg.Connection, run_id: str, currency: str) -> Decimal | None:
    """The lock ``lock_account`` takes, without creating the row (None: the account does not exist,
    nothing is locked). Reconciliation holds it so no order of the account books meanwhile."""
    return await conn.fetchval(_LOCK_ACCOUNT, run_id, currency)


async def read_order(
    conn: asyncpg.Connection, run_id: str, order: OrderApproved, currency: str, balance: Decimal
) -> LockedOrder:
    """The symbol's position, the earlier answer to ``order``, its provenance and the recorded
    candle of its decision minute (call after ``lock_account``)."""
    candle_start = decision_minute(order)
    row = await conn.fetchrow(
        _READ_ORDER,
        run_id,
        order.symbol,
        order.order_id,
        _like_prefix(order.msg_id() + REJECTED_MARK),
        CONSUMER,
        candle_start,
    )
    assert row is not None
    position = None
    if row["position_id"] is not None:
        hwm = row["high_water_mark"]
        position = Position(
            symbol=order.symbol,
            quantity=row["quantity"],
            avg_price=row["avg_price"],
            regime=Regime(row["regime"] or Regime.UNKNOWN),
            high_water_mark=hwm if hwm is not None else row["avg_price"],
            opened_at=ensure_utc(row["opened_at"]),
            opened_by=row["position_id"],
            is_dust=row["is_dust"],
        )
    return LockedOrder(
        Ledger(currency, balance, position),
        _stored_answer(row, order),
        _provenance(row),
        RecordedMarket(candle_start, row["decision_close"]),
    )


def _provenance(row: Mapping[str, Any]) -> Provenance:
    proposal = None
    if row["proposed_symbol"] is not None:
        proposal = Proposal(
            symbol=row["proposed_symbol"],
            side=Side(row["proposed_side"]),
            amount=row["proposed_amount"],
            reference_price=row["proposed_price"],
            needs_confirmation=row["proposed_needs_confirmation"],
            ts_event=ensure_utc(row["proposed_at"]),
        )
    return Provenance(proposal, row["agent_decision"])


def _stored_answer(row: Mapping[str, Any], order: OrderApproved) -> StoredAnswer | None:
    if row["fill_order_id"] is not None:
        stored = {c: row[f"fill_{c}"] for c in _STORED_FILL_COLUMNS}
        if isinstance(stored["signal_info"], str):  # the engine's jsonb codec decodes, a bare one not
            stored["signal_info"] = json.loads(stored["signal_info"])
        return StoredAnswer(records.fill_from_row(stored))
    key = row["rejected_as"]
    if key is None:
        return None
    return StoredAnswer(already_rejected(order, RejectReason(key.rpartition(REJECTED_MARK)[2])))


async def lock_ledger(
    conn: asyncpg.Connection, run_id: str, order: OrderApproved, initial_balance: Decimal
) -> LockedOrder:
    """Lock the order's account, then read its position and earlier answer (two statements)."""
    currency = quote_currency(order.symbol)
    balance = await lock_account(conn, run_id, currency, initial_balance)
    return await read_order(conn, run_id, order, currency, balance)


async def save_fill(
    conn: asyncpg.Connection,
    run_id: str,
    order: OrderApproved,
    fill: Fill,
    after: Ledger,
    trace_id: str | None,
) -> Gauges:
    """Cash, position and the trading_history row of one fill (same transaction as the lock)."""
    position = after.position
    history = records.row_values(order, fill, run_id, trace_id)
    history["signal_info"] = json.dumps(history["signal_info"])
    row = await conn.fetchrow(
        _BOOK_FILL,
        run_id,
        after.currency,
        after.balance,
        fill.ts_event,
        fill.symbol,
        *(
            (None,) * 6
            if position is None
            else (
                position.quantity,
                position.avg_price,
                str(position.regime),
                position.high_water_mark,
                position.opened_at,
                position.opened_by or fill.order_id,
            )
        ),
        *(history[c] for c in _HISTORY_COLUMNS),
    )
    assert row is not None
    cash = row["krw_cash"]
    return Gauges(row["open_positions"], None if cash is None else cash + Decimal(row["krw_held"]))


async def save_rejection(conn: asyncpg.Connection, run_id: str, rejection: Rejection) -> None:
    """Remember the answer, so a redelivery gets the same rejection and never a late fill."""
    await claim_on(conn, CONSUMER, _rejection_key(rejection.order, rejection.reason), run_id)


_MARK_DUST = """
UPDATE positions SET is_dust = true, updated_at = $4
WHERE run_id = $1 AND symbol = $2 AND position_id = $3
"""


async def mark_dust(conn: asyncpg.Connection, run_id: str, position: Position, at: datetime) -> None:
    """Hold the position as dust (``core.marks_dust``): kept in the ledger, no longer open."""
    await conn.execute(_MARK_DUST, run_id, position.symbol, position.opened_by, at)


class PgExecutorTx:
    """``booking.ExecutorTx`` on one PostgreSQL transaction (the statements above)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_ledger(self, run_id: str, order: OrderApproved, initial_balance: Decimal) -> LockedOrder:
        return await lock_ledger(self.conn, run_id, order, initial_balance)

    async def save_fill(
        self, run_id: str, order: OrderApproved, fill: Fill, after: Ledger, trace_id: str | None
    ) -> Gauges:
        return await save_fill(self.conn, run_id, order, fill, after, trace_id)

    async def save_rejection(self, run_id: str, rejection: Rejection) -> None:
        await save_rejection(self.conn, run_id, rejection)

    async def mark_dust(self, run_id: str, position: Position, at: datetime) -> None:
        await mark_dust(self.conn, run_id, position, at)


def pg_executor_book(db: Database) -> TransactionBook[PgExecutorTx]:
    """``booking.ExecutorBook`` on PostgreSQL: each transaction one connection of the pool."""
    return TransactionBook(db, PgExecutorTx)

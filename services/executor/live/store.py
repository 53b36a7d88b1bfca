"""``venue_orders``: the live venue's record of every order it sends (plain SQL, one statement each).

Each write is its own transaction, apart from the ledger's (which holds the account lock while
the venue works): the ``intended`` row must be committed before the order is sent, and what the
exchange answered must survive a rollback of the ledger transaction, so a redelivery finds it.
A state change names the state it expects (``WHERE state = $current``), so two deliveries racing
on one order cannot both move it; the machine itself is ``states``.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from coinpilot.db import Database
from coinpilot.errors import TransientError
from services.executor.live.rows import Progress, VenueOrderRow
from services.executor.live.states import VenueState, check_move

__all__ = ["Progress", "StaleRow", "VenueOrderRow"]

_COLUMNS = (
    "run_id, order_id, identifier, market, side, ord_type, amount, volume, min_total, state, "
    "exchange_uuid, exchange_state, executed_volume, funds, paid_fee, trades, remainder, dust, "
    "last_error, created_at, sent_at"
)

_FETCH = f"SELECT {_COLUMNS} FROM venue_orders WHERE run_id = $1 AND order_id = $2"

_INSERT_INTENDED = f"""
INSERT INTO venue_orders
    (run_id, order_id, identifier, market, side, ord_type, amount, volume, min_total, state)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'intended')
ON CONFLICT (run_id, order_id) DO NOTHING
RETURNING {_COLUMNS}
"""

_MARK_SENT = """
UPDATE venue_orders SET sent_at = now(), updated_at = now()
WHERE run_id = $1 AND order_id = $2 AND state = 'intended'
"""

# A BUY spends its requested amount until it is final; then what executed (funds + fee).
_SPENT_SINCE = """
SELECT COALESCE(SUM(CASE
    WHEN state IN ('intended', 'submitted', 'open') THEN amount
    WHEN state = 'done' THEN funds + paid_fee
    ELSE 0 END), 0)
FROM venue_orders
WHERE side = 'bid' AND created_at >= $1
"""

_UPDATE = """
UPDATE venue_orders SET
    state = $4, exchange_uuid = COALESCE($5, exchange_uuid), exchange_state = COALESCE($6, exchange_state),
    executed_volume = $7, funds = $8, paid_fee = $9, trades = $10::jsonb, remainder = $11, dust = $12,
    last_error = $13, updated_at = now()
WHERE run_id = $1 AND order_id = $2 AND state = $3
"""

# Orders whose outcome the ledger does not hold yet: in flight, or executed and not booked.
_UNSETTLED = """
SELECT count(*) FROM venue_orders AS v
WHERE v.run_id = $1 AND (
    v.state IN ('intended', 'submitted', 'open')
    OR (v.state = 'done' AND NOT EXISTS (
        SELECT 1 FROM trading_history AS t WHERE t.run_id = v.run_id AND t.order_id = v.order_id)))
"""

_FORGET_UNSENT = "DELETE FROM venue_orders WHERE run_id = $1 AND order_id = $2 AND state = 'intended'"


def _row(record: Any) -> VenueOrderRow:
    values = dict(record)
    trades = values["trades"]
    values["trades"] = json.loads(trades) if isinstance(trades, str) else list(trades)
    values["state"] = VenueState(values["state"])
    return VenueOrderRow(**values)


async def fetch(db: Database, run_id: str, order_id: str) -> VenueOrderRow | None:
    async with db.transaction() as conn:
        record = await conn.fetchrow(_FETCH, run_id, order_id)
    return None if record is None else _row(record)


async def insert_intended(db: Database, row: VenueOrderRow) -> tuple[VenueOrderRow, bool]:
    """Commit the ``intended`` row (before anything is sent): (the row, True), or (the row already
    stored, False) when another delivery of the order wrote one first."""
    async with db.transaction() as conn:
        inserted = await conn.fetchrow(
            _INSERT_INTENDED,
            row.run_id,
            row.order_id,
            row.identifier,
            row.market,
            row.side,
            row.ord_type,
            row.amount,
            row.volume,
            row.min_total,
        )
        stored = inserted if inserted is not None else await conn.fetchrow(_FETCH, row.run_id, row.order_id)
    return _row(stored), inserted is not None


async def mark_sent(db: Database, run_id: str, order_id: str) -> None:
    """When the order left: a lookup that finds nothing soon after this may just be early."""
    async with db.transaction() as conn:
        await conn.execute(_MARK_SENT, run_id, order_id)


async def forget_unsent(db: Database, run_id: str, order_id: str) -> None:
    """Drop an ``intended`` row whose order the exchange certainly did not take (the connection was
    refused, or a 429): the next attempt is a first attempt, under the same identifier."""
    async with db.transaction() as conn:
        await conn.execute(_FORGET_UNSENT, run_id, order_id)


async def record(db: Database, row: VenueOrderRow, progress: Progress) -> VenueOrderRow:
    """Move ``row`` to ``progress.state`` (checked against the machine) with what the exchange said.
    Raises ``IllegalTransition`` for a move the machine forbids, ``StaleRow`` if another delivery
    moved the row first."""
    check_move(row.state, progress.state)
    async with db.transaction() as conn:
        status = await conn.execute(
            _UPDATE,
            row.run_id,
            row.order_id,
            str(row.state),
            str(progress.state),
            progress.exchange_uuid,
            progress.exchange_state,
            progress.executed_volume,
            progress.funds,
            progress.paid_fee,
            json.dumps(progress.trades),
            progress.remainder,
            progress.dust,
            progress.last_error,
        )
        if status.endswith(" 0"):
            raise StaleRow(f"venue order {row.order_id} is no longer {row.state}")
        stored = await conn.fetchrow(_FETCH, row.run_id, row.order_id)
    return _row(stored)


async def spent_since(db: Database, since: datetime) -> Decimal:
    """Quote amount of every BUY since ``since``, across runs: every row is the same real account."""
    async with db.transaction() as conn:
        value = await conn.fetchval(_SPENT_SINCE, since)
    return Decimal(value)


async def unsettled(db: Database, run_id: str) -> int:
    """Orders of the run the ledger cannot agree with the exchange on yet: sent (or maybe sent) and
    not final, or executed and not booked. Reconciliation waits while there are any."""
    async with db.transaction() as conn:
        return int(await conn.fetchval(_UNSETTLED, run_id))


class StaleRow(TransientError):
    """Raised when a row's state changed under us (a concurrent delivery of the same order)."""

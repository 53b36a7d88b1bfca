"""The kill switch's SQL (``trading_halts``; the rules are in ``coinpilot.kill_switch``).

Plain asyncpg on ``Database.transaction()``; a transaction-scoped advisory lock per run makes
"is a halt on? else insert one" atomic between the executor, risk and the CLI.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from coinpilot.clock import ensure_utc
from coinpilot.db.database import Database
from coinpilot.kill_switch import Halt, HaltSource

_COLUMNS = "run_id, source, reason, halted_at, cleared_at, cleared_by"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('coinpilot.kill_switch:' || $1))"
_ACTIVE = f"""
SELECT {_COLUMNS} FROM trading_halts
WHERE run_id = $1 AND cleared_at IS NULL
ORDER BY halted_at LIMIT 1
"""
_INSERT = f"""
INSERT INTO trading_halts (run_id, source, reason, halted_at) VALUES ($1, $2, $3, $4)
RETURNING {_COLUMNS}
"""
_CLEAR = f"""
UPDATE trading_halts SET cleared_at = $2, cleared_by = $3
WHERE run_id = $1 AND cleared_at IS NULL
RETURNING {_COLUMNS}
"""
_LATEST = f"SELECT {_COLUMNS} FROM trading_halts WHERE run_id = $1 ORDER BY halted_at DESC LIMIT $2"


def _halt(row: asyncpg.Record) -> Halt:
    cleared = row["cleared_at"]
    return Halt(
        run_id=row["run_id"],
        source=row["source"],
        reason=row["reason"],
        halted_at=ensure_utc(row["halted_at"]),
        cleared_at=None if cleared is None else ensure_utc(cleared),
        cleared_by=row["cleared_by"],
    )


async def set_halt_on(
    conn: asyncpg.Connection, run_id: str, source: HaltSource | str, reason: str, now: datetime
) -> tuple[Halt, bool]:
    """Halt ``run_id`` inside the caller's transaction: (the active halt, True if this call set it)."""
    await conn.execute(_LOCK, run_id)
    row = await conn.fetchrow(_ACTIVE, run_id)
    if row is not None:
        return _halt(row), False
    row = await conn.fetchrow(_INSERT, run_id, str(source), reason, now)
    assert row is not None
    return _halt(row), True


async def set_halt(
    db: Database, run_id: str, source: HaltSource | str, reason: str, now: datetime
) -> tuple[Halt, bool]:
    async with db.transaction() as conn:
        return await set_halt_on(conn, run_id, source, reason, now)


async def clear_halt(db: Database, run_id: str, cleared_by: str, now: datetime) -> Halt | None:
    """Lift the run's halt (an operator's act); None when it was not halted."""
    async with db.transaction() as conn:
        await conn.execute(_LOCK, run_id)
        row = await conn.fetchrow(_CLEAR, run_id, now, cleared_by)
    return None if row is None else _halt(row)


async def active_halt(db: Database, run_id: str) -> Halt | None:
    async with db.transaction() as conn:
        row = await conn.fetchrow(_ACTIVE, run_id)
    return None if row is None else _halt(row)


async def recent_halts(db: Database, run_id: str, limit: int = 5) -> list[Halt]:
    """The run's latest halts, newest first, cleared ones included."""
    async with db.transaction() as conn:
        rows = await conn.fetch(_LATEST, run_id, limit)
    return [_halt(row) for row in rows]

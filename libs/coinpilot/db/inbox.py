"""Exactly-once effects over at-least-once delivery: remember which messages a consumer processed.

Call :func:`claim` inside the same transaction as the effects. On a redelivery the row exists, the
claim returns False, and the handler skips the effects; if the transaction rolls back, so does the
claim, and the retry processes the message again.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from coinpilot.db.models import InboxEntry


async def claim(session: AsyncSession, consumer: str, msg_id: str, run_id: str) -> bool:
    """True when ``msg_id`` is new for ``consumer`` in ``run_id`` (now claimed), False when already done."""
    statement = (
        insert(InboxEntry)
        .values(run_id=run_id, consumer=consumer, msg_id=msg_id)
        .on_conflict_do_nothing(index_elements=["run_id", "consumer", "msg_id"])
        .returning(InboxEntry.msg_id)
    )
    result = await session.execute(statement)
    return result.scalar_one_or_none() is not None


_CLAIM = """
INSERT INTO inbox (run_id, consumer, msg_id) VALUES ($1, $2, $3)
ON CONFLICT (run_id, consumer, msg_id) DO NOTHING
RETURNING msg_id
"""


async def claim_on(conn: asyncpg.Connection, consumer: str, msg_id: str, run_id: str) -> bool:
    """:func:`claim` inside a :meth:`Database.transaction` (one round trip, no ORM)."""
    return await conn.fetchval(_CLAIM, run_id, consumer, msg_id) is not None

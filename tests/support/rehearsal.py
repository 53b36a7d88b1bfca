"""What a start-up rehearsal must leave behind: prepared statements on the connection, no rows."""

from __future__ import annotations

import logging

from sqlalchemy import text

from coinpilot.bus import Bus
from coinpilot.db import Database
from coinpilot.db.database import REHEARSAL_RUN_PREFIX
from coinpilot.runtime import Runtime
from coinpilot.settings import CommonSettings


def runtime_on(db: Database, service: str) -> Runtime:
    """A runtime for calling a service's ``build`` and hooks; its bus is never used by them."""
    bus = Bus(None, service)  # type: ignore[arg-type]
    return Runtime(service, CommonSettings(), bus, db, None, logging.getLogger(f"test.{service}"))


async def prepared_statements(db: Database) -> set[str]:
    """The statements prepared on the pool's connection (``pool_size=1``: the one it always lends)."""
    async with db.transaction() as conn:
        return {row["statement"] for row in await conn.fetch("SELECT statement FROM pg_prepared_statements")}


async def rehearsal_rows(db: Database, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows of any rehearsal run, per table (all must be 0: a rehearsal is rolled back)."""
    counts = {}
    async with db.session() as s:
        for table in tables:
            query = text(f"SELECT count(*) FROM {table} WHERE run_id LIKE :prefix")
            counts[table] = (await s.execute(query, {"prefix": REHEARSAL_RUN_PREFIX + "%"})).scalar_one()
    return counts

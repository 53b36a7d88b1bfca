"""Risk's start-up rehearsal: every statement of a signal and a fill, on a throwaway run, rolled back.

Why: a fresh connection pays each statement's first parse and plan, the backend's catalog lookups
and asyncpg's statement preparation on first use, so the first entry signal of a fresh process was
the slowest risk step of a day's replay. Running the statements once at start-up, in a transaction
that is rolled back (``Database.rolled_back``), pays that before the first signal. Nothing is kept,
Redis is not touched and no metric moves.
"""

from __future__ import annotations

from datetime import UTC, datetime

from coinpilot.clock import wall_clock_now
from coinpilot.db import Database, claim_on, rehearsal_run_id
from services.risk import state
from services.risk.core import AuditEntry
from services.risk.params import RiskParams

AT = datetime(2000, 1, 3, tzinfo=UTC)


async def rehearse_signal_path(db: Database, consumer: str, params: RiskParams, currency: str) -> None:
    """Claim, load (creating the rows), read the ledger, save, audit, then load the saved rows."""
    run_id = rehearsal_run_id()
    async with db.rolled_back() as conn:
        await claim_on(conn, consumer, "rehearsal", run_id)
        before = await state.load_risk_state(conn, run_id, AT, params)
        await state.read_ledger(conn, run_id, currency)
        await state.save_risk_state(conn, run_id, before, wall_clock_now())
        audit = AuditEntry("REHEARSAL", "start-up rehearsal, rolled back", "KRW-BTC", "rehearsal", AT)
        await state.write_audits(conn, run_id, [audit])
        await state.load_risk_state(conn, run_id, AT, params)

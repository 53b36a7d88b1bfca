"""One order inside its transaction: lock the ledger, check who stands behind the order, quote,
book. Shared by the consumer and the start-up rehearsal, so the rehearsal runs exactly the
statements a real order runs."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from coinpilot.contracts import OrderApproved
from services.executor import core, state
from services.executor.provenance import Refusal, check_provenance
from services.executor.venue import FillVenue


@dataclass(frozen=True, slots=True)
class Booked:
    """A fill written to the ledger, and the gauges as they are after it."""

    outcome: core.FillOutcome
    gauges: state.Gauges


async def book_order(
    conn: asyncpg.Connection,
    venue: FillVenue,
    order: OrderApproved,
    *,
    run_id: str,
    trace_id: str | None,
    initial_balance: Decimal,
) -> Booked | core.Rejection | state.StoredAnswer | Refusal:
    """The order's earlier answer if it had one (a redelivered genuine order gets it again); else
    a refusal when no one approved the order as it stands (nothing written); else its fill or
    rejection, written (not committed). The venue raises ``TransientError`` while the candle it
    quotes from is not recorded yet."""
    locked = await state.lock_ledger(conn, run_id, order, initial_balance)
    if locked.stored is not None:
        return locked.stored
    forged = check_provenance(order, locked.provenance)
    if forged is not None:
        return forged
    refused = core.refuse_duplicate_buy(locked.ledger, order)  # before any venue is asked
    execution = refused if refused is not None else await venue.execute(order, locked.ledger, locked.market)
    outcome = (
        execution
        if isinstance(execution, core.Rejection)
        else core.apply_execution(locked.ledger, order, execution)
    )
    if isinstance(outcome, core.Rejection):
        await state.save_rejection(conn, run_id, outcome)
        return outcome
    gauges = await state.save_fill(conn, run_id, order, outcome.fill, outcome.ledger, trace_id)
    return Booked(outcome, gauges)

"""One order inside its transaction: lock the ledger, check who stands behind the order, quote,
book. Written once over a transaction interface (:class:`ExecutorTx`): the consumer and the
start-up rehearsal run it on PostgreSQL (``state.PgExecutorTx``, so the rehearsal runs exactly the
statements a real order runs), the backtest on memory (``memory_book.MemoryExecutorTx``)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from coinpilot.contracts import Fill, OrderApproved
from services.executor import core
from services.executor.ledger import Gauges, LockedOrder, StoredAnswer
from services.executor.provenance import Refusal, check_provenance
from services.executor.venue import FillVenue


class ExecutorTx(Protocol):
    """One transaction of the executor's ledger (the order's account locked until it ends)."""

    async def lock_ledger(
        self, run_id: str, order: OrderApproved, initial_balance: Decimal
    ) -> LockedOrder: ...

    async def save_fill(
        self, run_id: str, order: OrderApproved, fill: Fill, after: core.Ledger, trace_id: str | None
    ) -> Gauges: ...

    async def save_rejection(self, run_id: str, rejection: core.Rejection) -> None: ...

    async def mark_dust(self, run_id: str, position: core.Position, at: datetime) -> None:
        """Hold ``position`` as dust from ``at`` (event time) on (``core.marks_dust``)."""
        ...


class ExecutorBook(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[ExecutorTx]: ...


@dataclass(frozen=True, slots=True)
class Booked:
    """A fill written to the ledger, and the gauges as they are after it."""

    outcome: core.FillOutcome
    gauges: Gauges


async def book_order(
    tx: ExecutorTx,
    venue: FillVenue,
    order: OrderApproved,
    *,
    run_id: str,
    trace_id: str | None,
    initial_balance: Decimal,
) -> Booked | core.Rejection | StoredAnswer | Refusal:
    """The order's earlier answer if it had one (a redelivered genuine order gets it again); else
    a refusal when no one approved the order as it stands (nothing written); else its fill or
    rejection, written (not committed). The venue raises ``TransientError`` while the candle it
    quotes from is not recorded yet."""
    locked = await tx.lock_ledger(run_id, order, initial_balance)
    if locked.stored is not None:
        return locked.stored
    forged = check_provenance(order, locked.provenance)
    if forged is not None:
        return forged
    refused = core.refuse_duplicate_buy(locked.ledger, order)  # before any venue is asked
    execution = (
        refused
        if refused is not None
        else await venue.execute(order, locked.ledger, locked.market, run_id=run_id)
    )
    outcome = (
        execution
        if isinstance(execution, core.Rejection)
        else core.apply_execution(locked.ledger, order, execution)
    )
    if isinstance(outcome, core.Rejection):
        await tx.save_rejection(run_id, outcome)
        dust = core.marks_dust(locked.ledger, outcome)
        if dust is not None:
            await tx.mark_dust(run_id, dust, order.ts_event)
        return outcome
    gauges = await tx.save_fill(run_id, order, outcome.fill, outcome.ledger, trace_id)
    return Booked(outcome, gauges)

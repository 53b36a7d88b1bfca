"""Replay the executor stage of a recorded run on its own, in process, with new parameters.

The recorded approved orders (``orders.approved``) go, in stored order, through the executor's
own handler (``services.executor.handler``) over its memory ledger under a new run id, with the
paper venue of the replay's settings (fee, slippage, price band, initial balance). Who stood
behind each order is the recording's: risk's proposals and exit approvals, the agent's verdicts;
the venue quotes from the recorded candles. Downstream nothing changes (a fill the executor books
differently is not fed back to strategy and risk: for that, replay the loop ``--through
executor``). The diff sets each order's original answer (fill or rejection) beside the new one,
and the two ledgers' figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from apps.backtest.settings import ModeSettings
from apps.stage_replay.diff import StageDiff, Verdict, execution_verdict, ledger_figures, order_row
from apps.stage_replay.recorded import Recorded
from coinpilot.contracts import (
    AiDecision,
    Contract,
    Fill,
    MinuteCandle,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectStage,
)
from coinpilot.errors import RefusedMessage
from services.executor.handler import execute
from services.executor.memory_book import MemoryExecutorBook
from services.executor.provenance import Provenance, proposal_of
from services.executor.venue import PaperVenue

INPUTS = ("orders.approved.*",)
OUTPUTS = ("fills.*", "orders.rejected.*")
READS = ("orders.proposed.*", "ai.decisions.*", "candles.1m.*")
#: The services whose dead letters in the run are no input here (they refused them then).
REFUSED_BY = ("executor", "collector")


async def replay_executor(
    recorded: Sequence[Recorded],
    *,
    original_run: str,
    replay_run: str,
    settings: ModeSettings,
    overrides: dict[str, str] | None = None,
) -> tuple[StageDiff, list[Contract]]:
    """Fill the recorded approved orders again; the diff against the recorded answers and the new answers."""
    messages = [r.message for r in recorded]
    closes = {(m.symbol, m.ts_open): m.close for m in messages if isinstance(m, MinuteCandle)}
    proposals: dict[str, OrderProposed | OrderApproved] = {}
    for m in messages:
        if isinstance(m, OrderProposed) or (
            isinstance(m, OrderApproved) and m.approved_by is RejectStage.RISK
        ):
            proposals[m.order_id] = m
    verdicts = {m.order_id: str(m.decision) for m in messages if isinstance(m, AiDecision)}

    def provenance(run_id: str, order_id: str) -> Provenance:
        proposed = proposals.get(order_id)
        return Provenance(None if proposed is None else proposal_of(proposed), verdicts.get(order_id))

    def close_at(symbol: str, minute: datetime) -> Decimal | None:
        return closes.get((symbol, minute))

    book = MemoryExecutorBook(provenance, close_at)
    venue = PaperVenue(settings.executor.params())
    orders = [m for m in messages if isinstance(m, OrderApproved)]
    new: dict[str, Fill | OrderRejected] = {}
    refused: dict[str, Verdict] = {}
    initial = settings.executor.initial_balance
    for order in orders:
        try:
            new[order.order_id] = await execute(
                book, venue, order, run_id=replay_run, trace_id=None, initial_balance=initial
            )
        except RefusedMessage as exc:  # no one stood behind it in the recording: refused, as then
            refused[order.order_id] = Verdict("REFUSED", exc.rule, message=str(exc))
    original: dict[str, Fill | OrderRejected] = {}
    for m in messages:
        if isinstance(m, Fill) or (isinstance(m, OrderRejected) and m.stage is RejectStage.EXECUTOR):
            original[m.order_id] = m
    rows = [
        order_row(
            o,
            execution_verdict(original.get(o.order_id)),
            refused.get(o.order_id) or execution_verdict(new.get(o.order_id)),
        )
        for o in orders
    ]
    before = [original[o.order_id].to_json() for o in orders if o.order_id in original]
    after = [new[o.order_id].to_json() for o in orders if o.order_id in new]
    diff = StageDiff(
        stage="executor",
        original_run=original_run,
        replay_run=replay_run,
        overrides=dict(overrides or {}),
        rows=rows,
        identical_outputs=before == after,
        ledgers=(
            ledger_figures([m for m in original.values() if isinstance(m, Fill)]),
            ledger_figures([m for m in new.values() if isinstance(m, Fill)]),
        ),
    )
    return diff, list(new.values())

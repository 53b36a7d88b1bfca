"""The diff of a replay that re-ran the pipeline down to the executor, pure: one stage's answer to
each of its inputs (the rows), whether every output is the original's byte for byte, and the two
ledgers. The in-process loop (``loop_stage``) and the replay published into a NATS
(``distributed``) both end here, so the two diffs of one what-if are the same diff.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from apps.stage_replay.diff import (
    BYTES,
    NUMBERS,
    DiffRow,
    StageDiff,
    decision_verdict,
    diff_rows,
    execution_verdict,
    first_difference,
    ledger_figures,
    order_row,
    verdicts_of,
    without_trailing_zeros,
)
from apps.stage_replay.risk_stage import risk_outputs
from coinpilot.contracts import (
    AiDecision,
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectStage,
)

Keyed = TypeVar("Keyed", OrderProposed, OrderApproved, AiDecision)


def loop_outputs(messages: Sequence[Contract], *, decisions: bool = False) -> list[Contract]:
    """What the loop's stages publish: the strategy's signals, risk's proposals and alerts, every
    stage's approvals and rejections, the fills (and the agent's decisions when they are what is
    compared), in a stable order: event time, then id (a run's stored order interleaves symbols,
    the in-process order does not)."""
    kinds: tuple[type[Contract], ...] = (EntrySignal, ExitSignal, OrderApproved, OrderRejected, Fill)
    out = [m for m in messages if isinstance(m, kinds)]
    out.extend(m for m in risk_outputs(messages) if not isinstance(m, OrderApproved | OrderRejected))
    if decisions:
        out.extend(m for m in messages if isinstance(m, AiDecision))
    return sorted(out, key=lambda m: (m.ts_event, m.msg_id()))


def signal_rows(original: Sequence[Contract], new: Sequence[Contract]) -> list[DiffRow]:
    """Risk's verdict on every signal either run's strategy sent (the strategy and risk stages)."""
    sent = (m for m in (*original, *new) if isinstance(m, EntrySignal | ExitSignal))
    signals = {(s.ts_event, s.symbol, s.kind): s for s in sent}
    before, after = verdicts_of(risk_outputs(original)), verdicts_of(risk_outputs(new))
    return diff_rows([signals[k] for k in sorted(signals)], before, after)


def decision_rows(original: Sequence[Contract], new: Sequence[Contract]) -> list[DiffRow]:
    """The agent's decision on every proposal either run's risk sent."""
    proposals = _by_order(m for m in (*original, *new) if isinstance(m, OrderProposed))
    before = _by_order(m for m in original if isinstance(m, AiDecision))
    after = _by_order(m for m in new if isinstance(m, AiDecision))
    return [
        order_row(p, decision_verdict(before.get(p.order_id)), decision_verdict(after.get(p.order_id)))
        for p in proposals.values()
    ]


def execution_rows(original: Sequence[Contract], new: Sequence[Contract]) -> list[DiffRow]:
    """The executor's answer (a fill or its rejection) to every order either run approved."""
    orders = _by_order(m for m in (*original, *new) if isinstance(m, OrderApproved))
    before, after = _answers(original), _answers(new)
    return [
        order_row(o, execution_verdict(before.get(o.order_id)), execution_verdict(after.get(o.order_id)))
        for o in orders.values()
    ]


ROWS: dict[str, Callable[[Sequence[Contract], Sequence[Contract]], list[DiffRow]]] = {
    "strategy": signal_rows,
    "risk": signal_rows,
    "agent": decision_rows,
    "executor": execution_rows,
}


def pipeline_diff(
    stage: str,
    original: Sequence[Contract],
    new: Sequence[Contract],
    *,
    label: str,
    original_run: str,
    replay_run: str,
    overrides: dict[str, str] | None = None,
    identity: str = BYTES,
) -> StageDiff:
    """``stage``'s rows, and the loop's outputs and ledgers, of two runs of the pipeline; outputs
    compared ``identity`` (``NUMBERS`` where the replay's inputs were read from ``market_data``)."""
    decisions = stage == "agent"
    before = [m.to_json() for m in loop_outputs(original, decisions=decisions)]
    after = [m.to_json() for m in loop_outputs(new, decisions=decisions)]
    if identity == NUMBERS:
        before = [without_trailing_zeros(b) for b in before]
        after = [without_trailing_zeros(a) for a in after]
    return StageDiff(
        stage=label,
        original_run=original_run,
        replay_run=replay_run,
        overrides=dict(overrides or {}),
        rows=ROWS[stage](original, new),
        identical_outputs=before == after,
        identity=identity,
        first_difference=first_difference(before, after),
        ledgers=(
            ledger_figures([m for m in original if isinstance(m, Fill)]),
            ledger_figures([m for m in new if isinstance(m, Fill)]),
        ),
    )


def _by_order(messages: Iterable[Keyed]) -> dict[str, Keyed]:
    """The first message of each order id, in event-time order."""
    found: dict[str, Keyed] = {}
    for m in sorted(messages, key=lambda m: (m.ts_event, m.order_id)):
        found.setdefault(m.order_id, m)
    return found


def _answers(messages: Sequence[Contract]) -> dict[str, Fill | OrderRejected]:
    return {
        m.order_id: m
        for m in messages
        if isinstance(m, Fill) or (isinstance(m, OrderRejected) and m.stage is RejectStage.EXECUTOR)
    }

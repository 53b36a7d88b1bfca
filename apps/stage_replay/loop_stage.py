"""Replay the trading loop of a recorded run (strategy -> risk -> agent -> executor, fills and
rejections fed back) from its recorded indicator outputs, in process, with new parameters.

``--through executor`` starts here whichever of strategy and risk changed: the strategy's state
(its position, its pending order) depends on the fills and rejections the new run causes, so a
ledger effect can only be measured with the strategy in the loop. The recorded inputs are the
run's 1m candles (what the recorder stored: the executor quotes from them), its hourly candles and
indicator snapshots, and what ``market_data`` held before the run (the agent's context warms from
it). Every stage is the service's own handler over memory (``apps.backtest.engine``), so an
unchanged replay books the original ledger and a changed one books what a full backtest with the
change books.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apps.backtest.engine import Engine
from apps.backtest.settings import ModeSettings
from apps.stage_replay.diff import StageDiff, diff_rows, first_difference, ledger_figures, verdicts_of
from apps.stage_replay.recorded import Recorded
from apps.stage_replay.risk_stage import risk_outputs
from coinpilot.contracts import (
    Contract,
    EntrySignal,
    ExitSignal,
    Fill,
    HourlyCandle,
    IndicatorSnapshot,
    MinuteCandle,
)
from services.agent.recording import RecordStore

#: The recorded inputs of the loop, and the outputs it is compared with.
INPUTS = ("candles.1m.*", "candles.1h.*", "indicators.1m.*")
OUTPUTS = (
    "signals.*.*",
    "orders.proposed.*",
    "orders.approved.*",
    "orders.rejected.*",
    "fills.*",
    "risk.alerts",
)
#: The services whose dead letters in the run are no input here (they refused them then).
REFUSED_BY = ("collector",)


class RecordingEngine(Engine):
    """The engine, keeping every message its stages sent (for the diff)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sent: list[Contract] = []

    async def route(self, msg: Contract) -> list[Contract]:
        self.sent.append(msg)
        return await super().route(msg)


async def replay_loop(
    recorded: Sequence[Recorded],
    history: Sequence[MinuteCandle],
    *,
    original_run: str,
    replay_run: str,
    settings: ModeSettings,
    strategy_config: Path | None = None,
    overrides: dict[str, str] | None = None,
    records: RecordStore | None = None,
) -> tuple[StageDiff, list[Fill]]:
    """The loop over the recorded indicator outputs; the diff (risk's verdict on every signal of
    either run, the two ledgers' figures) and the new ledger. The agent reviews with the mode's
    source: the rules reviewer, or (``--llm replay``) the verdicts recorded in ``records``."""
    candles = [r.message for r in recorded if isinstance(r.message, MinuteCandle)]
    outputs = [r.message for r in recorded if isinstance(r.message, HourlyCandle | IndicatorSnapshot)]
    engine = RecordingEngine(replay_run, strategy_config, settings=settings, records=records)
    result = await engine.run_recorded(history, candles, outputs)
    original = [r.message for r in recorded]
    signals = {
        (s.ts_event, s.symbol, s.kind): s
        for s in (*original, *engine.sent)
        if isinstance(s, EntrySignal | ExitSignal)
    }
    original_fills = [m for m in original if isinstance(m, Fill)]
    before, after = _ordered(_loop_outputs(original)), _ordered(_loop_outputs(engine.sent))
    differ = next(
        (k for k, (a, b) in enumerate(zip(before, after, strict=False)) if a.to_json() != b.to_json()), None
    )
    if differ is None and len(before) != len(after):
        differ = min(len(before), len(after))
    diff = StageDiff(
        stage="strategy..executor",
        original_run=original_run,
        replay_run=replay_run,
        overrides=dict(overrides or {}),
        rows=diff_rows(
            [signals[k] for k in sorted(signals)],
            verdicts_of(risk_outputs(original)),
            verdicts_of(risk_outputs(engine.sent)),
        ),
        identical_outputs=differ is None,
        first_difference=None
        if differ is None
        else first_difference([m.to_json() for m in before[differ:]], [m.to_json() for m in after[differ:]]),
        ledgers=(ledger_figures(original_fills), ledger_figures(result.fills)),
    )
    return diff, result.fills


def _loop_outputs(messages: Sequence[Contract]) -> list[Contract]:
    """What the loop's stages publish: the strategy's signals, risk's verdicts and alerts, the fills."""
    signals = [m for m in messages if isinstance(m, EntrySignal | ExitSignal)]
    return [*signals, *risk_outputs(messages), *(m for m in messages if isinstance(m, Fill))]


def _ordered(messages: Sequence[Contract]) -> list[Contract]:
    """The messages in a stable order (event time, then id): a run's stored order interleaves
    symbols, the in-process order does not."""
    return sorted(messages, key=lambda m: (m.ts_event, m.msg_id()))

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
from apps.stage_replay.diff import BYTES, StageDiff
from apps.stage_replay.pipeline_diff import pipeline_diff
from apps.stage_replay.recorded import Recorded
from coinpilot.contracts import Contract, Fill, HourlyCandle, IndicatorSnapshot, MinuteCandle
from services.agent.recording import RecordStore
from services.risk.refit import RecordedHours

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
    recompute: bool = False,
    candles: Sequence[MinuteCandle] | None = None,
    hours: RecordedHours | None = None,
    identity: str = BYTES,
) -> tuple[StageDiff, list[Fill]]:
    """The loop over the recorded indicator outputs; the diff (risk's verdict on every signal of
    either run, the two ledgers' figures) and the new ledger. The agent reviews with the mode's
    source: the rules reviewer, or (``--llm replay``) the verdicts recorded in ``records``.

    ``recompute``: the run's indicator outputs are no longer recorded (``INDICATORS`` keeps the
    shortest history), so the indicator's batch path computes them again from ``history`` and
    ``candles`` (the run's, from the stream or ``market_data``); it is deterministic, so they are
    the outputs the run had. ``hours``: the recorded hourly closes risk seeds its volatility
    windows from (``market_data``, as the service read them; else the engine's candles)."""
    if candles is None:
        candles = [r.message for r in recorded if isinstance(r.message, MinuteCandle)]
    engine = RecordingEngine(replay_run, strategy_config, settings=settings, records=records)
    if hours is not None:  # risk seeds its volatility windows from market_data, as the service did
        engine.risk.history = hours
    if recompute:  # the indicator outputs aged out of the stream: computed again, as the run did
        result = await engine.run_batch(history, candles)
    else:
        outputs = [r.message for r in recorded if isinstance(r.message, HourlyCandle | IndicatorSnapshot)]
        result = await engine.run_recorded(history, candles, outputs)
    diff = pipeline_diff(
        "risk",
        [r.message for r in recorded],
        engine.sent,
        label="strategy..executor",
        original_run=original_run,
        replay_run=replay_run,
        overrides=overrides,
        identity=identity,
    )
    return diff, result.fills

"""``coinpilot replay-stage``: read a past run's recorded messages and re-run one stage on them.

Stages it starts from, and why:

* ``risk`` alone: risk's inputs are all recorded (hourly candles, signals, fills, rejections),
  and what it reads from other stores is rebuilt from them (``risk_stage``). The answer is risk's
  verdict on every recorded signal, original and new, side by side.
* ``agent`` alone: the recorded proposals reviewed again (``agent_stage``): recorded verdicts
  answer offline where the call's inputs are unchanged, a new prompt version or model goes to the
  provider and is recorded. Needs the database (``llm_call_records``, ``market_data``).
* ``executor`` alone: the recorded approved orders filled again with the replay's venue
  settings (fee, slippage, band, initial balance), who stood behind them and the quotes taken
  from the recording (``executor_stage``).
* ``strategy`` or ``risk`` ``--through executor``: the trading loop from the recorded indicator
  outputs (``loop_stage``). Strategy and risk are in a loop with the executor (fills and
  rejections feed back into both), so any ledger effect needs the whole loop re-run; the
  indicator is deterministic and its outputs are recorded, so it is not re-run.

Published into a NATS (``--into``) instead of run in process: ``distributed`` (from the run's
candles, through the target's deployed services, whose settings are the what-if).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from nats.js import JetStreamContext

from apps.backtest.settings import ModeSettings
from apps.stage_replay import agent_stage, executor_stage, loop_stage, risk_stage
from apps.stage_replay.diff import BYTES, NUMBERS, StageDiff
from apps.stage_replay.distributed import FROM_MARKET_DATA, run_candles
from apps.stage_replay.recorded import Recorded, read_run
from coinpilot.contracts import IndicatorSnapshot, MinuteCandle
from coinpilot.db import Database
from coinpilot.replay.sources import candles_from_db
from services.risk.refit import RecordedHours

STAGES = ("strategy", "risk", "agent", "executor")
THROUGH = ("executor",)
#: market_data read before a loop replay's first candle: the agent's context and the indicators'.
HISTORY = timedelta(hours=240)


def check_stages(stage: str, through: str | None) -> None:
    """ValueError for a replay this module cannot run, saying why."""
    if stage not in STAGES:
        raise ValueError(f"a stage replay starts from one of {', '.join(STAGES)}, not {stage!r}")
    if through is not None and through not in THROUGH:
        raise ValueError(f"--through goes to the executor (the end of the loop), not {through!r}")
    if stage == "strategy" and through is None:
        raise ValueError("the strategy's outputs depend on fills: replay it --through executor")
    if stage in ("agent", "executor") and through is not None:
        raise ValueError(
            f"the {stage} replays alone; the loop through the executor starts at strategy or risk"
        )


@dataclass
class StageReplay:
    """One replay: which run, which stages, with what, over which event times."""

    stage: str
    through: str | None
    run_id: str
    replay_run: str
    settings: ModeSettings
    strategy_config: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    skipped: Counter[str] = field(default_factory=Counter)

    async def read(
        self, js: JetStreamContext, subjects: tuple[str, ...], refused_by: tuple[str, ...]
    ) -> list[Recorded]:
        """The run's messages on ``subjects`` in the window, less what ``refused_by`` refused."""
        return await read_run(
            js,
            self.run_id,
            subjects,
            start=self.start,
            end=self.end,
            refused_by=refused_by,
            skipped=self.skipped,
        )


async def stage_replay(
    js: JetStreamContext,
    db: Database | None,
    *,
    stage: str,
    through: str | None,
    run_id: str,
    replay_run: str,
    settings: ModeSettings,
    strategy_config: Path | None = None,
    overrides: dict[str, str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> StageDiff:
    check_stages(stage, through)
    request = StageReplay(
        stage, through, run_id, replay_run, settings, strategy_config, dict(overrides or {}), start, end
    )
    if stage == "agent":
        diff = await _replay_agent(js, db, request)
    elif stage == "executor":
        diff = await _replay_executor(js, request)
    elif through is None:
        diff = await _replay_risk(js, db, request)
    else:
        diff = await _replay_loop(js, db, request)
    diff.skipped = dict(sorted(request.skipped.items()))
    return diff


async def _replay_risk(js: JetStreamContext, db: Database | None, r: StageReplay) -> StageDiff:
    recorded = await r.read(
        js, (*risk_stage.INPUTS, *risk_stage.OUTPUTS, *risk_stage.READS), risk_stage.REFUSED_BY
    )
    diff, _ = await risk_stage.replay_risk(
        recorded,
        original_run=r.run_id,
        replay_run=r.replay_run,
        settings=r.settings,
        strategy_config=r.strategy_config,
        overrides=r.overrides,
        history=recorded_hours(db),
    )
    return diff


async def _replay_executor(js: JetStreamContext, r: StageReplay) -> StageDiff:
    subjects = (*executor_stage.INPUTS, *executor_stage.OUTPUTS, *executor_stage.READS)
    recorded = await r.read(js, subjects, executor_stage.REFUSED_BY)
    diff, _ = await executor_stage.replay_executor(
        recorded, original_run=r.run_id, replay_run=r.replay_run, settings=r.settings, overrides=r.overrides
    )
    return diff


async def _replay_loop(js: JetStreamContext, db: Database | None, r: StageReplay) -> StageDiff:
    recorded = await r.read(js, (*loop_stage.INPUTS, *loop_stage.OUTPUTS), loop_stage.REFUSED_BY)
    candles = [m.message for m in recorded if isinstance(m.message, MinuteCandle)]
    recompute = not any(isinstance(m.message, IndicatorSnapshot) for m in recorded)
    if recompute:  # aged out of INDICATORS (the shortest retention): the indicator runs again
        r.skipped["indicator outputs aged out of the stream: recomputed from the candles"] += 1
        if not candles:
            candles = await run_candles(js, db, r.run_id, start=r.start, end=r.end, skipped=r.skipped)
    history: list[MinuteCandle] = []
    if db is not None and candles:
        first = min(c.ts_open for c in candles)
        history = await candles_from_db(db, sorted({c.symbol for c in candles}), first - HISTORY, first)
    records = None
    if db is not None:
        from services.agent.state import CallRecordStore

        records = CallRecordStore(db)
    diff, _ = await loop_stage.replay_loop(
        recorded,
        history,
        original_run=r.run_id,
        replay_run=r.replay_run,
        settings=r.settings,
        strategy_config=r.strategy_config,
        overrides=r.overrides,
        records=records,
        recompute=recompute,
        candles=candles,
        hours=recorded_hours(db),
        identity=NUMBERS if r.skipped[FROM_MARKET_DATA] else BYTES,
    )
    return diff


def recorded_hours(db: Database | None) -> RecordedHours | None:
    """Risk's read of the hourly closes it seeds its volatility windows from (``market_data``), as
    the service reads them; None without a database (only the run's recorded hours then)."""
    if db is None:
        return None
    from services.risk.state import recorded_hourly_closes

    return partial(recorded_hourly_closes, db)


async def _replay_agent(js: JetStreamContext, db: Database | None, r: StageReplay) -> StageDiff:
    from services.agent.app import build_providers
    from services.agent.graph import InlineReviewer
    from services.agent.prompts import load_prompts
    from services.agent.recording import Caller, CallSource
    from services.agent.settings import load_params
    from services.agent.state import CallRecordStore

    if db is None:
        raise ValueError("an agent replay reads llm_call_records and market_data: set COINPILOT_DATABASE_URL")
    recorded = await r.read(
        js, (*agent_stage.INPUTS, *agent_stage.OUTPUTS, *agent_stage.READS), agent_stage.REFUSED_BY
    )
    agent = r.settings.agent
    caller = Caller(build_providers(agent), CallSource.LIVE, CallRecordStore(db))
    reviewer = InlineReviewer(
        caller,
        load_prompts(agent.prompt_version),
        timeout_seconds=agent.ai_timeout_seconds,
        max_tokens=agent.llm_max_tokens,
    )
    symbols = sorted({m.message.symbol for m in recorded if hasattr(m.message, "symbol")})
    first = min((m.message.ts_event for m in recorded), default=None)
    history = await candles_from_db(db, symbols, first - HISTORY, first) if first is not None else []
    try:
        diff, _ = await agent_stage.replay_agent(
            recorded,
            history,
            original_run=r.run_id,
            replay_run=r.replay_run,
            settings=agent,
            params=load_params(r.strategy_config),
            reviewer=reviewer,
            overrides=r.overrides,
        )
    finally:
        await caller.close()
    return diff

"""Replay the agent stage of a recorded run on its own, in process: the same proposals reviewed
again, with the recorded verdicts answering offline where nothing that matters changed.

The recorded inputs are the run's proposals (``orders.proposed``) and hourly candles, and what
``market_data`` held before the run (the context warms from it). The agent's own handler
(``services.agent.service``) reviews them over memory stores under a new run id, with a caller
in ``live`` mode over the recorded calls (``llm_call_records``): a call whose inputs (prompt
version, model, context) are unchanged has its record and is answered from it without a request;
a new prompt version or model is sent to the provider and recorded, so running the same what-if
again is offline too. The diff sets each proposal's original decision (from ``ai.decisions``)
beside the new one, with their reason codes and reasoning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from apps.stage_replay.diff import StageDiff, decision_verdict, order_row
from apps.stage_replay.recorded import Recorded
from coinpilot.contracts import AiDecision, Contract, HourlyCandle, MinuteCandle, OrderProposed
from services.agent.core import AgentParams
from services.agent.graph import Reviewer
from services.agent.service import in_memory_service
from services.agent.settings import AgentSettings
from services.indicator.core import hourly_buckets

INPUTS = ("candles.1h.*", "orders.proposed.*")
OUTPUTS = ("ai.decisions.*",)
READS = ("candles.1m.*",)
#: The services whose dead letters in the run are no input here (they refused them then).
REFUSED_BY = ("agent", "collector")
log = logging.getLogger("coinpilot.stage_replay")


async def replay_agent(
    recorded: Sequence[Recorded],
    history: Sequence[MinuteCandle],
    *,
    original_run: str,
    replay_run: str,
    settings: AgentSettings,
    params: AgentParams,
    reviewer: Reviewer,
    overrides: dict[str, str] | None = None,
) -> tuple[StageDiff, list[Contract]]:
    """Review the recorded proposals again; the diff against the recorded decisions and the new outputs."""
    minutes: dict[str, list[MinuteCandle]] = {}
    for candle in (*history, *(r.message for r in recorded if isinstance(r.message, MinuteCandle))):
        minutes.setdefault(candle.symbol, []).append(candle)
    for series in minutes.values():
        series.sort(key=lambda c: c.ts_open)

    def hourly_candles_of(symbol: str, start: datetime, end: datetime) -> list[HourlyCandle]:
        return hourly_buckets([c for c in minutes.get(symbol, ()) if start <= c.ts_open < end])

    agent = in_memory_service(settings, params, reviewer, hourly_candles_of, log)
    outputs: list[Contract] = []
    proposals: list[OrderProposed] = []
    for r in recorded:
        m = r.message
        if isinstance(m, HourlyCandle):
            await agent.add_hourly_candle(replay_run, m)
        elif isinstance(m, OrderProposed):
            proposals.append(m)
            outputs.extend(await agent.decide(replay_run, m))
    original = {m.order_id: m for r in recorded if isinstance(m := r.message, AiDecision)}
    new = {m.order_id: m for m in outputs if isinstance(m, AiDecision)}
    rows = [
        order_row(p, decision_verdict(original.get(p.order_id)), decision_verdict(new.get(p.order_id)))
        for p in proposals
    ]
    originals = [original[p.order_id].to_json() for p in proposals if p.order_id in original]
    diff = StageDiff(
        stage="agent",
        original_run=original_run,
        replay_run=replay_run,
        overrides=dict(overrides or {}),
        rows=rows,
        identical_outputs=originals == [new[p.order_id].to_json() for p in proposals if p.order_id in new],
    )
    return diff, outputs

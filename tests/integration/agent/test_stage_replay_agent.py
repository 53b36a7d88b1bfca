"""`coinpilot replay-stage --stage agent` (issue 22): the recorded proposals reviewed again.

The original run is the backtest engine reviewing with the real ``anthropic`` SDK against the
local fake Anthropic server, recording every call in ``llm_call_records``; what its stages sent
(hourly candles, proposals, decisions) is published into JetStream under its run id, as the
services publish them. Replayed with the same prompt, the agent answers every proposal from the
records: zero requests, every decision byte for byte. With a new prompt version the calls go to
the provider and are recorded; the same what-if run again makes zero requests and gives the same
diff.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from apps.backtest.run import split_window, to_series
from apps.demo import sample_files
from apps.stage_replay.agent_stage import replay_agent
from apps.stage_replay.loop_stage import RecordingEngine
from apps.stage_replay.recorded import read_run
from coinpilot.bus import ensure_streams
from coinpilot.bus.publisher import Bus
from coinpilot.candle_files import load_candles
from coinpilot.contracts import AiDecision, AiVerdict, HourlyCandle, OrderProposed
from coinpilot.db import Database
from services.agent.app import build_providers
from services.agent.graph import GUARDIAN_TOOL, InlineReviewer
from services.agent.prompts import PROMPTS_DIR, load_prompts
from services.agent.recording import Caller, CallSource
from services.agent.settings import load_params
from services.agent.state import CallRecordStore
from tests.integration.agent.conftest import agent_settings
from tests.support.fake_llm import FakeLlmServer, Reply, SeenRequest

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


def verdicts(prefix: str) -> object:
    """Analyst CONFIRMs most, REJECTs every third; the Guardian says SAFE; reasoning names the prompt."""
    counter = itertools.count()

    def reply(seen: SeenRequest) -> Reply:
        n = next(counter)
        if seen.tool_name == GUARDIAN_TOOL[0]:
            return Reply.guardian("SAFE", f"{prefix} guardian {n}")
        if n % 3 == 0:
            return Reply.analyst("REJECT", 80, f"{prefix} analyst {n}: falling knife")
        return Reply.analyst("CONFIRM", 75, f"{prefix} analyst {n}: rebound")

    return reply


def reviewer(fake_llm: FakeLlmServer, db: Database, prompts_dir: Path, version: str) -> InlineReviewer:
    settings = agent_settings(fake_llm, llm_mode_source="live")
    caller = Caller(build_providers(settings), CallSource.LIVE, CallRecordStore(db))
    return InlineReviewer(caller, load_prompts(version, prompts_dir), timeout_seconds=30)


async def test_an_agent_replay_answers_from_the_records_and_records_a_new_prompt(
    agent_db: Database, fake_llm: FakeLlmServer, nats_url: str, tmp_path: Path
) -> None:
    candles = load_candles(sample_files())
    window = split_window(candles, datetime(2023, 3, 26, tzinfo=UTC), datetime(2023, 4, 2, tzinfo=UTC))
    settings = agent_settings(fake_llm, llm_mode_source="live")
    run_id = f"agent-rec-{uuid.uuid4().hex[:8]}"

    fake_llm.responder = verdicts("v1")  # type: ignore[assignment]
    original = RecordingEngine(run_id)
    original.agent.routing = settings.routing()
    original.agent.reviewer = reviewer(fake_llm, agent_db, PROMPTS_DIR, "v1")
    try:
        await original.run_series(to_series(window))
    finally:
        await original.agent.reviewer.caller.close()
    sent = [m for m in original.sent if isinstance(m, HourlyCandle | OrderProposed | AiDecision)]
    decided = [m for m in sent if isinstance(m, AiDecision)]
    reviewed = [d for d in decided if d.decision is not AiVerdict.SKIP]
    assert len(reviewed) >= 5 and {AiVerdict.CONFIRM, AiVerdict.REJECT} <= {d.decision for d in reviewed}

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        bus = Bus(js, "operator")
        for message in sent:
            await bus.publish(message, run_id=run_id)
        recorded = await read_run(js, run_id, ("candles.1h.*", "orders.proposed.*", "ai.decisions.*"))
    finally:
        await nc.close()
    assert len(recorded) == len(sent)
    history = [*window.warmup, *window.trade]

    async def replay(prompts_dir: Path, version: str, replay_run: str):  # type: ignore[no-untyped-def]
        review = reviewer(fake_llm, agent_db, prompts_dir, version)
        try:
            return await replay_agent(
                recorded,
                history,
                original_run=run_id,
                replay_run=replay_run,
                settings=settings,
                params=load_params(None),
                reviewer=review,
            )
        finally:
            await review.caller.close()

    requests = fake_llm.count()
    same, outputs = await replay(PROMPTS_DIR, "v1", f"{run_id}-same")
    assert fake_llm.count() == requests, "unchanged inputs are answered from the records"
    assert same.identical_outputs and not same.changed and len(same.rows) == len(decided)
    assert [m.to_json() for m in outputs if isinstance(m, AiDecision)] == [d.to_json() for d in decided]

    v2 = tmp_path / "prompts"
    v2.mkdir()
    for node in ("analyst", "guardian"):
        text = (PROMPTS_DIR / f"{node}_v1.md").read_text()
        (v2 / f"{node}_v2.md").write_text(text + "\nBe stricter about falling knives.\n")
    fake_llm.responder = verdicts("v2")  # type: ignore[assignment]
    what_if, _ = await replay(v2, "v2", f"{run_id}-v2")
    new_requests = fake_llm.count() - requests
    assert new_requests >= len(reviewed) // 2, "a new prompt goes to the provider"
    asked = [r for r in what_if.rows if r.new.outcome != "SKIP"]
    assert asked and all("v2 " in (r.new.message or "") for r in asked)
    assert not what_if.identical_outputs and what_if.changed

    again, _ = await replay(v2, "v2", f"{run_id}-v2")
    assert fake_llm.count() - requests == new_requests, "the what-if itself replays offline"
    assert again.rows == what_if.rows and again.counts() == what_if.counts()

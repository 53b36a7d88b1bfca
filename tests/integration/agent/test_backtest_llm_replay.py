"""``coinpilot backtest --llm replay``: a backtest answers from the verdicts a live run recorded.

The live run is the backtest engine with the agent's reviewer on the real ``anthropic`` SDK against
the local fake Anthropic server, recording every call in ``llm_call_records``. The replayed
backtest (the path the command runs) then books byte-identical AI decisions and fills without a
single request, and a record deleted afterwards turns into an AI_RECORD_MISSING rejection.
"""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import delete

from apps.backtest.engine import Engine
from apps.backtest.run import run_backtest, split_window, to_series
from apps.backtest.settings import ModeSettings
from apps.demo import sample_files
from coinpilot.candle_files import load_candles
from coinpilot.contracts import AiVerdict, RejectReason
from coinpilot.db import Database, LlmCallRecord
from services.agent.app import build_providers
from services.agent.graph import GUARDIAN_TOOL, Reviewer
from services.agent.prompts import load_prompts
from services.agent.recording import Caller, CallSource
from services.agent.state import CallRecordStore
from tests.integration.agent.conftest import agent_settings
from tests.support.fake_llm import FakeLlmServer, Reply, SeenRequest

pytestmark = [pytest.mark.postgres]

REPLAY = ModeSettings.from_environment(llm="replay")  # what `coinpilot backtest --llm replay` runs with


def varied_verdicts() -> object:
    """Confirm or reject, confident or not, safe or warning: every branch of the graph occurs."""
    counter = itertools.count()

    def reply(seen: SeenRequest) -> Reply:
        n = next(counter)
        if seen.tool_name == GUARDIAN_TOOL[0]:
            return Reply.guardian("WARNING" if n % 4 == 0 else "SAFE", f"guardian {n}")
        if n % 5 == 0:
            return Reply.analyst("REJECT", 80, f"analyst {n}: falling knife")
        return Reply.analyst("CONFIRM", 50 + n % 45, f"analyst {n}: rebound")

    return reply


async def test_a_backtest_replays_the_recorded_verdicts_offline(
    agent_db: Database, fake_llm: FakeLlmServer
) -> None:
    window = split_window(load_candles(sample_files()), None, None)
    fake_llm.responder = varied_verdicts()  # type: ignore[assignment]
    store = CallRecordStore(agent_db)
    settings = agent_settings(fake_llm, llm_mode_source="live")
    live_engine = Engine("bt-record")
    live_engine.agent.routing = settings.routing()
    caller = Caller(build_providers(settings), CallSource.LIVE, store)
    live_engine.agent.reviewer = Reviewer(caller, load_prompts(settings.prompt_version), timeout_seconds=30)
    try:
        live = await live_engine.run_series(to_series(window))
    finally:
        await caller.close()
    requests = fake_llm.count()
    verdicts = {(d.decision, d.reason_code) for d in live.decisions}
    assert requests > 20 and live.fills
    assert {(AiVerdict.CONFIRM, None), (AiVerdict.REJECT, RejectReason.AI_REJECTED)} <= verdicts
    assert (AiVerdict.REJECT, RejectReason.AI_RISK_WARNING) in verdicts

    replayed, _ = await run_backtest(window, run_id="bt-record", settings=REPLAY, records=store)

    assert fake_llm.count() == requests
    assert [d.to_json() for d in replayed.decisions] == [d.to_json() for d in live.decisions]
    assert [f.to_json() for f in replayed.fills] == [f.to_json() for f in live.fills]

    # one record lost: that review becomes a rejection with its own code, still without a request
    reviewed = next(d for d in live.decisions if d.decision is AiVerdict.CONFIRM)
    async with agent_db.session() as session:
        keys = (await session.execute(LlmCallRecord.__table__.select())).all()
        assert keys
        removed = await session.execute(
            delete(LlmCallRecord).where(LlmCallRecord.request["order_id"].as_string() == reviewed.order_id)
        )
        assert removed.rowcount >= 1
    again, _ = await run_backtest(window, run_id="bt-record", settings=REPLAY, records=store)
    assert fake_llm.count() == requests
    missing = next(d for d in again.decisions if d.order_id == reviewed.order_id)
    assert (missing.decision, missing.reason_code) == (AiVerdict.REJECT, RejectReason.AI_RECORD_MISSING)

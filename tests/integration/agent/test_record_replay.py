"""Record then replay: a live run against the fake LLM servers, replayed from llm_call_records,
gives byte-identical decisions with zero HTTP requests; a missing record never calls out."""

from __future__ import annotations

from datetime import datetime

import pytest

from coinpilot.contracts import AiVerdict, RejectReason
from tests.integration.agent.conftest import ServiceFactory
from tests.integration.agent.test_agent_service import decide, feed_context
from tests.support.fake_llm import ANTHROPIC, FakeLlmServer, Reply
from tests.unit.agent.factories import order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SYMBOLS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE")


async def test_replay_reproduces_every_live_decision_without_a_request(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, t0: datetime
) -> None:
    live = make_agent(ai_timeout_seconds=0.5)
    replay = make_agent(ai_timeout_seconds=0.5, llm_mode_source="replay")
    for symbol in SYMBOLS:
        at = await feed_context(live, t0, symbol, run_id="rec-live")
        await feed_context(replay, t0, symbol, run_id="rec-replay")
    fake_llm.script(
        ANTHROPIC,
        Reply.analyst("CONFIRM", 81, "Hammer."),  # KRW-BTC approved
        Reply.guardian("SAFE", "Calm."),
        Reply.analyst("REJECT", 90, "Dead-cat bounce."),  # KRW-ETH rejected
        Reply.analyst("CONFIRM", 70),  # KRW-XRP: guardian warns
        Reply.guardian("WARNING", "FOMO."),
        Reply.rate_limited(),  # KRW-SOL: provider error
        Reply.analyst("CONFIRM", 95).held(),  # KRW-DOGE: times out
    )
    orders = [order(at, symbol=s) for s in SYMBOLS]
    recorded = [await decide(live, o, run_id="rec-live") for o in orders]
    assert [r[0].decision for r in recorded] == [AiVerdict.CONFIRM] + [AiVerdict.REJECT] * 4
    assert [r[0].reason_code for r in recorded[1:]] == [
        RejectReason.AI_REJECTED,
        RejectReason.AI_RISK_WARNING,
        RejectReason.AI_ERROR,
        RejectReason.AI_TIMEOUT,
    ]
    requests_after_live = fake_llm.count()
    assert requests_after_live == 7

    replayed = [await decide(replay, o, run_id="rec-replay") for o in orders]

    assert fake_llm.count() == requests_after_live
    assert [[m.to_json() for m in r] for r in replayed] == [[m.to_json() for m in r] for r in recorded]


async def test_a_missing_record_rejects_instead_of_calling_the_model(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, t0: datetime
) -> None:
    replay = make_agent(llm_mode_source="replay")
    proposed = order(await feed_context(replay, t0, run_id="rec-missing"))
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 99), Reply.guardian("SAFE"))
    decision, rejected = await decide(replay, proposed, run_id="rec-missing")
    assert (decision.decision, decision.reason_code, decision.confidence) == (
        AiVerdict.REJECT,
        RejectReason.AI_RECORD_MISSING,
        None,
    )
    assert decision.reasoning.startswith("AI Record Missing: no recorded call for key ")
    assert rejected.reason is RejectReason.AI_RECORD_MISSING  # type: ignore[union-attr]
    assert fake_llm.count() == 0

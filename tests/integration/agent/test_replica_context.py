"""Two agent replicas share ``agent-candles``: each book holds only its share of the hourly
candles, and an order fills the holes of its context from ``market_data`` (issue 21).

Over real PostgreSQL and Redis: the hours stored in ``market_data`` go out on ``candles.1h``
alternately to replica A and replica B (as a shared durable deals them), and all of them to a
single agent of another run as the reference. The order decided on B is reviewed on the very
prompt the reference sent, context included: B is answered from the reference's call record
(same sha256 of the prompt), so the model is asked once.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from coinpilot.contracts import AiVerdict, RejectReason
from coinpilot.db import Database
from services.agent.core import has_holes
from services.agent.state import MarketDataHistory
from tests.integration.agent.conftest import ServiceFactory
from tests.integration.agent.test_agent_nats import seed_market_data
from tests.integration.agent.test_agent_service import decide, delivery
from tests.support.fake_llm import ANTHROPIC, FakeLlmServer, Reply
from tests.unit.agent.factories import HOUR, order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SYM = "KRW-HOLE"  # no other test stores candles of this market


async def test_an_order_on_a_replica_with_half_the_hourly_candles_sees_the_whole_context(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, t0: datetime
) -> None:
    at = await seed_market_data(agent_db, t0, (SYM,))
    hours = await MarketDataHistory(agent_db).hourly_candles(SYM, t0, t0 + 24 * HOUR)
    assert len(hours) == 24
    a, b, reference = make_agent(), make_agent(), make_agent()
    for i, candle in enumerate(hours):
        await (a if i % 2 == 0 else b).on_candle(delivery(candle, "live"))
        await reference.on_candle(delivery(candle, "ref"))
    assert len(b.book("live").bars[SYM]) < 24 and has_holes(b.book("live"), SYM, at)
    fake_llm.script(ANTHROPIC, Reply.analyst("REJECT", 85, "Dead-cat bounce."))
    proposed = order(at, symbol=SYM)

    expected, _ = await decide(reference, proposed, run_id="ref")
    decision, _ = await decide(b, proposed, run_id="live")

    assert (decision.decision, decision.reason_code) == (AiVerdict.REJECT, RejectReason.AI_REJECTED)
    assert decision.reasoning == expected.reasoning
    assert fake_llm.count() == 1  # B's prompt, its 24 hours included, is the reference's
    assert b.book("live").bars[SYM] == reference.book("ref").bars[SYM]

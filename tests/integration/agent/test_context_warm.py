"""Every run's context is warmed from ``market_data`` on event time (BEHAVIOUR §5.2, rebuild).

A replay run id used to start with an empty book, so its first 12 hours were ``AI_CONTEXT_SHORT``
skips where a live deployment had context. Now the first order or hourly candle of a run for a
symbol loads the hours that had closed by that message's ``ts_event``; hours from ``candles.1h``
win. Over real PostgreSQL and Redis, then through the agent service on a private NATS.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

import nats
import pytest
from redis.asyncio import Redis

from apps.host import ServiceHost
from coinpilot.bus import Bus
from coinpilot.contracts import AiDecision, AiVerdict, RejectReason
from coinpilot.db import Database
from coinpilot.errors import TransientError
from coinpilot.settings import CommonSettings
from services.agent.app import create_service
from services.agent.context import Bar
from services.agent.core import AgentParams
from tests.integration.agent.conftest import ServiceFactory, agent_settings
from tests.integration.agent.test_agent_nats import Outputs, agent_env, seed_market_data
from tests.integration.agent.test_agent_service import decide, delivery
from tests.support.fake_llm import FakeLlmServer
from tests.support.servers import NatsProcess, isolated_nats, wait_for
from tests.unit.agent.factories import HOUR, gentle_uptrend, hourly_candle, order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SYM = "KRW-WARM"  # no other test stores candles of this market


def seeded_bars(t0: datetime) -> tuple[Bar, ...]:
    """The hours ``seed_market_data`` stores: open at :00, then the close, 0.5 a minute."""
    return tuple(
        Bar(b.ts_open, b.open, max(b.open, b.close), min(b.open, b.close), b.close, 30.0)
        for b in gentle_uptrend(24, t0=t0)
    )


async def test_a_replay_runs_first_order_gets_its_context_from_market_data(
    make_agent: ServiceFactory, agent_db: Database, t0: datetime
) -> None:
    at = await seed_market_data(agent_db, t0, (SYM,))
    await seed_market_data(agent_db, t0 + 24 * HOUR, (SYM,))  # hours after the order: never read
    agent = make_agent(llm_mode_source="rules")

    decision, _ = await decide(agent, order(at, symbol=SYM), run_id="demo")

    assert (decision.decision, decision.reason_code) == (AiVerdict.CONFIRM, None)
    assert agent.book("demo").bars[SYM] == seeded_bars(t0)
    assert SYM not in agent.book("live").bars  # each run has its own book


async def test_a_runs_first_hourly_candle_warms_the_hours_before_it_and_wins_its_own(
    make_agent: ServiceFactory, agent_db: Database, t0: datetime
) -> None:
    await seed_market_data(agent_db, t0, (SYM,))
    agent = make_agent(llm_mode_source="rules")
    last = gentle_uptrend(24, t0=t0)[-1]
    delivered = Bar(last.ts_open, last.open, 999.0, last.low, 999.0, 1.0)  # unlike the stored hour

    await agent.on_candle(delivery(hourly_candle(delivered, SYM), run_id="demo-2"))

    assert agent.book("demo-2").bars[SYM] == (*seeded_bars(t0)[:-1], delivered)


async def test_a_thin_market_data_history_still_gives_a_short_context_skip(
    make_agent: ServiceFactory, agent_db: Database, t0: datetime
) -> None:
    at = await seed_market_data(agent_db, t0, (SYM,))
    agent = make_agent(llm_mode_source="rules")

    decision, _ = await decide(agent, order(at - 19 * HOUR, symbol=SYM), run_id="demo-3")

    assert (decision.decision, decision.reason_code) == (AiVerdict.SKIP, RejectReason.AI_CONTEXT_SHORT)
    assert decision.reasoning == "AI context insufficient (5 < 12)"


async def test_a_failed_warm_is_retried_not_decided_without_context(
    redis: Redis, fake_llm: FakeLlmServer, t0: datetime
) -> None:
    unreachable = Database("postgresql+asyncpg://coinpilot:x@127.0.0.1:9/none")
    agent = create_service(
        agent_settings(fake_llm, llm_mode_source="rules"),
        AgentParams(),
        unreachable,
        redis,
        logging.getLogger("t"),
    )
    try:
        with pytest.raises(TransientError):
            await agent.on_candle(delivery(hourly_candle(gentle_uptrend(1, t0=t0)[0], SYM), run_id="demo-4"))
        assert SYM not in agent.book("demo-4").bars
    finally:
        await agent.close()
        await unreachable.dispose()


@pytest.fixture
async def private_nats() -> AsyncIterator[NatsProcess]:
    """A NATS of this test alone: no other test's orders reach the agent's durables."""
    async with isolated_nats() as server:
        yield server


@pytest.mark.nats
async def test_the_agent_service_decides_a_replay_runs_first_order_with_stored_context(
    private_nats: NatsProcess,
    agent_db: Database,
    pg_url: str,
    redis_url: str,
    redis: Redis,
    fake_llm: FakeLlmServer,
    t0: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = await seed_market_data(agent_db, t0, (SYM,))
    env = agent_env(fake_llm, private_nats.url, pg_url, redis_url, COINPILOT_LLM_MODE_SOURCE="rules")
    for name, value in {**env, "COINPILOT_SYMBOLS": SYM}.items():
        monkeypatch.setenv(name, value)
    host = ServiceHost(["agent"], CommonSettings(), serve_http=False)
    await host.start()
    nc = await nats.connect(private_nats.url)
    outputs = Outputs()
    await outputs.subscribe(nc)
    try:
        proposed = order(at, symbol=SYM, amount="1800000")
        await Bus(nc.jetstream(), "test").publish(proposed, run_id="demo")
        await wait_for(lambda: len(outputs.of(AiDecision)) == 1 and len(outputs.messages) == 2, timeout=15)

        (decision,) = outputs.of(AiDecision)
        assert (decision.order_id, decision.decision, decision.reason_code) == (
            proposed.order_id,
            AiVerdict.CONFIRM,
            None,
        )
        assert decision.model_used == "rules:rules-v1 (primary)"
        assert host.runtimes[0].extras["agent"].book("demo").bars[SYM] == seeded_bars(t0)
        assert fake_llm.count() == 0
    finally:
        await nc.close()
        await host.stop()

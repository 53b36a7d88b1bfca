"""The catalogue metrics (``coinpilot_ai_*``, tests/deploy/support.py) move exactly as the
dashboards and alerts assume, for each way an order can end.

Each case takes the catalogue's counter samples before the order and asserts the full set of
series that moved, so a metric counted twice or under the wrong labels fails too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from coinpilot.cache import keys
from coinpilot.contracts import AiVerdict, RejectReason
from tests.integration.agent.conftest import ServiceFactory
from tests.integration.agent.test_agent_service import decide, delivery, feed_context
from tests.support.fake_llm import ANTHROPIC, FakeLlmServer, Reply
from tests.unit.agent.factories import gentle_uptrend, hourly_candle, order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

COUNTED = frozenset(
    {
        "coinpilot_ai_requests_total",
        "coinpilot_ai_decisions_total",
        "coinpilot_ai_prefilter_skips_total",
        "coinpilot_ai_guardrail_blocks_total",
        "coinpilot_ai_request_seconds_count",
        "coinpilot_ai_cost_usd_total",
    }
)
HAIKU = "model=claude-haiku-4-5-20251001,provider=anthropic"
ONE_CALL_USD = 0.000592  # (420 x 0.80 + 64 x 4.00) / 1e6


def counted() -> dict[str, float]:
    """Every catalogue counter series as ``name{label=value,...}`` (labels sorted by name)."""
    series: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name in COUNTED:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                series[f"{s.name}{{{labels}}}"] = s.value
    return series


def moved(before: dict[str, float]) -> dict[str, float]:
    return {
        name: round(value - before.get(name, 0.0), 8)
        for name, value in counted().items()
        if value != before.get(name, 0.0)
    }


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_an_approval_counts_two_calls_their_latency_and_cost_and_clears_the_streak(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    await redis.set(keys.ai_error_streak(), 2, ex=keys.AI_ERROR_STREAK_TTL_SECONDS)
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 72), Reply.guardian("SAFE"))
    before = counted()

    decision, _ = await decide(agent, proposed)

    assert decision.decision is AiVerdict.CONFIRM
    assert moved(before) == {
        f"coinpilot_ai_requests_total{{{HAIKU},status=ok}}": 2,
        "coinpilot_ai_request_seconds_count{provider=anthropic}": 2,
        f"coinpilot_ai_cost_usd_total{{{HAIKU}}}": 2 * ONE_CALL_USD,
        "coinpilot_ai_decisions_total{decision=CONFIRM,reason=}": 1,
    }
    assert (gauge("coinpilot_ai_error_streak"), gauge("coinpilot_ai_global_block")) == (0, 0)


async def test_an_analyst_rejection_counts_one_call_and_a_reject_with_its_reason(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("REJECT", 88, "Dead-cat bounce."))
    before = counted()

    await decide(agent, proposed)

    assert moved(before) == {
        f"coinpilot_ai_requests_total{{{HAIKU},status=ok}}": 1,
        "coinpilot_ai_request_seconds_count{provider=anthropic}": 1,
        f"coinpilot_ai_cost_usd_total{{{HAIKU}}}": ONE_CALL_USD,
        "coinpilot_ai_decisions_total{decision=REJECT,reason=AI_REJECTED}": 1,
    }


async def test_a_timeout_counts_a_timed_out_call_without_cost_and_shows_the_error_streak(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, t0: datetime
) -> None:
    agent = make_agent(ai_timeout_seconds=0.4)
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 90).held())
    before = counted()

    await decide(agent, proposed)

    assert moved(before) == {
        f"coinpilot_ai_requests_total{{{HAIKU},status=timeout}}": 1,
        "coinpilot_ai_request_seconds_count{provider=anthropic}": 1,
        "coinpilot_ai_decisions_total{decision=REJECT,reason=AI_TIMEOUT}": 1,
    }
    assert (gauge("coinpilot_ai_error_streak"), gauge("coinpilot_ai_global_block")) == (1, 0)


async def test_a_budget_block_counts_a_guardrail_block_and_a_skip_but_no_call(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    await redis.set(keys.ai_usage_hour(proposed.ts_event), 20, ex=keys.AI_USAGE_HOUR_TTL_SECONDS)
    before = counted()

    decision, _ = await decide(agent, proposed)

    assert decision.reason_code is RejectReason.AI_GUARDRAIL_BLOCKED
    assert moved(before) == {
        "coinpilot_ai_guardrail_blocks_total{reason=HOURLY_BUDGET}": 1,
        "coinpilot_ai_decisions_total{decision=SKIP,reason=AI_GUARDRAIL_BLOCKED}": 1,
    }
    assert fake_llm.count() == 0


async def test_the_fifth_error_in_a_row_raises_the_global_block_gauge_and_blocks_the_next_order(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, t0: datetime, redis: Redis
) -> None:
    agent = make_agent()
    at = await feed_context(agent, t0)
    await feed_context(agent, t0, "KRW-ETH")
    await redis.set(keys.ai_error_streak(), 4, ex=keys.AI_ERROR_STREAK_TTL_SECONDS)
    fake_llm.script(ANTHROPIC, Reply.server_error())
    before = counted()

    await decide(agent, order(at))
    assert (gauge("coinpilot_ai_error_streak"), gauge("coinpilot_ai_global_block")) == (5, 1)
    decision, _ = await decide(agent, order(at, symbol="KRW-ETH"))

    assert decision.reasoning.startswith("Global AI block active")
    assert moved(before) == {
        f"coinpilot_ai_requests_total{{{HAIKU},status=error}}": 1,
        "coinpilot_ai_request_seconds_count{provider=anthropic}": 1,
        "coinpilot_ai_decisions_total{decision=REJECT,reason=AI_ERROR}": 1,
        "coinpilot_ai_guardrail_blocks_total{reason=GLOBAL_BLOCK}": 1,
        "coinpilot_ai_decisions_total{decision=SKIP,reason=AI_GUARDRAIL_BLOCKED}": 1,
    }


async def test_a_thin_context_counts_a_prefilter_skip_and_not_a_guardrail_block(
    make_agent: ServiceFactory, t0: datetime
) -> None:
    agent = make_agent()
    bars = gentle_uptrend(6, t0=t0)
    for bar in bars:
        await agent.on_candle(delivery(hourly_candle(bar)))
    before = counted()

    await decide(agent, order(bars[-1].ts_close + timedelta(minutes=1)))

    assert moved(before) == {
        "coinpilot_ai_prefilter_skips_total{reason=AI_CONTEXT_SHORT}": 1,
        "coinpilot_ai_decisions_total{decision=SKIP,reason=AI_CONTEXT_SHORT}": 1,
    }


async def test_a_replay_run_never_moves_the_live_gauges(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, redis: Redis, t0: datetime
) -> None:
    agent = make_agent(ai_timeout_seconds=0.4)
    await agent.guard.refresh_gauges()  # the live keys are empty: both gauges read 0
    assert (gauge("coinpilot_ai_error_streak"), gauge("coinpilot_ai_global_block")) == (0, 0)
    proposed = order(await feed_context(agent, t0, run_id="replay-1"))
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 90).held())

    await decide(agent, proposed, run_id="replay-1")

    assert (await redis.get(keys.ai_error_streak("replay-1")) or b"").startswith(b"1|")
    assert (gauge("coinpilot_ai_error_streak"), gauge("coinpilot_ai_global_block")) == (0, 0)

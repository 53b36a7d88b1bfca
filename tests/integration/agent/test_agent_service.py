"""The agent's handler over real PostgreSQL and Redis, with the real SDKs against the fake LLM.

Each case ends in the §5 decision, the right ``agent_decisions`` / ``llm_usage_events`` rows, the
guardrail keys and the metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import select

from coinpilot.bus import Delivery
from coinpilot.cache import keys
from coinpilot.contracts import (
    AiDecision,
    AiVerdict,
    Contract,
    OrderApproved,
    OrderProposed,
    OrderRejected,
    RejectReason,
)
from coinpilot.db import AgentDecision, Database, LlmUsageEvent
from coinpilot.errors import TransientError
from services.agent.guard_redis_codec import encode
from services.agent.service import AgentService
from tests.integration.agent.conftest import ServiceFactory
from tests.support.fake_llm import ANTHROPIC, FakeLlmServer, Reply
from tests.support.servers import RedisProcess, wait_for
from tests.unit.agent.factories import gentle_uptrend, hourly_candle, order

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def until(head: object, ts: datetime, minutes: int) -> bytes:
    """A guardrail value: what it holds and when it ends in event time (``guard_redis_codec``)."""
    return encode(head, ts + timedelta(minutes=minutes)).encode()


def delivery(message: Contract, run_id: str = "live", deliveries: int = 1) -> Delivery:  # type: ignore[type-arg]
    return Delivery(message, message.subject(), run_id, message.msg_id(), deliveries, {})


async def feed_context(
    service: AgentService, t0: datetime, symbol: str = "KRW-BTC", run_id: str = "live"
) -> datetime:
    """24 closed hours before the order; returns the order's event time (one minute after)."""
    bars = gentle_uptrend(24, t0=t0)
    for bar in bars:
        await service.on_candle(delivery(hourly_candle(bar, symbol), run_id))
    return bars[-1].ts_close + timedelta(minutes=1)


async def decide(service: AgentService, proposed: OrderProposed, run_id: str = "live") -> Sequence[Contract]:
    return await service.on_order(delivery(proposed, run_id))


async def decision_row(db: Database, order_id: str, run_id: str = "live") -> AgentDecision:
    async with db.session() as s:
        return (
            await s.execute(
                select(AgentDecision).where(
                    AgentDecision.order_id == order_id, AgentDecision.run_id == run_id
                )
            )
        ).scalar_one()


async def usage(db: Database, order_id: str) -> list[LlmUsageEvent]:
    async with db.session() as s:
        rows = await s.execute(
            select(LlmUsageEvent)
            .where(LlmUsageEvent.meta["order_id"].astext == order_id)
            .order_by(LlmUsageEvent.id)
        )
        return list(rows.scalars())


async def test_confirm_and_safe_publish_the_unchanged_order_and_record_everything(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    at = await feed_context(agent, t0)
    proposed = order(at, amount="1800000")
    haiku = {"provider": "anthropic", "model": "claude-haiku-4-5-20251001"}
    requests_before = sample("coinpilot_ai_requests_total", **haiku, status="ok")
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 72, "Hammer."), Reply.guardian("SAFE", "Calm."))

    decision, approved = await decide(agent, proposed)

    assert isinstance(decision, AiDecision) and isinstance(approved, OrderApproved)
    assert (decision.decision, decision.confidence, decision.reason_code) == (AiVerdict.CONFIRM, 72, None)
    assert decision.model_used == "anthropic:claude-haiku-4-5-20251001 (primary)"
    assert decision.cost_usd == Decimal("0.00118400")  # 2 x (420 x 0.80 + 64 x 4.00) / 1e6
    assert (approved.order_id, approved.amount, approved.reference_price) == (
        proposed.order_id,
        proposed.amount,
        proposed.reference_price,
    )
    row = await decision_row(agent_db, proposed.order_id)
    assert (row.decision, row.confidence, row.model_used, row.prompt_hash) == (
        "CONFIRM",
        72,
        decision.model_used,
        agent.reviewer.prompts.sha256,
    )
    assert row.reasoning == "[Analyst] Hammer. | [Guardian] Calm."
    assert row.price_at_decision == Decimal("100000")
    rows = await usage(agent_db, proposed.order_id)
    assert [(r.route, r.status, r.input_tokens, r.output_tokens, r.estimated_cost_usd) for r in rows] == [
        ("ai_decision_analyst", "success", 420, 64, Decimal("0.00059200")),
        ("ai_decision_guardian", "success", 420, 64, Decimal("0.00059200")),
    ]
    assert all(r.feature == "ai_decision" and r.meta["symbol"] == "KRW-BTC" for r in rows)
    assert sample("coinpilot_ai_requests_total", **haiku, status="ok") == requests_before + 2  # both nodes
    assert await redis.get(keys.ai_usage_hour(at)) == b"1"
    assert await redis.exists(keys.ai_symbol_cooldown("KRW-BTC")) == 0


async def test_an_analyst_rejection_sets_the_first_cooldown(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("REJECT", 88, "Dead-cat bounce."))
    decision, rejected = await decide(agent, proposed)
    assert isinstance(rejected, OrderRejected)
    assert (rejected.reason, rejected.stage, decision.reason_code) == (
        RejectReason.AI_REJECTED,
        "agent",
        RejectReason.AI_REJECTED,
    )
    assert (await decision_row(agent_db, proposed.order_id)).decision == "REJECT"
    assert len(await usage(agent_db, proposed.order_id)) == 1
    assert await redis.get(keys.ai_symbol_cooldown("KRW-BTC")) == until(5, proposed.ts_event, 5)
    assert fake_llm.count() == 1


async def test_a_redelivered_order_is_answered_from_the_stored_decision(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 75), Reply.guardian("SAFE"))
    first = await decide(agent, proposed)
    reemitted_before = sample("coinpilot_agent_decisions_reemitted_total")
    again = await agent.on_order(delivery(proposed, deliveries=2))
    assert [m.to_json() for m in again] == [m.to_json() for m in first]
    assert fake_llm.count() == 2  # the model was not asked again
    assert sample("coinpilot_agent_decisions_reemitted_total") == reemitted_before + 1
    assert len(await usage(agent_db, proposed.order_id)) == 2
    assert await redis.get(keys.ai_usage_hour(proposed.ts_event)) == b"1"


async def test_confidence_59_is_stored_as_a_low_confidence_reject(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 59, "Weak."))
    _decision, rejected = await decide(agent, proposed)
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.AI_LOW_CONFIDENCE
    row = await decision_row(agent_db, proposed.order_id)
    assert (row.decision, row.confidence, row.reasoning) == (
        "REJECT",
        59,
        "[insufficient confidence: 59] Weak.",
    )


async def test_a_timeout_rejects_with_null_confidence_and_counts_as_an_error(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    agent = make_agent(ai_timeout_seconds=0.4)
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, Reply.analyst("CONFIRM", 90).held())
    _decision, rejected = await decide(agent, proposed)
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.AI_TIMEOUT
    row = await decision_row(agent_db, proposed.order_id)
    assert (row.decision, row.confidence, row.reason_code) == ("REJECT", None, "AI_TIMEOUT")
    rows = await usage(agent_db, proposed.order_id)
    assert [(r.route, r.status, r.error_type) for r in rows] == [
        ("ai_decision_analyst", "error", "timeout"),
        ("ai_decision_pipeline", "error", "timeout"),
    ]
    assert await redis.get(keys.ai_error_streak()) == until(1, proposed.ts_event, 60)
    assert await redis.get(keys.ai_symbol_cooldown("KRW-BTC")) == until(5, proposed.ts_event, 5)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply.rate_limited, "rate_limited"),
        (Reply.overloaded, "overloaded"),
        (Reply.server_error, "server_error"),
    ],
)
async def test_provider_errors_reject_with_ai_error_and_build_the_streak(
    make_agent: ServiceFactory,
    fake_llm: FakeLlmServer,
    agent_db: Database,
    redis: Redis,
    t0: datetime,
    reply: type[Reply],
    kind: str,
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    fake_llm.script(ANTHROPIC, reply())  # type: ignore[operator]
    decision, rejected = await decide(agent, proposed)
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.AI_ERROR
    assert decision.confidence == 0
    rows = await usage(agent_db, proposed.order_id)
    assert [(r.status, r.error_type) for r in rows] == [("error", kind)]
    assert await redis.get(keys.ai_error_streak()) == until(1, proposed.ts_event, 60)
    assert fake_llm.count() == 1


async def test_malformed_and_prose_answers_reject_as_invalid_output(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    at = await feed_context(agent, t0)
    await feed_context(agent, t0, "KRW-ETH")
    fake_llm.script(
        ANTHROPIC, Reply.tool({"decision": "YES", "confidence": 70, "reasoning": "r"}), Reply.prose("Buy it.")
    )
    for symbol in ("KRW-BTC", "KRW-ETH"):
        proposed = order(at, symbol=symbol)
        _, rejected = await decide(agent, proposed)
        assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.AI_INVALID_OUTPUT
        assert (await decision_row(agent_db, proposed.order_id)).confidence == 0
    assert await redis.exists(keys.ai_error_streak()) == 0  # a malformed answer is not an outage


async def test_thin_context_is_skipped_without_a_call_or_cooldown(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, agent_db: Database, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    bars = gentle_uptrend(6, t0=t0)
    for bar in bars:
        await agent.on_candle(delivery(hourly_candle(bar)))
    proposed = order(bars[-1].ts_close + timedelta(minutes=1))
    skips_before = sample("coinpilot_ai_prefilter_skips_total", reason="AI_CONTEXT_SHORT")
    decision, rejected = await decide(agent, proposed)
    assert (decision.decision, decision.reason_code, decision.reasoning) == (
        AiVerdict.SKIP,
        RejectReason.AI_CONTEXT_SHORT,
        "AI context insufficient (6 < 12)",
    )
    assert isinstance(rejected, OrderRejected) and rejected.stage == "agent"
    assert fake_llm.count() == 0
    assert sample("coinpilot_ai_prefilter_skips_total", reason="AI_CONTEXT_SHORT") == skips_before + 1
    assert await redis.exists(keys.ai_symbol_cooldown("KRW-BTC")) == 0
    assert (await decision_row(agent_db, proposed.order_id)).decision == "SKIP"


@pytest.mark.parametrize("price", ["0", "-100000"])
async def test_a_proposal_with_a_non_positive_price_is_refused_without_a_call(
    make_agent: ServiceFactory,
    fake_llm: FakeLlmServer,
    agent_db: Database,
    redis: Redis,
    t0: datetime,
    price: str,
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0), price=price)
    skips_before = sample("coinpilot_ai_prefilter_skips_total", reason="IMPLAUSIBLE_PRICE")
    decision, rejected = await decide(agent, proposed)
    assert (decision.decision, decision.reason_code) == (AiVerdict.SKIP, RejectReason.IMPLAUSIBLE_PRICE)
    assert decision.reasoning.startswith("non-positive price in the proposal")
    assert isinstance(rejected, OrderRejected)
    assert (rejected.stage, rejected.reason) == ("agent", RejectReason.IMPLAUSIBLE_PRICE)
    assert fake_llm.count() == 0
    assert await redis.get(keys.ai_usage_hour(proposed.ts_event)) is None  # no call was counted either
    assert sample("coinpilot_ai_prefilter_skips_total", reason="IMPLAUSIBLE_PRICE") == skips_before + 1
    assert (await decision_row(agent_db, proposed.order_id)).reason_code == "IMPLAUSIBLE_PRICE"


async def test_an_exhausted_hourly_budget_blocks_the_call(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, redis: Redis, t0: datetime
) -> None:
    agent = make_agent()
    proposed = order(await feed_context(agent, t0))
    await redis.set(keys.ai_usage_hour(proposed.ts_event), 20, ex=7200)
    decision, rejected = await decide(agent, proposed)
    assert (decision.decision, decision.reason_code, decision.reasoning) == (
        AiVerdict.SKIP,
        RejectReason.AI_GUARDRAIL_BLOCKED,
        "Hourly AI budget exhausted (20/20)",
    )
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.AI_GUARDRAIL_BLOCKED
    assert fake_llm.count() == 0


async def test_redis_down_makes_the_order_wait_without_a_call(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, private_redis: RedisProcess, t0: datetime
) -> None:
    """The guardrails cannot be read: the order waits in place (``TransientError``), undecided."""
    client = Redis.from_url(private_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    agent = make_agent(redis_client=client)
    proposed = order(await feed_context(agent, t0))
    private_redis.stop()
    errors_before = sample("coinpilot_agent_guardrail_store_errors_total", operation="admit")
    with pytest.raises(TransientError, match="the guardrails of KRW-BTC cannot be read"):
        await decide(agent, proposed)
    assert fake_llm.count() == 0
    assert sample("coinpilot_agent_guardrail_store_errors_total", operation="admit") == errors_before + 1
    await client.aclose()


async def test_the_context_excludes_hours_that_closed_after_the_order(
    make_agent: ServiceFactory, fake_llm: FakeLlmServer, t0: datetime
) -> None:
    agent = make_agent(llm_mode_source="rules")
    at = await feed_context(agent, t0)
    for bar in gentle_uptrend(30, t0=t0)[24:]:  # hours after the order arrive first (a late order)
        await agent.on_candle(delivery(hourly_candle(bar)))
    decision, _ = await decide(agent, order(at))
    assert decision.decision is AiVerdict.CONFIRM
    assert decision.model_used == "rules:rules-v1 (primary)"
    assert fake_llm.count() == 0


async def test_an_order_waits_briefly_for_the_hour_that_closed_just_before_it(
    make_agent: ServiceFactory, t0: datetime
) -> None:
    """With 11 hours the pre-filter would skip (12 needed): the decision shows the 12th was waited for."""
    agent = make_agent(llm_mode_source="rules", ai_context_wait_seconds=10.0)
    bars = gentle_uptrend(12, t0=t0)
    for bar in bars[:-1]:
        await agent.on_candle(delivery(hourly_candle(bar)))
    proposed = order(bars[-1].ts_close + timedelta(minutes=1))
    arrived_before = sample("coinpilot_agent_context_waits_total", outcome="arrived")
    deciding = asyncio.create_task(decide(agent, proposed))
    await wait_for(lambda: sample("coinpilot_agent_context_waiting") == 1)
    await agent.on_candle(delivery(hourly_candle(bars[-1])))  # the late hourly candle
    decision, _ = await deciding
    assert decision.decision is AiVerdict.CONFIRM
    assert sample("coinpilot_agent_context_waits_total", outcome="arrived") == arrived_before + 1


async def test_an_order_after_a_longer_gap_does_not_wait(make_agent: ServiceFactory, t0: datetime) -> None:
    agent = make_agent(llm_mode_source="rules", ai_context_wait_seconds=30.0)
    bars = gentle_uptrend(24, t0=t0)
    for bar in bars:
        await agent.on_candle(delivery(hourly_candle(bar)))
    proposed = order(bars[-1].ts_close + timedelta(hours=3, minutes=1))
    async with asyncio.timeout(5):
        decision, _ = await decide(agent, proposed)
    assert decision.decision is AiVerdict.CONFIRM
